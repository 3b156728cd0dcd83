"""The stall a client of the target feels while `dynupdate attach` injects the agent (issue #14).

    python scripts/bench_attach.py [--rounds N] [--python PYTHON] [--target threaded|uvicorn]  # prints JSON
    scripts/bench.py calls attach_stall(result) in its "attach" section -> key stall_ms.attach

Each round starts a fresh plain threaded HTTP target (bench_targets/attach_http_target.py,
no agent), runs a probe thread that sends keep-alive GET /ping requests back to back,
measures the largest latency in a quiet window first (the baseline: what scheduling
noise alone costs on this machine), then runs the real CLI `dynupdate attach --pid`
and takes the largest latency of the requests that overlap it. `stall_ms.attach` is the
largest over the rounds; the detail keeps every round, the baselines and the CLI times.
"""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_support as bs

TARGETS = {"threaded": bs.TARGETS / "attach_http_target.py", "uvicorn": bs.TARGETS / "attach_uvicorn_target.py"}


class Probe:
    """Back-to-back requests on one keep-alive connection; (start, latency) of each, in seconds."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        perf = time.perf_counter
        while not self._stop.is_set():
            t = perf()
            try:
                conn.request("GET", "/ping")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.samples.append((t, perf() - t))
        conn.close()

    def largest(self, start: float, end: float) -> float | None:
        """Largest latency (ms) of the requests in flight at any time in [start, end]."""
        hits = [lat for t, lat in self.samples if t <= end and t + lat >= start]
        return max(hits) * 1e3 if hits else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _one_round(python: str, quiet_s: float, target: str) -> dict[str, Any]:
    proc = subprocess.Popen([python, str(TARGETS[target])], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        probe = Probe(port)
        try:
            time.sleep(0.3)  # warm up: connection made, handler thread started
            q0 = time.perf_counter()
            time.sleep(quiet_s)
            t0 = time.perf_counter()
            res = subprocess.run(bs.dynupdate_cmd() + ["attach", "--pid", str(proc.pid), "--json"],
                                 check=False, capture_output=True, text=True, timeout=120)
            t1 = time.perf_counter()
            time.sleep(0.1)
        finally:
            probe.close()
        ok = res.returncode == 0 and json.loads(res.stdout or "{}").get("injected") is True
        return {"ok": ok, "stall_ms": probe.largest(t0, t1), "baseline_ms": probe.largest(q0, t0 - 0.001),
                "cli_ms": (t1 - t0) * 1e3, "requests": len(probe.samples), "probe_errors": probe.errors,
                "error": None if ok else f"exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}"}
    finally:
        proc.kill()
        proc.wait()


def attach_stall(result: dict[str, Any], rounds: int = 3, python: str | None = None,
                 quiet_s: float = 1.0, target: str = "threaded") -> dict[str, Any]:
    """Set result["stall_ms"]["attach"] (largest stall in ms over the rounds) and result["attach_stall_detail"]."""
    runs = [_one_round(python or sys.executable, quiet_s, target) for _ in range(rounds)]
    good = [r["stall_ms"] for r in runs if r["ok"] and r["stall_ms"] is not None]
    result.setdefault("stall_ms", {})["attach"] = max(good) if good else None
    result["attach_stall_detail"] = {"python": python or sys.executable, "target": target, "rounds": runs, "median_ms": bs.median(good),
                                     "baseline_max_ms": max((r["baseline_ms"] or 0) for r in runs)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", help="interpreter of the target (default: this one)")
    parser.add_argument("--target", choices=sorted(TARGETS), default="threaded",
                        help="threaded: http.server ThreadingHTTPServer (default); uvicorn: asyncio, one thread")
    args = parser.parse_args()
    print(json.dumps(attach_stall({}, args.rounds, args.python, target=args.target), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
