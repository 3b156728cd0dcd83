"""rel_app: a threaded HTTP target with live state for the reliability tests.

    python -m dynupdate run tests/targets/rel_app/server.py [options]   # prints "READY <port>"

Options:
  --items N          create N items i0..i{N-1} (qty = index) at start
  --threads N        N extra threads that call items.label() every 0.2 s
  --sigterm          SIGTERM -> sys.exit(0) in the main thread (like real servers)
  --start-agent      call dynupdate_agent.start() here (with --key-file KEY: start(key_file=KEY))
  --debug-log        logging at DEBUG to stderr (to check what the agent logs)

Every request is one dynupdate_agent.activity() when the agent is importable.
Instance state is read raw (object.__getattribute__) so /state never triggers
a lazy transfer; /item and /touch go through the class like real callers.
"""
import argparse
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from relapp import faults, items  # noqa: E402

try:
    import dynupdate_agent
    activity = dynupdate_agent.activity
except ImportError:
    dynupdate_agent = None
    activity = contextlib.nullcontext

SEEN = collections.Counter()
_seen_lock = threading.Lock()


def raw(obj):
    return dict(object.__getattribute__(obj, "__dict__"))


def error_body(exc):
    return {"error": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
            "cause": type(exc.__cause__).__name__ if exc.__cause__ else None}


def route(path, q):
    if path == "/ping":
        return 200, {"pong": True}
    if path == "/state":
        return 200, {
            "items": {iid: raw(obj) for iid, obj in list(items.REGISTRY.items())},
            "module": {"SCHEMA": items.SCHEMA,
                       "names": sorted(n for n in vars(items) if not n.startswith("__"))},
            "version": dynupdate_agent.current_version() if dynupdate_agent else None,
        }
    if path == "/label":
        return 200, {"label": items.label()}
    if path == "/version":
        return 200, {"version": dynupdate_agent.current_version() if dynupdate_agent else None}
    if path == "/item":
        return 200, items.REGISTRY[q["iid"]].view()
    if path == "/incr":
        return 200, {"qty": items.REGISTRY[q["iid"]].incr(int(q.get("by", 1)))}
    if path == "/total":
        return 200, {"total": items.total()}
    if path == "/touch":  # every item through the class, in order; failures collected
        failed = []
        for iid, obj in list(items.REGISTRY.items()):
            try:
                obj.view()
            except Exception as exc:
                failed.append([iid] + list(error_body(exc).values()))
        return 200, {"failed": failed}
    if path == "/spawn":
        return 200, {"count": items.spawn(int(q["n"]), q.get("prefix", "i"))}
    if path == "/faults":
        if "set" in q:
            cfg = json.loads(q["set"])
            faults.configure(cfg.get("fail"), cfg.get("block"))
        return 200, faults.report()
    if path == "/gate":
        op = q.get("op", "status")
        if op == "arm":
            faults.arm(q["name"])
        elif op == "release":
            faults.release(q["name"])
        return 200, faults.report()
    if path == "/gated_item":  # parked outside the patched code first, then an item through its class
        faults.block(q["gate"])
        return 200, items.REGISTRY[q["iid"]].view()
    if path == "/work":
        return 200, items.work(q["gate"])
    if path == "/threads":
        with _seen_lock:
            seen = dict(SEEN)
        return 200, {"count": threading.active_count(), "seen": seen}
    return 404, {"error": "no such path"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the soak's clients reuse connections
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stalls

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            with activity():
                status, body = route(url.path, q)
        except KeyError as exc:
            status, body = 404, {"error": "KeyError", "message": str(exc)}
        except Exception as exc:  # a failing request is a 500, the server goes on
            status, body = 500, dict(error_body(exc), traceback=traceback.format_exc())
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def poller(stop):
    while not stop.wait(0.2):
        value = items.label()
        with _seen_lock:
            SEEN[value] += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sigterm", action="store_true")
    parser.add_argument("--start-agent", action="store_true")
    parser.add_argument("--key-file")
    parser.add_argument("--debug-log", action="store_true")
    args = parser.parse_args()
    if args.debug_log:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="LOG %(name)s %(levelname)s %(message)s")
    if args.start_agent:
        dynupdate_agent.start(key_file=args.key_file) if args.key_file else dynupdate_agent.start()
    if args.sigterm:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if args.items:
        items.spawn(args.items)
    stop = threading.Event()
    for i in range(args.threads):
        threading.Thread(target=poller, args=(stop,), name=f"poller-{i}", daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        print("EXITING", flush=True)


if __name__ == "__main__":
    main()
