"""A program run as `python -m pf_app.main` (or as a script): serves `version()` over HTTP."""
import http.server
import socketserver


def version():
    return "main-v2"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = version().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("READY", server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.05)
