"""Pre-fork servers: real gunicorn services patched, checked and rolled back as a whole.

Two shared services keep this affordable on 2 cores, and between them cover the
matrix: sync workers, no --preload, started plainly (agents injected by the
CLI); gthread workers, --preload, started under `dynupdate run`, with
--max-requests churn. Every test keeps concurrent load on the service and
requires every request to be answered.
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Set

import pytest

from conftest import ROOT, TARGETS, Target, dynupdate, dynupdate_json, wait_until

BUNDLES = ROOT / "tests" / "bundles"
V2 = str(BUNDLES / "pf-v2")


def _derived(base: str, name: str, version: str, modules: Dict[str, str], append: str = "") -> str:
    """A bundle made at test time from a committed one (so the two cannot drift apart)."""
    folder = tempfile.mkdtemp(prefix=f"du-{name}-")
    atexit.register(shutil.rmtree, folder, True)
    for path in (BUNDLES / base).iterdir():
        if path.suffix == ".py":
            shutil.copy(path, folder)
    table = "".join(f'"{module}" = "{file}"\n' for module, file in modules.items())
    with open(os.path.join(folder, "patch.toml"), "w") as fh:
        fh.write(f'name = "{name}"\nversion = "{version}"\n\n[modules]\n{table}')
    if append:
        with open(os.path.join(folder, next(iter(modules.values()))), "a") as fh:
            fh.write(append)
    return folder


# pf-v2 with a slow module-level transfer hook: widens the swap/transfer critical section
# so that --max-requests forks of the gunicorn master land inside it (fork-safety test)
SLOW_V2 = _derived("pf-v2", "pf-slow-v2", "2s", {"pf_app.wsgi": "wsgi.py", "pf_app.late": "late.py"}, """

def __dynupdate_transfer__(old):
    import time

    time.sleep(0.3)  # a slow state transfer: forks meanwhile must wait for it, never see half of it
""")
# for `python pf_app/main.py` (a script, no package name): the same source, named "__main__"
SCRIPT_V2 = _derived("pf-main-v2", "pf-script-v2", "2", {"__main__": "main.py"})

pytest.importorskip("gunicorn")


def _gunicorn_flags() -> List[str]:
    """gunicorn >= 24 opens a control socket in ~/.gunicorn by default: one per test service, off."""
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True).stdout
    return ["--no-control-socket"] if "--no-control-socket" in out else []


class Service:
    """A gunicorn master with its workers, its pidfile and a private agent socket folder."""

    def __init__(self, worker: str, *, preload: bool, under_run: bool, extra: List[str]) -> None:
        self.base = tempfile.mkdtemp(prefix="du-pf-", dir="/tmp")
        self.env = {"DYNUPDATE_RUNTIME_DIR": self.base}
        self.slow_mark = os.path.join(self.base, "slow")
        self.pidfile = os.path.join(self.base, "gunicorn.pid")
        args = ["-w", "2", "-k", worker, "-b", "127.0.0.1:0", "-p", self.pidfile, "--timeout", "10",
                "--graceful-timeout", "2", *(["--preload"] if preload else []), *_gunicorn_flags(), *extra,
                "pf_app.wsgi:app"]
        if worker == "gthread":
            args[4:4] = ["--threads", "2"]
        argv = ([sys.executable, "-m", "dynupdate", "run", "-m", "gunicorn", *args] if under_run
                else [sys.executable, "-m", "gunicorn", *args])
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(TARGETS), PF_SLOW_MARK=self.slow_mark,
                   **self.env)
        self.target = Target(argv, env=env, cwd=str(TARGETS))
        line = self.target.wait_for("Listening at:", timeout=30)
        self.port = int(line.split("Listening at: http://127.0.0.1:")[1].split()[0])
        self.master = self.target.pid
        wait_until(lambda: len(self.workers()) >= 2, timeout=30, message="2 gunicorn workers")

    def workers(self) -> List[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.master).children() if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def get(self, path: str = "/", timeout: float = 10.0) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode()
            if resp.status != 200:
                raise AssertionError(f"HTTP {resp.status}: {body}")
            return body.strip()
        finally:
            conn.close()

    def answers_from(self, pid: int, path: str = "/", tries: int = 400) -> str:
        """The body of a request that the worker `pid` answered."""
        for _ in range(tries):
            body = self.get(path)
            if body.endswith(f" {pid}"):
                return body.rsplit(" ", 1)[0]
        raise AssertionError(f"worker {pid} answered none of {tries} requests")

    def all_answer(self, expected: str, path: str = "/") -> None:
        for pid in self.workers():
            assert self.answers_from(pid, path) == expected, (pid, path)

    def sample(self, expected: str, path: str = "/", n: int = 20) -> None:
        """n requests, whichever workers answer them (under churn a given worker may be gone)."""
        bodies = {self.get(path).rsplit(" ", 1)[0] for _ in range(n)}
        assert bodies == {expected}, (path, bodies)

    def cli(self, *args: str) -> tuple:
        return dynupdate_json(*args, env=self.env, timeout=180)

    def stop(self) -> None:
        self.target.stop()
        for pid in self.workers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


class Load:
    """Concurrent clients hammering the service; counts every failed request."""

    def __init__(self, service: Service, paths=("/", "/late"), clients: int = 2) -> None:
        self.service, self.paths = service, paths
        self.stopping = threading.Event()
        self.ok = 0
        self.failures: List[str] = []
        self.pids: Set[int] = set()
        self.bodies: Set[str] = set()
        self.answers: List[tuple] = []  # (monotonic time, pid, text) of every answer
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        n = 0
        while not self.stopping.is_set():
            path = self.paths[(n + i) % len(self.paths)]
            n += 1
            try:
                body = self.service.get(path)
            except Exception as exc:  # every kind of failure counts
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            text, pid = body.rsplit(" ", 1)
            self.ok += 1
            self.pids.add(int(pid))
            self.bodies.add(text)
            self.answers.append((time.monotonic(), int(pid), text))
            time.sleep(0.005)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture(scope="module")
def sync_plain():
    """sync workers, application imported in each worker (no --preload), started without dynupdate."""
    service = Service("sync", preload=False, under_run=False, extra=[])
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def gthread_run_churn():
    """gthread workers, --preload, under `dynupdate run`, workers restarted every ~10 requests."""
    service = Service("gthread", preload=True, under_run=True,
                      extra=["--max-requests", "8", "--max-requests-jitter", "4"])
    try:
        yield service
    finally:
        service.stop()


def _outcomes(data: dict) -> list:
    return [(r["pid"], r["role"], r.get("outcome"), r["error"]) for r in data["pids"]]


def _by_pid(data: dict) -> Dict[int, dict]:
    return {row["pid"]: row for row in data["pids"]}


def _tree_versions(service: Service) -> Dict[int, str]:
    code, data = service.cli("status", "--pidfile", service.pidfile, "--tree")
    assert code == 0, data
    return {row["pid"]: row["version"] for row in data["pids"]}


def test_tree_apply_restart_status_rollback(sync_plain):
    """One command each: apply (agents injected), a restarted worker on v2, status, rollback of every process."""
    s = sync_plain
    with Load(s) as load:
        folder = os.path.join(s.base, f"dynupdate-{os.getuid()}")
        bare = [p for p in [s.master] + s.workers() if not os.path.exists(os.path.join(folder, f"{p}.sock"))]
        proc = dynupdate("apply", "--pidfile", s.pidfile, "--tree", V2, "--json", env=s.env, timeout=180)
        code, data = proc.returncode, json.loads(proc.stdout)
        assert code == 0, data
        # injecting agents changes processes: the CLI says so for each, --json included
        for pid in bare:
            assert f"no agent in pid {pid}" in proc.stderr and "injecting" in proc.stderr, proc.stderr
        rows = _by_pid(data)
        assert data["ok"] and not data["skew"] and data["rolled_back"] == []
        assert rows[s.master]["role"] == "master" and set(s.workers()) <= set(rows)
        assert {r["version"] for r in rows.values()} == {"2"}
        assert all(r["previous_version"] == "base" and r["error"] is None for r in rows.values())
        s.all_answer("v2")
        s.all_answer("late-v2", "/late")

        victim = s.workers()[0]
        os.kill(victim, signal.SIGTERM)  # exits after its request; gunicorn forks a replacement from the updated master
        newcomer = wait_until(lambda: [p for p in s.workers() if p not in rows], timeout=30,
                              message="a replacement worker")[0]
        assert s.answers_from(newcomer) == "v2"
        assert s.answers_from(newcomer, "/late") == "late-v2"  # imported from the bundle after the update
        versions = _tree_versions(s)
        assert versions[newcomer] == "2" and set(versions.values()) == {"2"}

        code, data = s.cli("rollback", "--pidfile", s.pidfile, "--tree")
        assert code == 0, data
        assert {r["version"] for r in data["pids"]} == {"base"}
        s.all_answer("v1")
        s.all_answer("late-v1", "/late")  # the newcomer's bundle-imported modules run the original code again
        assert set(_tree_versions(s).values()) == {"base"}
    assert load.failures == [] and load.ok > 0


def test_canary_with_failing_check_rolls_back_everything(sync_plain, tmp_path):
    s = sync_plain
    seen = tmp_path / "pids"
    with Load(s) as load:
        code, data = s.cli("apply", "--pid", str(s.master), "--tree", "--canary", "1",
                           "--check", f'echo "$DYNUPDATE_PIDS" > {seen}; exit 3', V2)
        assert code == 1, data
        assert not data["ok"] and "exited 3" in data["error"]
        canary = [int(p) for p in seen.read_text().split()]
        assert len(canary) == 2 and canary[0] == s.master  # the master, then one canary worker
        assert sorted(data["rolled_back"]) == sorted(canary)
        untouched = [p for p in s.workers() if p not in canary]
        assert untouched and all(_by_pid(data).get(p, {}).get("outcome") in (None, "skipped") for p in untouched)
        assert set(_tree_versions(s).values()) == {"base"}
        s.all_answer("v1")
        s.all_answer("late-v1", "/late")
    assert load.failures == []


def test_rerun_is_idempotent_and_rollback_to_current_version_is_a_no_op(sync_plain, tmp_path):
    s = sync_plain
    seen = tmp_path / "checks"
    code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", "--canary", "1", "--canary-wait", "0.2",
                       "--check", f'echo "$DYNUPDATE_PIDS" >> {seen}', V2)
    assert code == 0 and data["ok"], _outcomes(data)
    after_canary, at_end = [line.split() for line in seen.read_text().splitlines()]
    assert len(after_canary) == 2 and sorted(map(int, at_end)) == sorted(r["pid"] for r in data["pids"])
    code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", V2)
    assert code == 0, data
    assert {r["outcome"] for r in data["pids"]} == {"already"}
    code, data = s.cli("rollback", "--pidfile", s.pidfile, "--tree", "--to", "base")
    assert code == 0 and {r["version"] for r in data["pids"]} == {"base"}, data
    code, data = s.cli("rollback", "--pidfile", s.pidfile, "--tree", "--to", "base")
    assert code == 0 and {r["outcome"] for r in data["pids"]} == {"already"}, data
    code, data = s.cli("rollback", "--pid", str(s.workers()[0]), "--to", "base")  # single pid: a no-op too
    assert code == 0 and data["ok"] and data["version"] == "base", data
    proc = dynupdate("apply", "--pid", str(s.master), "--canary", "1", V2, env=s.env)
    assert proc.returncode == 2 and "--tree" in proc.stderr


def test_fork_during_updates_in_a_loop_never_hangs(gthread_run_churn):
    """The master is updated and rolled back in a loop (a slow transfer widens the critical
    section) while --max-requests restarts workers continuously: no hang, no failed request,
    every child on one whole version, and every worker forked meanwhile updatable afterwards."""
    s = gthread_run_churn
    first = set(s.workers())
    with Load(s, clients=3) as load:
        for i in range(4):
            code, data = s.cli("apply", "--pid", str(s.master), SLOW_V2 if i % 2 else V2)
            assert code == 0, data
            code, data = s.cli("rollback", "--pid", str(s.master))
            assert code == 0, data
        restarted = load.pids - first
        code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", V2)
        assert code == 0, _outcomes(data)
        applied_at, applied = time.monotonic(), {r["pid"] for r in data["pids"]}
        # a worker forked a moment ago may not answer yet (its agent is starting): it converges
        wait_until(lambda: set(_tree_versions(s).values()) == {"2"}, timeout=20, interval=0.5,
                   message="every process of the tree reporting version 2")
        s.sample("v2")
        s.sample("late-v2", "/late")
        # workers the churn forked after the tree apply serve the new code, /late included
        wait_until(lambda: [a for a in load.answers if a[0] > applied_at and a[1] not in applied],
                   timeout=30, message="an answer from a worker forked after the apply")
        born_after = {(pid, text) for t, pid, text in load.answers if t > applied_at and pid not in applied}
        assert {text for _, text in born_after} <= {"v2", "late-v2"}, born_after
        code, data = s.cli("rollback", "--pidfile", s.pidfile, "--tree")
        assert code == 0, _outcomes(data)
        s.sample("v1")
        s.sample("late-v1", "/late")
    assert load.failures == [], load.failures[:5]
    assert len(restarted) >= 2, f"only {len(restarted)} worker restarts: the test did not exercise forks"
    assert load.bodies <= {"v1", "v2", "late-v1", "late-v2"}
    assert "WORKER TIMEOUT" not in s.target.output()
    print(f"max-requests restarts during the loop: {len(restarted)}; requests answered: {load.ok}")


@pytest.mark.parametrize("how", ["module", "script"])
def test_main_module_is_patched(start_target, runtime_env, how):
    """`python -m pf_app.main` (bundle names pf_app.main) and `python pf_app/main.py` (bundle names __main__)."""
    program = ["-m", "pf_app.main"] if how == "module" else [str(TARGETS / "pf_app" / "main.py")]
    bundle = str(BUNDLES / "pf-main-v2") if how == "module" else SCRIPT_V2
    t = start_target([sys.executable, "-m", "dynupdate", "run", *program], cwd=str(TARGETS),
                     env=dict(runtime_env, PYTHONPATH=str(TARGETS)))
    port = int(t.ready_value())

    def get() -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    assert get() == "main-v1"
    code, data = dynupdate_json("apply", "--pid", str(t.pid), str(bundle), env=runtime_env)
    assert code == 0, data
    assert data["updated"]["modules"] == ["__main__"] and data["updated"]["functions"] >= 1
    assert data["updated"].get("new_modules") == []
    assert get() == "main-v2"
    code, data = dynupdate_json("rollback", "--pid", str(t.pid), env=runtime_env)
    assert code == 0, data
    assert get() == "main-v1"



def _slow_request(s: Service) -> tuple:
    """Start a /slow request in the background; returns (thread, result list)."""
    result: List[str] = []
    if os.path.exists(s.slow_mark):
        os.unlink(s.slow_mark)
    thread = threading.Thread(target=lambda: result.append(s.get("/slow", timeout=30)), daemon=True)
    thread.start()
    wait_until(lambda: os.path.exists(s.slow_mark), timeout=20, message="a worker inside slow()")
    return thread, result


def test_no_safe_point_in_one_worker_rolls_back_the_tree_or_keeps_going(sync_plain):
    """Exit 4 and everything rolled back; with --keep-going the rest is updated, status shows
    the version skew loudly, and re-running the same command converges."""
    s = sync_plain
    with Load(s, paths=("/",), clients=1) as load:
        thread, result = _slow_request(s)
        code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", "--timeout", "0.5", V2)
        assert code == 4, _outcomes(data)
        assert s.master in data["rolled_back"]
        assert [r for r in data["pids"] if r["outcome"] == "failed"][0]["error"]["type"] == "SafePointTimeout"
        assert set(_tree_versions(s).values()) == {"base"}
        thread.join(30)
        assert result and result[0].startswith("slow-v1")

        thread, result = _slow_request(s)
        code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", "--timeout", "0.5", "--keep-going", V2)
        assert code == 4 and data["rolled_back"] == [], _outcomes(data)
        busy = [r["pid"] for r in data["pids"] if r["outcome"] == "failed"]
        assert len(busy) == 1 and data["skew"]
        proc = dynupdate("status", "--pidfile", s.pidfile, "--tree", env=s.env)
        assert proc.returncode == 0 and "VERSION SKEW" in proc.stderr, proc.stderr
        thread.join(30)
        code, data = s.cli("apply", "--pidfile", s.pidfile, "--tree", V2)  # converges once the worker is free
        assert code == 0 and not data["skew"], _outcomes(data)
        assert _by_pid(data)[busy[0]]["outcome"] == "done"
        assert {r["outcome"] for r in data["pids"] if r["pid"] != busy[0]} == {"already"}
        code, data = s.cli("rollback", "--pidfile", s.pidfile, "--tree", "--to", "base")
        assert code == 0, _outcomes(data)
    assert load.failures == []


def test_rehearsal_failing_in_a_worker_changes_and_rolls_back_nothing(sync_plain):
    """`apply --tree --rehearse-only`: the master passes (it never imported pf_app.wsgi), the workers'
    rehearsals fail. Nothing changed anywhere, so nothing is rolled back, and the JSON says why."""
    s = sync_plain
    failing = _derived("pf-v2", "pf-fails-v2", "2f", {"pf_app.wsgi": "wsgi.py", "pf_app.late": "late.py"}, """

def __dynupdate_transfer__(old):
    raise RuntimeError("this worker's state cannot be migrated")
""")
    proc = dynupdate("apply", "--pidfile", s.pidfile, "--tree", "--rehearse-only", failing, "--json", env=s.env,
                     timeout=180)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and not data["ok"], data
    assert data["rolled_back"] == [] and "cannot be migrated" in (data["error"] or ""), data
    assert "rolling back" not in proc.stderr, proc.stderr
    assert set(_tree_versions(s).values()) == {"base"}
    s.all_answer("v1")


def test_unreachable_master_exits_3(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    proc = dynupdate("apply", "--pid", str(gone.pid), "--tree", V2)
    assert proc.returncode == 3, proc.stderr
    pidfile = tmp_path / "pid"
    pidfile.write_text("not-a-pid\n")
    proc = dynupdate("status", "--pidfile", str(pidfile), "--tree")
    assert proc.returncode == 2 and "does not hold" in " ".join(proc.stderr.split())
