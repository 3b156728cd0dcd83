"""shop: a small threaded HTTP service with live state, the target of the engine's
acceptance tests (tests/test_apply_*.py, tests/test_rollback*.py).

    dynupdate run tests/targets/shop_app/server.py      # prints "READY <port>"

The `shop` package next to this file is what patches/shop-v2 and shop-v3 replace;
this file and shop/views.py are never patched (they hold references into shop.cart:
from-imports, stored callbacks, bound methods, a subclass). Every request is one
`dynupdate_agent.activity()` when the agent is there; the app also runs without it.
"""
import contextlib
import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

try:
    import dynupdate_agent
    activity = dynupdate_agent.activity
except ImportError:  # plain `python server.py`
    dynupdate_agent = None
    activity = contextlib.nullcontext

from shop import views


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            with activity():
                status, body = views.handle(url.path, query)
        except KeyError as exc:
            status, body = 404, {"error": f"KeyError: {exc}"}
        except Exception as exc:  # report, keep serving
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the target's output for real problems
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
