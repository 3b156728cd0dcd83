#!/usr/bin/env python3
"""asyncio section of the benchmarks (issue 11): an update on a loaded uvicorn + Starlette service.

    python scripts/bench_asyncio.py [--quick] [--json]     # alone
    python scripts/bench.py --only asyncio                 # as a section of bench.py

Measured against a real target (`dynupdate run scripts/bench_targets/aio_server.py`)
with 2 client threads on /ping (touches no updated code) and 1 on /session
(touches the updated class, whose instances are transferred lazily on the loop
thread), over HTTP/1.1 keep-alive:

- untouched_max_ms: max /ping latency while nothing happens (idle), and while an
  update waits ~1 s for a safe point (a request is suspended inside the updated
  coroutine until the bench releases it). Goal: waiting within 20 ms of idle.
- swap pause: max /ping latency of requests that overlap an update that finds its
  safe point at once (N sessions, lazy transfer), minus the idle median. Goal <= 5 ms.
Each round applies v2 then rolls back; rounds alternate the two measures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_support as bs  # noqa: E402

from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import Client  # noqa: E402

V1 = '''\
import dynupdate_agent

SESSIONS = {}


@dynupdate_agent.updatable
class Session:
    def __init__(self, i):
        self.i = i
        self.hits = 0

    def touch(self):
        self.hits += 1
        return self.hits


def make(n):
    for i in range(n):
        SESSIONS[i] = Session(i)


async def slow(gate):
    await gate.wait()
    return "v1"
'''

V2 = '''\
import dynupdate_agent

SESSIONS = {}


@dynupdate_agent.updatable
class Session:
    def __init__(self, i):
        self.i = i
        self.visits = 0

    def touch(self):
        self.visits += 1
        return self.visits

    def __dynupdate_transfer__(self, old):
        self.visits = old["hits"]
        del self.hits

    def __dynupdate_revert__(self, new):
        self.hits = new["visits"]
        del self.visits


def make(n):
    for i in range(n):
        SESSIONS[i] = Session(i)


async def slow(gate):
    await gate.wait()
    return "v2"
'''

Sample = Tuple[float, float]  # (start, seconds)


class Clients:
    """Keep-alive clients on one path until stopped; (start, latency) samples and failures."""

    def __init__(self, port: int, path_for, threads: int) -> None:
        self.samples: List[Sample] = []
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port, path_for, k), daemon=True)
                         for k in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, port: int, path_for, k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = k
        while not self._stop.is_set():
            n += 7
            start = time.perf_counter()
            try:
                conn.request("GET", path_for(n))
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self.failures.append(f"HTTP {resp.status}")
            except Exception as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            self.samples.append((start, time.perf_counter() - start))
        conn.close()

    def between(self, t0: float, t1: float) -> List[float]:
        """Latencies of requests that overlap [t0, t1]."""
        return [lat for start, lat in list(self.samples) if start <= t1 and start + lat >= t0]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _get(port: int, path: str) -> Dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _connect(pid: int) -> Client:
    deadline = time.monotonic() + 20
    while True:
        try:
            client = Client.connect(pid, timeout=60)
            client.hello()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def run(tmp: Path, quick: bool = False, sessions: int = 100000) -> Dict[str, Any]:
    """The `asyncio` result section (see the module docstring)."""
    rounds = 2 if quick else 5
    folder = bs.write_modules(tmp / "aio", {"aiobench": V1})
    bundle = load_bundle(str(bs.write_bundle(tmp / "aio-v2", "aio", "2", {"aiobench": V2}, lazy=True)))
    idle_max: List[float] = []
    idle_p50: List[float] = []
    waiting_max: List[float] = []
    waited_s: List[float] = []
    pause_ms: List[float] = []
    agent_swap_ms: List[float] = []
    errors: List[str] = []
    with bs.Proc([str(bs.TARGETS / "aio_server.py"), str(folder), str(sessions)], agent=True) as proc:
        port = int(proc.expect("READY", 60))
        with _connect(proc.pid) as client:
            ping = Clients(port, lambda n: "/ping", 2)
            touch = Clients(port, lambda n: f"/session?i={(n * 7919) % sessions}", 1)
            try:
                time.sleep(0.5)  # warm-up
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    time.sleep(1.0)
                    idle = ping.between(t0, time.perf_counter())
                    idle_max.append(max(idle))
                    idle_p50.append(statistics.median(idle))

                    # an update that waits ~1 s for a request suspended in aiobench.slow
                    slow: Dict[str, Any] = {}
                    waiter = threading.Thread(target=lambda: slow.update(_get(port, "/slow")))
                    waiter.start()
                    time.sleep(0.2)
                    reply: Dict[str, Any] = {}
                    t1 = time.perf_counter()
                    applier = threading.Thread(target=lambda: reply.update(client.apply(bundle, timeout=30)))
                    applier.start()
                    time.sleep(1.0)
                    _get(port, "/release")
                    applier.join(60)
                    waiter.join(60)
                    t2 = time.perf_counter()
                    if not reply.get("ok") or slow.get("version") != "v1":
                        errors.append(f"waiting apply: {reply.get('error') or slow}")
                    waiting_max.append(max(ping.between(t1, t2)))
                    waited_s.append(reply.get("phases", {}).get("safepoint", 0.0))
                    client.rollback()

                    # the swap itself: nothing to wait for, lazy transfer of `sessions` instances
                    time.sleep(0.3)
                    t3 = time.perf_counter()
                    reply = client.apply(bundle, timeout=30)
                    t4 = time.perf_counter()
                    if not reply.get("ok"):
                        errors.append(f"apply: {reply.get('error')}")
                    time.sleep(0.05)
                    pause_ms.append((max(ping.between(t3, t4)) - idle_p50[-1]) * 1e3)
                    phases = reply.get("phases", {})
                    agent_swap_ms.append((phases.get("swap", 0.0) + phases.get("transfer", 0.0)) * 1e3)
                    client.rollback()
                    time.sleep(0.5)  # let the rollback's garbage settle before the next idle window
            finally:
                ping.stop()
                touch.stop()
    failures = ping.failures + touch.failures
    med = statistics.median
    return {"asyncio": {
        "sessions": sessions, "rounds": rounds,
        "idle_untouched_max_ms": med(idle_max) * 1e3,
        "waiting_untouched_max_ms": med(waiting_max) * 1e3,
        "waiting_minus_idle_ms": (med(waiting_max) - med(idle_max)) * 1e3,
        "waited_for_safe_point_s": med(waited_s),
        "idle_p50_ms": med(idle_p50) * 1e3,
        "swap_pause_ms": med(pause_ms), "swap_pause_ms_max": max(pause_ms),
        "agent_swap_transfer_ms": med(agent_swap_ms),
        "per_round": {"idle_max_ms": [v * 1e3 for v in idle_max], "waiting_max_ms": [v * 1e3 for v in waiting_max],
                      "swap_pause_ms": pause_ms},
        "failed_requests": len(failures), "failures": failures[:5], "errors": errors[:5],
        "goal_waiting_within_20ms": (med(waiting_max) - med(idle_max)) * 1e3 <= 20,
        "goal_swap_pause_5ms": med(pause_ms) <= 5,
    }}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    parser.add_argument("--json", action="store_true", help="print the JSON section only")
    parser.add_argument("--sessions", type=int, default=100000, help="live instances of the updated class")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dynupdate-bench-aio-") as tmp:
        result = run(Path(tmp), args.quick, args.sessions)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        r = result["asyncio"]
        print(f"asyncio target, {r['sessions']} sessions, {r['rounds']} rounds (medians)")
        print(f"  max /ping latency idle                 {r['idle_untouched_max_ms']:8.2f} ms")
        print(f"  max /ping latency, update waiting ~1 s {r['waiting_untouched_max_ms']:8.2f} ms  "
              f"(+{r['waiting_minus_idle_ms']:.2f} ms; goal <= 20)")
        print(f"  pause seen by clients during the swap  {r['swap_pause_ms']:8.2f} ms  (goal <= 5; "
              f"agent swap+transfer {r['agent_swap_transfer_ms']:.2f} ms)")
        print(f"  failed requests {r['failed_requests']}, errors {r['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
