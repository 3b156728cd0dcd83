"""Pre-fork measure: wall time of `dynupdate apply --tree` on gunicorn (1 master + 4 workers)
under concurrent load, and the requests that failed meanwhile (goal 0).

    python scripts/prefork_bench.py [--rounds 3]

Three services: sync + --preload and gthread without --preload under `dynupdate run`,
and sync started plainly (the first apply injects 5 agents with gdb).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "tests" / "targets"
V2 = str(ROOT / "tests" / "bundles" / "pf-v2")


def _wait_port(proc: subprocess.Popen) -> int:
    for line in proc.stdout:  # type: ignore[union-attr]
        if "Listening at:" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore
            return int(line.split("127.0.0.1:")[1].split()[0])
    raise SystemExit("gunicorn did not start")


def measure(under_run: bool, worker: str, preload: bool, rounds: int) -> dict:
    base = tempfile.mkdtemp(prefix="du-pfb-", dir="/tmp")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(TARGETS), DYNUPDATE_RUNTIME_DIR=base)
    pidfile = os.path.join(base, "g.pid")
    args = ["-w", "4", "-k", worker, "-b", "127.0.0.1:0", "-p", pidfile, "--no-control-socket",
            *(["--preload"] if preload else []), "pf_app.wsgi:app"]
    argv = ([sys.executable, "-m", "dynupdate", "run", "-m", "gunicorn", *args] if under_run
            else [sys.executable, "-m", "gunicorn", *args])
    proc = subprocess.Popen(argv, env=env, cwd=str(TARGETS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0}
    try:
        port = _wait_port(proc)
        time.sleep(1.5)  # the workers boot

        def load() -> None:
            while not stop.is_set():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/")
                    ok = conn.getresponse().status == 200
                    conn.close()
                except OSError:
                    ok = False
                stats["ok" if ok else "failed"] += 1

        clients = [threading.Thread(target=load, daemon=True) for _ in range(2)]
        for c in clients:
            c.start()
        walls, pids = [], 0
        for _ in range(rounds):
            for action in (["apply", "--pidfile", pidfile, "--tree", V2], ["rollback", "--pidfile", pidfile, "--tree"]):
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "dynupdate", *action, "--json"], env=env,
                                      capture_output=True, text=True, check=False)
                wall = time.monotonic() - started
                if done.returncode != 0:
                    raise SystemExit(f"{action[0]} failed: {done.stdout}{done.stderr}")
                if action[0] == "apply":
                    walls.append(round(wall, 2))
                    pids = len(json.loads(done.stdout)["pids"])
        stop.set()
        for c in clients:
            c.join()
        return {"service": f"{worker}{' --preload' if preload else ''}{' under run' if under_run else ' plain'}",
                "pids": pids, "apply_tree_wall_s": walls, "requests_ok": stats["ok"],
                "requests_failed": stats["failed"]}
    finally:
        stop.set()
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    for under_run, worker, preload in ((True, "sync", True), (True, "gthread", False), (False, "sync", False)):
        print(json.dumps(measure(under_run, worker, preload, rounds)), flush=True)


if __name__ == "__main__":
    main()
