"""The demo service behind `dynupdate demo`: a tiny threaded HTTP shop.

GET /add?item=NAME   put one NAME in the basket
GET /basket          the basket as JSON, priced by the running code
GET /version         the code version the agent reports
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import basket

BASKET = basket.Basket()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/add":
            BASKET.add(query.get("item", ["?"])[0])
            body = {"ok": True}
        elif url.path == "/basket":
            body = BASKET.describe()
        elif url.path == "/version":
            import dynupdate_agent

            body = {"version": dynupdate_agent.current_version()}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        sys.exit(0)
