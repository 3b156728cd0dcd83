"""A threaded HTTP target for the instance-set tests (tests/test_instance_set.py).

    dynupdate run tests/targets/ins_app/server.py      # prints "READY <port>"

This file is never patched; `insmod` is. Endpoints (JSON):
  /spawn?kind=plain|becomes&n=N   keep N new instances        /state    every kept instance's __dict__
  /hold?make=N                    park in insmod.hold          /held     has /hold started?
  /release                        let /hold return             /touch?i= describe() of kept instance i
  /churn?n=N                      insmod.churn(N), keep the result
  /own_new                        which insmod classes have a `__new__` in their own dict
  /gc                             is automatic garbage collection on
"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import dynupdate_agent
import insmod

CHURNED = []


def handle(path, q):
    if path == "/spawn":
        cls = {"plain": insmod.Plain, "becomes": insmod.Becomes}[q.get("kind", "plain")]
        objs = [cls(int(q.get("base", 0)) + i) for i in range(int(q.get("n", 1)))]
        insmod.KEEP.extend(objs)
        return {"kept": len(insmod.KEEP)}
    if path == "/state":
        return {"kept": [[type(o).__name__, dict(vars(o))] for o in list(insmod.KEEP)],
                "log": list(insmod.LOG)}
    if path == "/hold":
        return {"made": insmod.hold(int(q.get("make", 0)))}
    if path == "/held":
        return {"held": insmod.HELD.is_set()}
    if path == "/release":
        insmod.GATE.set()
        return {}
    if path == "/touch":
        return {"describe": insmod.KEEP[int(q["i"])].describe()}
    if path == "/churn":
        CHURNED[:] = insmod.churn(int(q["n"]))
        return {"kept": len(CHURNED)}
    if path == "/gc":  # an update may pause automatic collection while it works, never beyond
        import gc
        return {"enabled": gc.isenabled()}
    if path == "/own_new":  # which classes carry a `__new__` of their own (an update must leave none)
        return {c: "__new__" in vars(getattr(insmod, c)) for c in ("Plain", "Becomes", "Tracked")}
    raise KeyError(path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            with dynupdate_agent.activity():
                status, body = 200, handle(url.path, q)
        except Exception as exc:  # report, keep serving
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
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
