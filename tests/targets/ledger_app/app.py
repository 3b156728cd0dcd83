"""GET /total, /describe, /queue?add=X, /drain: a threaded HTTP target over ledger.py."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import ledger


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/total":
            body = {"total": ledger.total()}
        elif url.path == "/describe":
            body = {"first": ledger.ACCOUNTS[0].describe()}
        elif url.path == "/queue":
            ledger.QUEUE.append(q["add"][0])
            body = {"queue": list(ledger.QUEUE)}
        elif url.path == "/drain":
            ledger.QUEUE.clear()
            body = {"queue": []}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"READY {server.server_address[1]}", flush=True)
try:
    server.serve_forever(poll_interval=0.1)
except KeyboardInterrupt:
    sys.exit(0)
