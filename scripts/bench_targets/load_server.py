"""Load target: a threaded HTTP service with live state, started with `dynupdate run`.

argv: MODULE_DIR. GET /?x=N answers {"y": bench_loadmod.answer(N), "b": balance of
account N % 64} over HTTP/1.1 keep-alive, each request inside `activity()`.
Prints `READY PORT`.
"""
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import say, setup_path

setup_path()
import dynupdate_agent  # noqa: E402
import bench_loadmod as lm  # noqa: E402

ACCOUNTS = [lm.Account(i) for i in range(64)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        with dynupdate_agent.activity():
            try:
                x = int(self.path.partition("x=")[2] or 0)
                body = json.dumps({"y": lm.answer(x), "b": ACCOUNTS[x % 64].balance()}).encode()
                code = 200
            except Exception as exc:  # reported as a wrong answer by the client
                body, code = repr(exc).encode(), 500
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


srv = Server(("127.0.0.1", 0), Handler)
say("READY", srv.server_address[1])
srv.serve_forever(poll_interval=0.05)
