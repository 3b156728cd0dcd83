"""eng_hang: a threaded HTTP target for the engine's deadline tests (tests/test_engine_deadlines.py).

    python -m dynupdate run tests/targets/eng_hang/server.py [--items N]   # prints "READY <port>"

/ping and /control never touch patched code (they answer while calls are held);
/label and /item go through hangapp.core; /locked takes control.LOCK first and
then calls core.label(), so the mediator parks it while it holds the lock.
"""
import argparse
import json
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hangapp import control, core, other  # noqa: E402


def raw(obj):
    return dict(object.__getattribute__(obj, "__dict__"))


def route(path, q):
    if path == "/ping":
        return 200, {"pong": True}
    if path == "/label":
        return 200, {"label": core.label()}
    if path == "/other":
        return 200, {"hello": other.hello()}
    if path == "/item":
        return 200, core.REGISTRY[q["iid"]].view()
    if path == "/locked":
        with control.LOCK:
            control.COUNTS["locked_held"] += 1
            return 200, {"label": core.label()}
    if path == "/state":
        return 200, {"items": {k: raw(v) for k, v in list(core.REGISTRY.items())}, "schema": core.SCHEMA,
                     "names": sorted(n for n in vars(core) if not n.startswith("__")),
                     "class": sorted(n for n in vars(core.Item) if not n.startswith("__"))}
    if path == "/control":
        if q.get("reset"):
            control.reset()
        if q.get("go"):
            control.GO.set()
        if q.get("hang") == "release":
            control.HANG.set()
        if "frozen" in q:
            control.FROZEN[0] = q["frozen"] == "1"
        return 200, control.report()
    return 404, {"error": "no such path"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            status, body = route(url.path, q)
        except Exception as exc:
            status, body = 500, {"error": type(exc).__name__, "message": str(exc),
                                 "traceback": traceback.format_exc()}
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3)
    args = parser.parse_args()
    core.spawn(args.items)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    threading.current_thread().name = "MainThread"
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
