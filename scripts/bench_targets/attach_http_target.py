"""Attach-stall target: a plain threaded HTTP service (standard library only, no agent). Prints READY PORT.

GET /ping answers at once: the probe's "untouched endpoint" while `dynupdate attach` injects the agent.
"""
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print("READY", srv.server_address[1], flush=True)
srv.serve_forever(poll_interval=0.05)
