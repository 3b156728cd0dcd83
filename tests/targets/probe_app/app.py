"""A threaded HTTP target for the probe tests; GET /call?what=...&arg=... runs one callable."""
import asyncio
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import shopmod
from shopmod import total  # a from-import: a reference the probe must reach

CART = shopmod.Cart()
STORED_ADD = CART.add  # a bound method stored before any probe
LOOP = asyncio.new_event_loop()
threading.Thread(target=LOOP.run_forever, name="loop", daemon=True).start()


def call(what, arg):
    if what == "total":
        return total([int(arg), 1])
    if what == "add":
        return STORED_ADD(arg, qty=2)
    if what == "price":
        return shopmod.Cart.price(arg)
    if what == "make":
        return type(shopmod.Cart.make()).__name__
    if what == "size":
        return CART.size
    if what == "line":
        return shopmod.Cart.Line().describe(arg)
    if what == "countdown":
        return list(shopmod.countdown(int(arg)))
    if what == "echo":
        return asyncio.run_coroutine_threadsafe(shopmod.slow_echo(arg), LOOP).result(10)
    if what == "fails":
        try:
            return shopmod.fails(int(arg))
        except ValueError as exc:
            return f"raised {exc}"
    if what == "code":
        return id(shopmod.total.__code__)
    raise KeyError(what)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        try:
            body = {"ok": True, "value": call(q["what"][0], q.get("arg", ["1"])[0])}
            code = 200
        except Exception as exc:  # a probe must never cause this
            body, code = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 500
        data = json.dumps(body).encode()
        self.send_response(code)
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
