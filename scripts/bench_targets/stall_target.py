"""Client-felt stall target: a threaded HTTP server whose `/ping` no update touches,
beside N live instances of the class the benchmark updates.

argv: MODULE_DIR KIND N, KIND one of tracked (an `@updatable` class), untracked
(a plain class, found by the heap scan) or none (no instances, no agent import:
the attach measurement starts it with plain `python`). Prints `READY <port>
<seconds to create>`; stdin: `quit`. The handler lives in this file, which no
bundle replaces, so a slow `/ping` is the update's cost to the whole process
(the GIL), not a call held by the mediator.
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import commands, say, setup_path

setup_path()
KIND, N = sys.argv[2], int(sys.argv[3])
keep = []
t0 = time.perf_counter()
if KIND != "none":
    import bench_stallmod as m

    cls = m.Tracked if KIND == "tracked" else m.Untracked
    keep = [cls(i) for i in range(N)]
created_s = time.perf_counter() - t0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the probe measures the process, not thread start-up
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK wait

    def do_GET(self):
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
say("READY", server.server_address[1], f"{created_s:.3f}")
for cmd in commands():
    if cmd[0] == "quit":
        break
server.shutdown()
