#!/usr/bin/env python3
"""dynupdate benchmarks: what updatability costs, how long an update pauses a target, peers.

    python scripts/bench.py                 # full run (~3-4 min on 2 cores), readable table
    python scripts/bench.py --quick         # < 1 min: fewer rounds, N in {1000, 10000} only
    python scripts/bench.py --json          # one JSON object (keys: see issue 4 / BENCHMARKS.md)
    python scripts/bench.py --plot docs/pause.png   # also draw pause vs N (needs matplotlib)
    python scripts/bench.py --only micro,stall --stall-plot docs/stall.png [--stall-before OLD.json]

Everything runs against real processes: targets are started with `dynupdate run`
(or as plain processes for attach and the peers), updates go through the agent's
socket, the CLI is timed as a subprocess. Ratios are measured inside one target,
interleaved (A B, B A, ...), as the median of per-round ratios.

--quick: micro rounds 7 instead of 15; pause/apply and stall for N = 1000 and 10000
only (100000 and 1000000 are reported as null), 2 rounds per N for pause, 1 for
stall; cli 3 rounds; attach, attach stall and pyrasite 1 round each; load windows
of 1 s instead of 2.5 s; peers 1 round.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_asyncio  # noqa: E402
import bench_support as bs  # noqa: E402

from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import Client  # noqa: E402

SIZES = [1000, 10000, 100000, 1000000]
LOG = sys.stderr


def note(message: str) -> None:
    LOG.write(f"[bench] {message}\n")
    LOG.flush()


def connect(pid: int, timeout: float = 20.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = Client.connect(pid, timeout=60)
            client.hello()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def agent_ms(reply: Dict[str, Any]) -> float:
    return sum(reply.get("phases", {}).values()) * 1e3


# --- 1. steady-state costs ----------------------------------------------------------------

def bench_micro(tmp: Path, rounds: int) -> Dict[str, Any]:
    folder = bs.write_modules(tmp / "micro", {"bench_micromod": bs.MICRO_V1})
    with bs.Proc([str(bs.TARGETS / "micro_target.py"), str(folder)], agent=True) as proc:
        proc.expect("READY", 30)
        with connect(proc.pid) as client:
            for k in range(1, 11):
                bundle = bs.write_bundle(tmp / f"micro-v{k}", "micro", f"m{k}",
                                         {"bench_micromod": bs.micro_version(k)})
                client.apply(load_bundle(str(bundle)))
        out = proc.ask(f"measure {rounds}", timeout=180)
    if not out.pop("updated_source_ok") or out["updated_version"] != "m10":
        raise RuntimeError(f"micro: the 10 updates did not land as expected: {out}")
    return out


# --- 2. pause and apply vs N --------------------------------------------------------------

def bench_pause(tmp: Path, sizes: List[int], rounds_for: Callable[[int], int]) -> Dict[str, Any]:
    folder = bs.write_modules(tmp / "pause", {"bench_pausemod": bs.PAUSE_V1})
    bundle = load_bundle(str(bs.write_bundle(tmp / "pause-v2", "pause", "2", {"bench_pausemod": bs.PAUSE_V2})))
    out: Dict[str, Any] = {"pause_ms": {"eager": {}, "lazy": {}}, "apply_ms": {"eager": {}, "lazy": {}},
                           "pause_detail": {}}
    for n in SIZES:
        for mode in ("eager", "lazy"):
            out["pause_ms"][mode][str(n)] = None
            out["apply_ms"][mode][str(n)] = None
    for n in sizes:
        note(f"pause: N={n}")
        with bs.Proc([str(bs.TARGETS / "pause_target.py"), str(folder), str(n)], agent=True) as proc:
            created = float(proc.expect("READY", 300).split()[1])
            detail: Dict[str, Any] = {"create_s": created, "noise_ms": [], "eager": [], "lazy": []}
            with connect(proc.pid) as client:
                for r in range(rounds_for(n)):
                    # a window without any update: the probe's own noise floor
                    proc.send("probe")
                    proc.expect("PROBING")
                    time.sleep(0.15)
                    quiet = proc.ask("stop")
                    detail["noise_ms"].append(quiet["max_gap_ms"] - quiet["normal_gap_us"] / 1e3)
                    for mode in ("eager", "lazy") if r % 2 == 0 else ("lazy", "eager"):
                        proc.send("probe")
                        proc.expect("PROBING")
                        time.sleep(0.02)
                        t = time.perf_counter()
                        reply = client.apply(bundle, lazy=(mode == "lazy"), timeout=60)
                        wall = (time.perf_counter() - t) * 1e3
                        time.sleep(0.05)
                        probe = proc.ask("stop")
                        if not probe["new_code_seen"]:
                            raise RuntimeError(f"pause N={n} {mode}: the probe never saw the new code: {probe}")
                        if probe["tag_of_victim"] != 2:
                            raise RuntimeError(f"pause N={n} {mode}: transfer hook did not run on the probed instance")
                        detail[mode].append({
                            "pause_ms": probe["max_gap_ms"] - probe["normal_gap_us"] / 1e3,
                            "apply_ms": agent_ms(reply), "wall_ms": wall,
                            "phases_ms": {k: v * 1e3 for k, v in reply["phases"].items()},
                            "normal_gap_us": probe["normal_gap_us"], "max_gap_at_s": probe["max_gap_at_s"],
                            "new_code_at_s": probe["new_code_at_s"],
                            "instances": reply["updated"]["instances"],
                        })
                        client.rollback(timeout=60)
            proc.send("quit")
        for mode in ("eager", "lazy"):
            rows = detail[mode]
            out["pause_ms"][mode][str(n)] = bs.median([row["pause_ms"] for row in rows])
            out["apply_ms"][mode][str(n)] = bs.median([row["apply_ms"] for row in rows])
            detail[f"{mode}_phases_ms"] = {k: bs.median([row["phases_ms"].get(k, 0.0) for row in rows])
                                           for k in rows[0]["phases_ms"]}
        detail["noise_ms"] = bs.median(detail["noise_ms"])
        out["pause_detail"][str(n)] = {k: v for k, v in detail.items() if k not in ("eager", "lazy")}
        out["pause_detail"][str(n)]["rounds"] = {mode: [{k: v for k, v in row.items() if k != "phases_ms"}
                                                        for row in detail[mode]] for mode in ("eager", "lazy")}
    return out


# --- 2b. what a client feels: stall of an untouched endpoint during apply and attach --------

class Probe(threading.Thread):
    """Requests to `/ping` back to back on one keep-alive connection, each one timed.

    `window(t0, t1)` -> the latencies of the requests that overlap [t0, t1]. A
    slow answer is the process's cost of the update (the endpoint's code is
    never touched, so nothing is held by the mediator): the GIL, mostly.
    """

    def __init__(self, port: int) -> None:
        super().__init__(name="bench-stall-probe", daemon=True)
        self.port = port
        self.samples: List[tuple] = []
        self.errors = 0
        self.stop_flag = False
        self.started_evt = threading.Event()

    def run(self) -> None:
        perf = time.perf_counter
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop_flag:
            t = perf()
            try:
                conn.request("GET", "/ping")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    self.errors += 1
            except Exception:
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.samples.append((t, perf()))
            if len(self.samples) == 200:
                self.started_evt.set()
        conn.close()

    def window(self, t0: float, t1: float) -> List[float]:
        return [(end - start) * 1e3 for start, end in list(self.samples) if end >= t0 and start <= t1]

    def stop(self) -> None:
        self.stop_flag = True
        self.join(30)


def _stall_window(probe: Probe, action: Callable[[], Any], settle: float = 0.05) -> tuple:
    """(largest latency in ms while `action` runs, its result, a quiet window's median and max)."""
    time.sleep(settle)
    q0 = time.perf_counter()
    time.sleep(0.2)
    quiet = probe.window(q0, time.perf_counter())
    t0 = time.perf_counter()
    out = action()
    t1 = time.perf_counter()
    time.sleep(settle)  # a request that started during the action and ends after it counts too
    during = probe.window(t0, t1)
    return max(during) if during else None, out, bs.median(quiet), max(quiet) if quiet else None


def bench_stall(tmp: Path, sizes: List[int], rounds_for: Callable[[int], int]) -> Dict[str, Any]:
    """stall_ms.{eager,lazy}.{tracked,untracked}.{N}: the largest latency of a probe request to an
    untouched endpoint while an update with N live instances is applied (median over rounds)."""
    folder = bs.write_modules(tmp / "stall", {"bench_stallmod": bs.STALL_V1})
    bundles = {kind: load_bundle(str(bs.write_bundle(tmp / f"stall-v2-{kind}", "stall", "2",
                                                     {"bench_stallmod": bs.stall_v2(kind)})))
               for kind in ("tracked", "untracked")}
    stall: Dict[str, Any] = {mode: {kind: {str(n): None for n in SIZES} for kind in ("tracked", "untracked")}
                             for mode in ("eager", "lazy")}
    detail: Dict[str, Any] = {}
    for kind in ("tracked", "untracked"):
        for n in sizes:
            note(f"stall: {kind} N={n}")
            rows: Dict[str, List[Dict[str, Any]]] = {"eager": [], "lazy": []}
            with bs.Proc([str(bs.TARGETS / "stall_target.py"), str(folder), kind, str(n)], agent=True) as proc:
                port = int(proc.expect("READY", 300).split()[0])
                probe = Probe(port)
                probe.start()
                try:
                    probe.started_evt.wait(30)
                    with connect(proc.pid) as client:
                        for r in range(rounds_for(n)):
                            for mode in ("eager", "lazy") if r % 2 == 0 else ("lazy", "eager"):
                                worst, reply, quiet_median, quiet_max = _stall_window(
                                    probe, lambda m=mode: client.apply(bundles[kind], lazy=(m == "lazy"), timeout=120))
                                if reply["updated"]["instances"] != n:
                                    raise RuntimeError(f"stall {kind} N={n} {mode}: the update counted "
                                                       f"{reply['updated']['instances']} instances, not {n}")
                                rows[mode].append({"stall_ms": worst, "quiet_median_ms": quiet_median,
                                                   "quiet_max_ms": quiet_max, "agent_ms": agent_ms(reply),
                                                   "phases_ms": {k: v * 1e3 for k, v in reply["phases"].items()}})
                                client.rollback(timeout=120)
                finally:
                    probe.stop()
                proc.send("quit")
            for mode in ("eager", "lazy"):
                stall[mode][kind][str(n)] = bs.median([row["stall_ms"] for row in rows[mode]])
            detail[f"{kind}/{n}"] = {"rounds": rows, "probe_errors": probe.errors}
    # eager transfer cost per instance: the agent's transfer phase over N, tracked class, largest N run
    per_instance = None
    if sizes:
        n = max(sizes)
        rows = detail[f"tracked/{n}"]["rounds"]["eager"]
        per_instance = bs.median([row["phases_ms"].get("transfer", 0.0) * 1e3 / n for row in rows])
    return {"stall_ms": stall, "stall_detail": detail, "eager_transfer_us_per_instance": per_instance}


# --- 3. the CLI and attach --------------------------------------------------------------

def _wall(argv: List[str], timeout: float = 120) -> tuple:
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return (time.perf_counter() - t) * 1e3, proc


def bench_cli(tmp: Path, rounds: int) -> Dict[str, Any]:
    folder = bs.write_modules(tmp / "cli", {"bench_climod": bs.CLI_V1})
    bundle = bs.write_bundle(tmp / "cli-v2", "cli", "2", {"bench_climod": bs.CLI_V2})
    cmd = bs.dynupdate_cmd()
    times, agent_side = [], []
    with bs.Proc([str(bs.TARGETS / "cli_target.py"), str(folder)], agent=True) as proc:
        proc.expect("READY", 30)
        with connect(proc.pid) as client:
            for _ in range(rounds):
                wall, res = _wall(cmd + ["apply", "--pid", str(proc.pid), str(bundle), "--json"])
                if res.returncode != 0:
                    raise RuntimeError(f"dynupdate apply failed ({res.returncode}): {res.stdout} {res.stderr}")
                times.append(wall)
                agent_side.append(sum(json.loads(res.stdout)["phases"].values()) * 1e3)
                proc.send("value")
                if proc.expect("VALUE") != "hi x":
                    time.sleep(0.01)
                    proc.send("value")
                    if proc.expect("VALUE") != "hi x":
                        raise RuntimeError("dynupdate apply: the target does not run the new code")
                client.rollback()
            # `dynupdate status` against the same target (agent already in): the default table and --json
            status_table, status_json = [], []
            for r in range(rounds):
                for as_json in (False, True) if r % 2 == 0 else (True, False):
                    wall, res = _wall(cmd + ["status", "--pid", str(proc.pid)] + (["--json"] if as_json else []))
                    if res.returncode != 0:
                        raise RuntimeError(f"dynupdate status failed ({res.returncode}): {res.stdout} {res.stderr}")
                    (status_json if as_json else status_table).append(wall)
    startup = bs.median([_wall([sys.executable, "-c", "pass"])[0] for _ in range(rounds)])
    imports = bs.median([_wall([sys.executable, "-c", "import dynupdate.cli, dynupdate.attach, dynupdate.render, "
                                                      "dynupdate.bundle, dynupdate.client"])[0]
                         for _ in range(rounds)])
    return {"cli_apply_ms": bs.median(times), "cli_status_ms": bs.median(status_table),
            "cli_detail": {"runs_ms": times, "status_runs_ms": status_table, "status_json_runs_ms": status_json,
                           "status_json_ms": bs.median(status_json), "agent_side_ms": bs.median(agent_side),
                           "python_startup_ms": startup, "cli_imports_ms": imports, "command": " ".join(cmd)}}


def bench_attach(tmp: Path, rounds: int) -> Dict[str, Any]:
    cmd = bs.dynupdate_cmd()
    pyrasite = bs.tool("pyrasite")
    payload = tmp / "pyrasite_payload.py"
    ours, bare, reasons = [], [], []
    for r in range(rounds):
        with bs.Proc([str(bs.TARGETS / "plain_target.py")]) as a, bs.Proc([str(bs.TARGETS / "plain_target.py")]) as b:
            a.expect("READY")
            b.expect("READY")
            time.sleep(0.1)
            order = [("ours", a), ("pyrasite", b)] if r % 2 == 0 else [("pyrasite", b), ("ours", a)]
            for which, proc in order:
                if which == "ours":
                    wall, res = _wall(cmd + ["attach", "--pid", str(proc.pid), "--json"], timeout=60)
                    ok = res.returncode == 0 and json.loads(res.stdout or "{}").get("injected") is True
                    if ok:
                        ours.append(wall)
                    else:
                        reasons.append(f"exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
                else:
                    if not pyrasite:
                        reasons.append("pyrasite executable not found")
                        continue
                    marker = tmp / f"pyrasite-ran-{r}"
                    payload.write_text(f"open({str(marker)!r}, 'w').write('ok')\n")
                    wall, res = _wall(pyrasite + [str(proc.pid), str(payload)], timeout=60)
                    if res.returncode == 0 and marker.exists():
                        bare.append(wall)
                    else:
                        reasons.append(f"pyrasite exit {res.returncode}, payload ran: {marker.exists()}: "
                                       f"{(res.stderr or res.stdout).strip()[-300:]}")
    return {"attach_ms": bs.median(ours), "attach_detail": {
        "dynupdate_attach_runs_ms": ours, "pyrasite_runs_ms": bare, "pyrasite_ms": bs.median(bare),
        "errors": reasons}}


# --- 4. under load ------------------------------------------------------------------------

def _client_loop(port: int, stop_at: float, lat: List[float], failed: List[int], seed: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    perf = time.perf_counter
    x = seed
    while perf() < stop_at:
        x = (x * 1103515245 + 12345) % 1000
        t = perf()
        try:
            conn.request("GET", f"/?x={x}")
            resp = conn.getresponse()
            body = resp.read()
            ok = resp.status == 200 and json.loads(body) == {"y": 2 * x + 1, "b": 100 * (x % 64)}
        except Exception:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        lat.append(perf() - t)
        if not ok:
            failed[0] += 1
    conn.close()


def _window(port: int, seconds: float, threads: int, during: Optional[Callable[[float], None]] = None) -> tuple:
    lat: List[float] = []
    failed = [0]
    start = time.perf_counter()
    stop_at = start + seconds
    workers = [threading.Thread(target=_client_loop, args=(port, stop_at, lat, failed, i * 7 + 1))
               for i in range(threads)]
    for w in workers:
        w.start()
    if during is not None:
        during(stop_at)
    for w in workers:
        w.join()
    return lat, failed[0], time.perf_counter() - start


def bench_load(tmp: Path, seconds: float, threads: int = 4) -> Dict[str, Any]:
    folder = bs.write_modules(tmp / "load", {"bench_loadmod": bs.LOAD_V1})
    bundle = load_bundle(str(bs.write_bundle(tmp / "load-v2", "load", "2", {"bench_loadmod": bs.LOAD_V2})))
    before: List[float] = []
    during: List[float] = []
    failed_before = failed_during = 0
    t_before = t_during = 0.0
    updates = {"applies": 0, "rollbacks": 0, "errors": [], "agent_ms": []}
    with bs.Proc([str(bs.TARGETS / "load_server.py"), str(folder)], agent=True) as proc:
        port = int(proc.expect("READY", 30))
        with connect(proc.pid) as client:
            _window(port, 0.5, threads)  # warm-up

            def churn(stop_at: float) -> None:
                applied = False
                while time.perf_counter() < stop_at - 0.05:
                    t = time.perf_counter()
                    try:
                        reply = client.rollback() if applied else client.apply(bundle)
                        updates["agent_ms"].append(agent_ms(reply))
                        updates["rollbacks" if applied else "applies"] += 1
                        applied = not applied
                    except Exception as exc:
                        updates["errors"].append(f"{type(exc).__name__}: {exc}")
                    time.sleep(max(0.0, 0.2 - (time.perf_counter() - t)))
                if applied:
                    client.rollback()
                    updates["rollbacks"] += 1

            for _ in range(2):  # steady, churn, steady, churn: drift cancels
                lat, failed, took = _window(port, seconds / 2, threads)
                before += lat
                failed_before += failed
                t_before += took
                lat, failed, took = _window(port, seconds / 2, threads, churn)
                during += lat
                failed_during += failed
                t_during += took
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {"load": {
        "rps_before": len(before) / t_before, "rps_during": len(during) / t_during,
        "p50_ms_before": ms(bs.percentile(before, 50)), "p99_ms_before": ms(bs.percentile(before, 99)),
        "p50_ms_during": ms(bs.percentile(during, 50)), "p99_ms_during": ms(bs.percentile(during, 99)),
        "failed": failed_before + failed_during + len(updates["errors"]),
        "failed_before": failed_before, "failed_during": failed_during,
        "max_ms_before": ms(max(before)), "max_ms_during": ms(max(during)),
        "client_threads": threads, "window_s": seconds, "applies": updates["applies"],
        "rollbacks": updates["rollbacks"], "update_errors": updates["errors"][:5],
        "update_agent_ms_median": bs.median(updates["agent_ms"]),
    }}


# --- 5. peers -----------------------------------------------------------------------------

PEERS = ["importlib.reload", "IPython autoreload", "jurigged", "pyrasite + reload", "dynupdate"]
CHECKS = ["function_ref_imported_elsewhere", "stored_bound_method", "existing_instance_method", "isinstance",
          "module_state_kept", "state_transfer"]


def _peer_available(peer: str) -> Optional[str]:
    def importable(mod: str) -> Optional[str]:
        res = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True)
        return None if res.returncode == 0 else f"`import {mod}` failed: {res.stderr.strip().splitlines()[-1:]}"
    if peer == "IPython autoreload":
        return importable("IPython.extensions.autoreload")
    if peer == "jurigged":
        return importable("jurigged")
    if peer == "pyrasite + reload":
        if not bs.tool("pyrasite"):
            return "the pyrasite executable is not installed"
        if not bs.tool("gdb") and not subprocess.run(["which", "gdb"], capture_output=True).returncode == 0:
            return "gdb is not installed"
    return None


def _peer_once(tmp: Path, peer: str, r: int) -> Dict[str, Any]:
    folder = bs.write_modules(tmp / f"peer-{peer.split()[0].replace('.', '_')}-{r}",
                              {"peermod": bs.PEER_V1, "peeruser": bs.PEER_USER, "peermod_v2": bs.PEER_V2})
    mode = {"importlib.reload": "reload", "IPython autoreload": "autoreload", "jurigged": "jurigged",
            "pyrasite + reload": "pyrasite", "dynupdate": "dynupdate"}[peer]
    extra = ["agent"] if mode == "dynupdate" else []
    with bs.Proc([str(bs.TARGETS / "peer_target.py"), str(folder), mode, *extra]) as proc:
        proc.expect("READY", 60)
        error = None
        if mode in ("reload", "autoreload", "jurigged"):
            res = proc.ask("update")
            apply_ms, error = res["apply_ms"], res["error"]
        elif mode == "pyrasite":
            (folder / "peermod.py").write_text(bs.PEER_V2)
            script = folder / "inject_reload.py"
            script.write_text(bs.PYRASITE_RELOAD)
            apply_ms, res = _wall(bs.tool("pyrasite") + [str(proc.pid), str(script)], timeout=60)
            if res.returncode != 0:
                error = f"pyrasite exit {res.returncode}: {res.stderr.strip()[-200:]}"
        else:
            bundle = load_bundle(str(bs.write_bundle(tmp / f"peer-bundle-{r}", "peer", "2",
                                                     {"peermod": bs.PEER_V2})))
            with connect(proc.pid) as client:
                t = time.perf_counter()
                client.apply(bundle)
                apply_ms = (time.perf_counter() - t) * 1e3
        checks = proc.ask("check")
    return {"apply_ms": apply_ms, "error": error, "checks": checks}


def bench_peers(tmp: Path, rounds: int) -> Dict[str, Any]:
    peers: Dict[str, Any] = {}
    for peer in PEERS:
        note(f"peers: {peer}")
        reason = _peer_available(peer)
        if reason:
            peers[peer] = {"apply_ms": None, "checks_passed": None, "checks_total": len(CHECKS),
                           "available": False, "reason": reason}
            continue
        runs = [_peer_once(tmp, peer, r) for r in range(rounds)]
        last = runs[-1]
        passed = {name: all(run["checks"][name] for run in runs) for name in CHECKS}
        peers[peer] = {"apply_ms": bs.median([run["apply_ms"] for run in runs]),
                       "checks_passed": sum(passed.values()), "checks_total": len(CHECKS), "available": True,
                       "checks": passed, "applied": last["checks"]["applied"],
                       "error": next((run["error"] for run in runs if run["error"]), None)}
    return {"peers": peers}


# --- output -------------------------------------------------------------------------------

def machine() -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform()}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


GOALS = [
    ("call_overhead_ratio", lambda r: r["call_overhead_ratio"] <= 1.02, "<= 1.02"),
    ("function_call_ratio_after_update", lambda r: r["function_call_ratio_after_update"] <= 1.02, "<= 1.02"),
    ("create_overhead_ratio", lambda r: r["create_overhead_ratio"] <= 1.25, "<= 1.25"),
    ("lazy pause at 1M", lambda r: r["pause_ms"]["lazy"]["1000000"] <= 5, "<= 5 ms"),
    ("eager pause at 100k", lambda r: r["pause_ms"]["eager"]["100000"] <= 150, "<= 150 ms"),
    ("cli_apply_ms", lambda r: r["cli_apply_ms"] <= 250, "<= 250 ms"),
    ("attach_ms vs pyrasite", lambda r: r["attach_ms"] <= r["attach_detail"]["pyrasite_ms"], "<= bare pyrasite"),
    ("load.failed", lambda r: r["load"]["failed"] == 0, "== 0"),
    ("load p99 during", lambda r: r["load"]["p99_ms_during"] - r["load"]["p99_ms_before"] <= 5, "<= before + 5 ms"),
]


def goals(result: Dict[str, Any]) -> List[tuple]:
    rows = []
    for name, test, want in GOALS:
        try:
            rows.append((name, want, "met" if test(result) else "MISSED"))
        except (TypeError, KeyError):
            rows.append((name, want, "not measured"))
    return rows


def table(result: Dict[str, Any], markdown: bool = False) -> str:
    lines: List[str] = []

    def block(title: str, header: List[str], rows: List[List[Any]]) -> None:
        rows = [[fmt(c) for c in row] for row in rows]
        if markdown:
            lines.append(f"**{title}**\n")
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines.extend("| " + " | ".join(row) + " |" for row in rows)
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
            lines.append(title)
            lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
            lines.extend("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
        lines.append("")

    m = result["machine"]
    lines.append(f"machine: {m['nproc']} x {m['cpu']}, Python {m['python']}, {m['platform']}; "
                 f"mode: {'quick' if result['quick'] else 'full'}, took {result['took_s']:.0f} s\n")
    r = result
    block("steady state", ["metric", "value", "detail"], [
        ["call_overhead_ratio", r["call_overhead_ratio"], f"{fmt(r['call_ns']['updatable'], 1)} vs "
                                                          f"{fmt(r['call_ns']['plain'], 1)} ns/call"],
        ["function_call_ratio_after_update", r["function_call_ratio_after_update"],
         f"{fmt(r['function_call_ns']['updated'], 1)} vs {fmt(r['function_call_ns']['control'], 1)} ns/call"],
        ["create_overhead_ratio", r["create_overhead_ratio"],
         f"{fmt(r['create_ns']['updatable'], 0)} vs {fmt(r['create_ns']['plain'], 0)} ns (create+free)"],
        ["create_keep_ratio", r["create_keep_ratio"],
         f"{fmt(r['create_keep_ns']['updatable'], 0)} vs {fmt(r['create_keep_ns']['plain'], 0)} ns (create only)"],
        ["activity_ns", r["activity_ns"], "enter+leave activity()"],
    ])
    rows = []
    for n in SIZES:
        d = r.get("pause_detail", {}).get(str(n), {})
        rows.append([f"{n:,}", r["pause_ms"]["eager"][str(n)], r["apply_ms"]["eager"][str(n)],
                     r["pause_ms"]["lazy"][str(n)], r["apply_ms"]["lazy"][str(n)], d.get("noise_ms")])
    block("pause and apply (ms) vs live instances", ["N", "eager pause", "eager apply", "lazy pause", "lazy apply",
                                                     "probe noise"], rows)
    ad = r["attach_detail"]
    cd = r["cli_detail"]
    block("command line (ms, median wall time)", ["metric", "value", "detail"], [
        ["cli_apply_ms", r["cli_apply_ms"], f"agent side {fmt(cd['agent_side_ms'])}, python startup "
                                            f"{fmt(cd['python_startup_ms'], 0)}, CLI imports "
                                            f"{fmt(cd['cli_imports_ms'], 0)}"],
        ["cli_status_ms", r.get("cli_status_ms"), f"--json: {fmt(cd.get('status_json_ms'))}"],
        ["attach_ms", r["attach_ms"], "dynupdate attach --pid (gdb injection + hello)" +
         (f"; errors: {ad['errors'][0][:120]}" if ad["errors"] else "")],
        ["pyrasite_ms", ad["pyrasite_ms"], "bare `pyrasite PID payload.py`, same run"],
    ])
    ld = r["load"]
    block(f"under load ({ld['client_threads']} client threads, {ld['applies']} applies + {ld['rollbacks']} "
          f"rollbacks during)", ["window", "rps", "p50 ms", "p99 ms", "max ms", "failed"], [
        ["steady", ld["rps_before"], ld["p50_ms_before"], ld["p99_ms_before"], ld["max_ms_before"],
         ld["failed_before"]],
        ["apply+rollback every 200 ms", ld["rps_during"], ld["p50_ms_during"], ld["p99_ms_during"],
         ld["max_ms_during"], ld["failed_during"]],
    ])
    peers = r["peers"]
    names = list(peers)
    rows = []
    for check in CHECKS:
        rows.append([check.replace("_", " ")] + [
            ("yes" if peers[p]["checks"][check] else "no") if peers[p].get("available") else "n/a" for p in names])
    rows.append(["checks passed"] + [f"{peers[p]['checks_passed']}/{peers[p]['checks_total']}"
                                     if peers[p].get("available") else "unavailable" for p in names])
    rows.append(["apply ms"] + [fmt(peers[p]["apply_ms"], 1) for p in names])
    block("peers: the same change with each tool", ["check"] + names, rows)
    block("goals", ["goal", "target", "status"], [list(g) for g in goals(r)])
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'); plot skipped"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for mode, marker in (("eager", "o"), ("lazy", "s")):
        pts = [(n, result["pause_ms"][mode][str(n)]) for n in SIZES if result["pause_ms"][mode][str(n)] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 0.1) for p in pts], marker=marker, label=f"{mode} pause")
    noise = [(n, result["pause_detail"][str(n)]["noise_ms"]) for n in SIZES if str(n) in result["pause_detail"]]
    if noise:
        ax.plot([p[0] for p in noise], [max(p[1], 0.1) for p in noise], linestyle=":", color="grey",
                label="probe noise (no update)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("live instances of the updated class (N)")
    ax.set_ylabel("pause seen by a caller (ms)")
    m = result["machine"]
    ax.set_title(f"dynupdate pause vs N ({m['nproc']} x {m['cpu']}, Python {m['python']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def plot_stall(result: Dict[str, Any], path: str, before: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Largest client-seen stall vs N, one line per mode and class kind (and `before`'s, dashed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'); stall plot skipped"
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=110)
    styles = {("eager", "tracked"): ("tab:blue", "o"), ("eager", "untracked"): ("tab:orange", "s"),
              ("lazy", "tracked"): ("tab:green", "^"), ("lazy", "untracked"): ("tab:red", "D")}
    for label, res, line in (("before", before, "--"), ("", result, "-")):
        if not res or "stall_ms" not in res:
            continue
        for (mode, kind), (color, marker) in styles.items():
            pts = [(n, res["stall_ms"][mode][kind][str(n)]) for n in SIZES
                   if res["stall_ms"][mode][kind].get(str(n)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [max(p[1], 0.1) for p in pts], linestyle=line, marker=marker,
                        color=color, alpha=0.45 if label else 1.0,
                        label=f"{mode}, {kind}" + (f" ({label})" if label else ""))
    quiet = [bs.median([row["quiet_max_ms"] for mode in ("eager", "lazy")
                        for row in result["stall_detail"].get(f"{kind}/{n}", {}).get("rounds", {}).get(mode, [])])
             for n in SIZES for kind in ("tracked",)]
    pts = [(n, q) for n, q in zip(SIZES, quiet) if q is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=":", color="grey",
                label="largest latency, no update (noise)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("live instances of the updated class (N)")
    ax.set_ylabel("largest /ping latency during apply (ms)")
    m = result["machine"]
    ax.set_title(f"client-seen stall vs N ({m['nproc']} x {m['cpu']}, Python {m['python']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run (< 1 min); see the module docstring")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for BENCHMARKS.md)")
    parser.add_argument("--plot", metavar="PNG", help="draw pause vs N into this file (needs matplotlib)")
    parser.add_argument("--save", metavar="JSON", help="also write the JSON result to this file")
    parser.add_argument("--stall-plot", metavar="PNG", help="draw the client-seen stall vs N (needs matplotlib)")
    parser.add_argument("--stall-sizes", metavar="N,N", help="stall section: these N only (e.g. 100000)")
    parser.add_argument("--stall-rounds", type=int, metavar="R", help="stall section: R rounds per N and mode")
    parser.add_argument("--stall-before", metavar="JSON", help="a saved earlier result to draw dashed in --stall-plot")
    parser.add_argument("--only", help="comma-separated sections to run: "
                                       "micro,pause,stall,cli,attach,load,peers,asyncio,probes")
    args = parser.parse_args(argv)
    quick = args.quick
    sections = set((args.only or "micro,pause,stall,cli,attach,load,peers,asyncio,probes").split(","))
    started = time.perf_counter()
    result: Dict[str, Any] = {"quick": quick, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="dynupdate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if "micro" in sections:
            note("steady-state costs")
            result.update(bench_micro(tmp, 7 if quick else 15))
        if "pause" in sections:
            sizes = SIZES[:2] if quick else SIZES
            result.update(bench_pause(tmp, sizes, (lambda n: 2) if quick else
                                      (lambda n: 5 if n <= 10000 else 3 if n <= 100000 else 2)))
        if "stall" in sections:
            sizes = [int(n) for n in args.stall_sizes.split(",")] if args.stall_sizes else \
                SIZES[:2] if quick else SIZES
            rounds = (lambda n: args.stall_rounds) if args.stall_rounds else (lambda n: 1) if quick else \
                (lambda n: 3 if n <= 10000 else 2 if n <= 100000 else 1)
            result.update(bench_stall(tmp, sizes, rounds))  # stall_ms.attach: the attach section
        if "cli" in sections:
            note("cli apply")
            result.update(bench_cli(tmp, 3 if quick else 7))
        if "attach" in sections:
            note("attach vs pyrasite")
            result.update(bench_attach(tmp, 1 if quick else 3))
            from bench_attach import attach_stall  # issue 14: scripts/bench_attach.py
            attach_stall(result, 1 if quick else 3)
        if "load" in sections:
            note("load")
            result.update(bench_load(tmp, 1.0 if quick else 2.5))
        if "peers" in sections:
            result.update(bench_peers(tmp, 1 if quick else 3))
        if "asyncio" in sections:  # issue 11: scripts/bench_asyncio.py
            result.update(bench_asyncio.run(tmp, quick))
        if "probes" in sections:  # issue 12: scripts/bench_probes.py
            note("live probes")
            from bench_probes import bench_probes
            result["probes"] = bench_probes(rounds=5 if quick else 15)
    result["took_s"] = time.perf_counter() - started
    result["goals"] = {name: status for name, _, status in goals(result)}
    if args.plot:
        problem = plot(result, args.plot)
        if problem:
            note(problem)
    if args.stall_plot and "stall_ms" in result:
        before = json.loads(Path(args.stall_before).read_text()) if args.stall_before else None
        problem = plot_stall(result, args.stall_plot, before)
        if problem:
            note(problem)
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        try:
            print(table(result, markdown=args.markdown))
        except KeyError as exc:  # a partial run (--only)
            print(json.dumps(result, indent=2))
            note(f"partial run, table needs {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
