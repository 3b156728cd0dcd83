"""A plain threaded HTTP service that never imports dynupdate_agent: its classes are
not factories, so an update must find their instances by scanning the heap.

    python tests/targets/eng_plain/plain.py     # prints "READY <port>"
GET /stock?sku=X -> the item's describe(); GET /state -> every item's attribute dict.
"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import inventory

ITEMS = {sku: inventory.Stock(sku, qty) for sku, qty in (("bolt", 10), ("nut", 25), ("gear", 3))}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/stock":
            body = {"describe": ITEMS[q.get("sku", "bolt")].describe()}
        elif url.path == "/state":
            body = {"items": {sku: dict(vars(item)) for sku, item in ITEMS.items()},
                    "greeting": inventory.greeting()}
        else:
            body = {"ok": True}
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()
