#!/usr/bin/env python3
"""Soak test: N apply/rollback cycles on a live, loaded HTTP service.

    python scripts/soak.py [--cycles N] [--json] [--clients 4] [--items 200] [--lazy-every 4]

Starts tests/targets/rel_app (a threaded HTTP service whose items carry state)
with `dynupdate run`, drives it from client threads over loopback (a bounded
number of keep-alive connections, each owning a disjoint set of items so it
knows the exact value every answer must carry), and meanwhile applies
tests/bundles/rel_v2 and rolls it back N times through the client library
(every `--lazy-every`-th apply is lazy; 0 = never). Reports one JSON object:

  cycles, requests_ok, requests_failed, state_mismatches,
  rss_start_mb, rss_end_mb, threads_start, threads_end, fds_start, fds_end,
  plus: cycle_errors, lazy_cycles, warmup_cycles, rss_growth_pct, history_len,
  apply_ms_p50/p99, rollback_ms_p50/p99, duration_s, target_exit, goals_met.

A state mismatch is any answer that is not exactly what the client expects:
an item's qty after its own increments, a label other than v1/v2, or the
label not matching the version the cycle just reached.

The start figures are taken after `--warmup` cycles (default 5: first-use
costs such as the mediator's trampoline templates and compiled bundle code),
the end figures after the last cycle, both while the clients keep running;
threads and fds are the minimum over 0.5 s of samples (a connection thread of
the agent may still be exiting when sampled once). Exit status 0 when the
goals hold: no failed request, no mismatch, no cycle error, no thread or fd
growth, RSS growth under 10%.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "targets" / "rel_app" / "server.py"
BUNDLE = ROOT / "tests" / "bundles" / "rel_v2"

sys.path.insert(0, str(ROOT))
from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import Client  # noqa: E402


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.mismatches = 0
        self.examples: List[str] = []

    def add(self, ok: int = 0, failed: int = 0, mismatches: int = 0, example: str = "") -> None:
        with self.lock:
            self.ok += ok
            self.failed += failed
            self.mismatches += mismatches
            if example and len(self.examples) < 10:
                self.examples.append(example)


class Driver(threading.Thread):
    """One client: a keep-alive connection, a disjoint set of items, exact expectations."""

    def __init__(self, port: int, owned: Dict[str, int], counters: Counters, stop: threading.Event,
                 seed: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.expected = dict(owned)
        self.counters = counters
        self.stop_event = stop
        self.rng = random.Random(seed)
        self.conn: Any = None

    def request(self, path: str) -> Any:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise RuntimeError(f"{path}: {exc!r}") from None
                continue
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}: {body[:300]!r}")
            return json.loads(body)

    def run(self) -> None:
        iids = sorted(self.expected)
        while not self.stop_event.is_set():
            iid = self.rng.choice(iids)
            roll = self.rng.random()
            try:
                if roll < 0.45:
                    got = self.request(f"/incr?iid={iid}&by=1")
                    self.expected[iid] += 1
                    want = {"qty": self.expected[iid]}
                elif roll < 0.9:
                    got = self.request(f"/item?iid={iid}")
                    want = {"iid": iid, "qty": self.expected[iid]}
                else:
                    got = self.request("/label")
                    want = got if got.get("label") in ("v1", "v2") else {"label": "v1|v2"}
            except Exception as exc:  # noqa: BLE001 - counted and reported
                self.counters.add(failed=1, example=str(exc))
                continue
            if got == want:
                self.counters.add(ok=1)
            else:
                self.counters.add(ok=1, mismatches=1, example=f"{iid}: got {got}, want {want}")
            time.sleep(0.001)  # bounded load: leave the 2nd core to the agent
        if self.conn is not None:
            self.conn.close()


def proc_metrics(pid: int) -> Dict[str, float]:
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def settled(pid: int, seconds: float = 0.5) -> Dict[str, float]:
    """RSS now; threads and fds as the minimum over `seconds` of samples."""
    samples = []
    end = time.monotonic() + seconds
    while True:
        samples.append(proc_metrics(pid))
        if time.monotonic() >= end:
            break
        time.sleep(0.02)
    return {"rss_mb": samples[-1]["rss_mb"], "threads": min(s["threads"] for s in samples),
            "fds": min(s["fds"] for s in samples)}


def start_target(items: int) -> tuple:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dynupdate", "run", str(SERVER), "--items", str(items)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, cwd=str(ROOT))
    output: List[str] = []
    ready = threading.Event()
    port = [0]

    def read() -> None:
        for line in proc.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith("READY "):
                port[0] = int(line.split()[1])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(30) or not port[0]:
        proc.kill()
        raise SystemExit("soak: the target did not start:\n" + "\n".join(output))
    return proc, port[0], output


def label(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/label")
        return json.loads(conn.getresponse().read())["label"]
    finally:
        conn.close()


def pct(values: List[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


def soak(cycles: int, clients: int, items: int, lazy_every: int, warmup: int, progress: bool) -> Dict[str, Any]:
    proc, port, output = start_target(items)
    counters = Counters()
    stop = threading.Event()
    bundle = load_bundle(str(BUNDLE))
    cycle_errors: List[str] = []
    apply_s: List[float] = []
    rollback_s: List[float] = []
    lazy_cycles = 0
    started = time.monotonic()
    try:
        owned = [{f"i{j}": j for j in range(items) if j % clients == c} for c in range(clients)]
        drivers = [Driver(port, owned[c], counters, stop, seed=c) for c in range(clients)]
        for d in drivers:
            d.start()

        def cycle(n: int) -> None:
            nonlocal lazy_cycles
            lazy = bool(lazy_every) and n % lazy_every == lazy_every - 1
            lazy_cycles += lazy
            try:
                t0 = time.monotonic()
                with Client.connect(proc.pid) as client:
                    reply = client.apply(bundle, lazy=lazy or None, timeout=30)
                apply_s.append(time.monotonic() - t0)
                if reply.get("version") != "2" or label(port) != "v2":
                    counters.add(mismatches=1, example=f"cycle {n}: after apply {reply.get('version')}")
                t0 = time.monotonic()
                with Client.connect(proc.pid) as client:
                    reply = client.rollback(timeout=30)
                rollback_s.append(time.monotonic() - t0)
                if reply.get("version") != "base" or label(port) != "v1":
                    counters.add(mismatches=1, example=f"cycle {n}: after rollback {reply.get('version')}")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                cycle_errors.append(f"cycle {n}: {type(exc).__name__}: {exc}")

        for n in range(warmup):
            cycle(-1 - n)
        begin = settled(proc.pid)
        for n in range(cycles):
            cycle(n)
            if progress and (n + 1) % 100 == 0:
                m = proc_metrics(proc.pid)
                print(f"soak: {n + 1}/{cycles} cycles, rss {m['rss_mb']:.1f} MB, threads {m['threads']}, "
                      f"fds {m['fds']}, ok {counters.ok}, failed {counters.failed}", file=sys.stderr, flush=True)
        end = settled(proc.pid)
        with Client.connect(proc.pid) as client:
            history_len = len([h for h in client.status()["history"] if h.get("rolled_back_at") is None])
        stop.set()
        for d in drivers:
            d.join(30)
    finally:
        stop.set()
        alive = proc.poll() is None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
    growth = (end["rss_mb"] - begin["rss_mb"]) / begin["rss_mb"] * 100.0
    report = {
        "cycles": cycles,
        "requests_ok": counters.ok,
        "requests_failed": counters.failed,
        "state_mismatches": counters.mismatches,
        "rss_start_mb": round(begin["rss_mb"], 2),
        "rss_end_mb": round(end["rss_mb"], 2),
        "threads_start": begin["threads"],
        "threads_end": end["threads"],
        "fds_start": begin["fds"],
        "fds_end": end["fds"],
        "rss_growth_pct": round(growth, 2),
        "cycle_errors": len(cycle_errors),
        "lazy_cycles": lazy_cycles,
        "warmup_cycles": warmup,
        "clients": clients,
        "items": items,
        "history_len": history_len,
        "apply_ms_p50": pct(apply_s, 0.5),
        "apply_ms_p99": pct(apply_s, 0.99),
        "rollback_ms_p50": pct(rollback_s, 0.5),
        "rollback_ms_p99": pct(rollback_s, 0.99),
        "duration_s": round(time.monotonic() - started, 1),
        "target_alive": alive,
    }
    report["goals_met"] = bool(
        alive and report["requests_failed"] == 0 and report["state_mismatches"] == 0 and not cycle_errors
        and report["threads_end"] <= report["threads_start"] and report["fds_end"] <= report["fds_start"]
        and growth < 10.0 and report["requests_ok"] > 0)
    if cycle_errors or counters.examples:
        report["examples"] = (cycle_errors[:5] + counters.examples)[:10]
    if not alive or cycle_errors:
        report["target_output_tail"] = output[-30:]
    return report


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="apply/rollback cycles (default 1000)")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--items", type=int, default=200, help="items in the target (default 200)")
    parser.add_argument("--lazy-every", type=int, default=4, help="every K-th apply is lazy (0: never; default 4)")
    parser.add_argument("--warmup", type=int, default=5, help="cycles before the start figures (default 5)")
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.clients < 1 or args.items < args.clients:
        parser.error("need --cycles >= 1 and --items >= --clients >= 1")
    report = soak(args.cycles, args.clients, args.items, args.lazy_every, args.warmup, progress=not args.json)
    if args.json:
        print(json.dumps(report))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0 if report["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
