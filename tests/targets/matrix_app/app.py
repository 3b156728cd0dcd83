"""Target-matrix app: a threaded HTTP service using only the standard library (no dynupdate installed).

GET / answers {"greet": mx_greet.greet(), "hits": a counter kept in mx_greet, "python": "X.Y"}.
Prints "READY PORT". Runs on any CPython 3.6+ (old ones are refused by dynupdate before injection).
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mx_greet  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"greet": mx_greet.greet(), "hits": mx_greet.hit(),
                           "python": "%d.%d" % sys.version_info[:2]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print("READY", srv.server_address[1], flush=True)
srv.serve_forever()
