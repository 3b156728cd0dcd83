"""Pause probe target: N live instances of an `@updatable` class and a probe thread.

argv: MODULE_DIR N. Started with `dynupdate run`. `bench_pausemod.Item` is the
class the benchmark updates. Commands on stdin:
  probe   start the probe thread: it calls `value()` on one existing instance
          in a tight loop, timing every completed call; prints PROBING once it
          has a baseline of normal gaps
  stop    stop it; prints RESULT {max_gap_ms, normal_gap_us, calls, new_code_seen}
  quit
"""
import statistics
import sys
import threading
import time

from _common import commands, result, say, setup_path

setup_path()
import bench_pausemod as m  # noqa: E402

N = int(sys.argv[2])
t0 = time.perf_counter()
items = [m.Item(i) for i in range(N)]
created_s = time.perf_counter() - t0
victim = items[N // 2]


class Probe(threading.Thread):
    def __init__(self):
        super().__init__(name="bench-probe", daemon=True)
        self.stop_flag = False
        self.ready = threading.Event()
        self.out = {}

    def run(self):
        perf = time.perf_counter
        obj = victim
        old = obj.value()  # the answer of the code running now
        baseline = []
        for _ in range(20000):  # normal gaps, before anything happens
            t = perf()
            obj.value()
            baseline.append(perf() - t)
        normal = statistics.median(baseline)
        self.ready.set()
        calls = 0
        max_gap = 0.0
        max_at = 0.0
        first_new = None
        start = last = perf()
        while not self.stop_flag:
            v = obj.value()
            now = perf()
            gap = now - last
            if gap > max_gap:
                max_gap, max_at = gap, now - start
            if first_new is None and v != old:
                first_new = now - start
            last = now
            calls += 1
        self.out = {"max_gap_ms": max_gap * 1e3, "normal_gap_us": normal * 1e6, "calls": calls,
                    "max_gap_at_s": max_at, "new_code_at_s": first_new, "new_code_seen": first_new is not None,
                    "window_s": perf() - start}


say("READY", N, f"{created_s:.3f}")
probe = None
for cmd in commands():
    if cmd[0] == "probe":
        probe = Probe()
        probe.start()
        probe.ready.wait()
        say("PROBING")
    elif cmd[0] == "stop":
        probe.stop_flag = True
        probe.join()
        out = dict(probe.out)
        out["tag_of_victim"] = getattr(victim, "tag", None)
        result(out)
    elif cmd[0] == "quit":
        break
