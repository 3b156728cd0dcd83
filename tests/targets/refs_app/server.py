"""Test target for the reference rules (issue 8 item 3): a threaded HTTP server.

GET /eval?expr=EXPR evaluates EXPR with `svc`, `holders`, `deco`, `tiny`, `other`,
`probe` and the modules named in $REFS_IMPORT (found on $REFS_EXTRA_PATH) in
scope and answers {"value": ...} (repr() of anything JSON cannot carry), or
HTTP 500 {"error": ...}. Test-only: it listens on 127.0.0.1 and an ephemeral
port printed as `READY <port>`.
"""
import json
import os
import sys
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from refsapp import deco, holders, other, svc, tiny  # noqa: E402

for extra in filter(None, os.environ.get("REFS_EXTRA_PATH", "").split(os.pathsep)):
    sys.path.append(extra)
extra_modules = {name: __import__(name) for name in filter(None, os.environ.get("REFS_IMPORT", "").split(","))}


def held_calls():
    """Application threads inside the mediator right now (parked at a held call's entry)."""
    agent = {t.ident for t in threading.enumerate() if t.name.startswith("dynupdate")}
    count = 0
    for ident, frame in sys._current_frames().items():
        while frame is not None and ident not in agent:
            if frame.f_code.co_filename.endswith("mediator.py"):
                count += 1
                break
            frame = frame.f_back
    return count


def linecache_bundle_entries():
    import linecache

    return sorted(name for name in linecache.cache if name.startswith("<dynupdate "))


def rss_kib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


probe = type("probe", (), {"held_calls": staticmethod(held_calls), "rss_kib": staticmethod(rss_kib),
                           "linecache": staticmethod(linecache_bundle_entries)})


def jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        status, body = 404, {"error": "unknown path"}
        if url.path == "/eval":
            try:
                scope = {"svc": svc, "holders": holders, "deco": deco, "tiny": tiny, "other": other, "probe": probe,
                         "sys": sys,
                         **extra_modules}
                status, body = 200, {"value": jsonable(eval(query["expr"], scope))}
            except Exception as exc:
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("READY", server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
