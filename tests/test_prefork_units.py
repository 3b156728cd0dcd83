"""Pure logic of process-tree rollouts and `__main__` resolution (the real-process tests are
test_prefork_gunicorn.py and test_prefork_forking.py; these pin the decisions in between)."""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, List, Optional

import pytest

from dynupdate import errors, tree
from dynupdate_agent import importer


class FakeClient:
    def __init__(self, pid: int, log: List[tuple]) -> None:
        self.pid, self.log = pid, log

    def __enter__(self) -> "FakeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def hello(self) -> Dict[str, Any]:
        return {"started_at": None}


def _rollout(monkeypatch, workers: List[int], fail: Optional[int] = None, check: Optional[str] = None,
             canary: int = 0, keep_going: bool = False, versions: Optional[Dict[int, str]] = None):
    """A Rollout over master 1 and `workers`, recording every step and rollback."""
    log: List[tuple] = []
    versions = versions if versions is not None else {}
    monkeypatch.setattr(tree, "descendants", lambda master: list(workers))
    monkeypatch.setattr(tree, "_alive", lambda pid: True)

    def step(client: FakeClient, progress: Any) -> Dict[str, Any]:
        log.append(("apply", client.pid))
        if client.pid == fail:
            reply = {"ok": False, "pid": client.pid, "version": "base", "previous_version": "base"}
            raise errors.RemoteError("TransferError: boom", remote={"type": "TransferError", "message": "boom"},
                                     result=reply)
        before = versions.get(client.pid, "base")
        if before == "2":
            return {"ok": True, "pid": client.pid, "version": "2", "previous_version": "2", "already": True}
        versions[client.pid] = "2"
        return {"ok": True, "pid": client.pid, "version": "2", "previous_version": before}

    def rollback_step(to: Optional[str], timeout: float):
        def undo(client: FakeClient, progress: Any) -> Dict[str, Any]:
            log.append(("rollback", client.pid, to))
            already = versions.get(client.pid, "base") == to
            versions[client.pid] = to or "base"
            return {"ok": True, "version": to, "already": already}
        return undo

    monkeypatch.setattr(tree, "rollback_step", rollback_step)
    options = tree.RolloutOptions(canary=canary, check=check, keep_going=keep_going)
    rollout = tree.Rollout(1, "apply", step, options, connect=lambda pid: FakeClient(pid, log), timeout=1.0,
                           notify=lambda message: None)
    return rollout, log, versions


def test_master_first_then_workers(monkeypatch):
    rollout, log, _ = _rollout(monkeypatch, [11, 12, 13])
    result = rollout.run()
    assert result["ok"] and rollout.exit_code == 0
    assert log == [("apply", 1), ("apply", 11), ("apply", 12), ("apply", 13)]
    assert [r["role"] for r in result["pids"]] == ["master", "worker", "worker", "worker"]


def test_failure_rolls_back_this_run_master_first_including_workers_born_updated(monkeypatch):
    # worker 12 was forked from the already updated master: it is "already" at 2, but this run put it there
    rollout, log, versions = _rollout(monkeypatch, [11, 12, 13], fail=13, versions={12: "2"})
    result = rollout.run()
    assert rollout.exit_code == 1 and not result["ok"]
    undo = [entry for entry in log if entry[0] == "rollback"]
    assert undo[0] == ("rollback", 1, "base")
    assert {e[1] for e in undo} == {1, 11, 12}
    assert sorted(result["rolled_back"]) == [1, 11, 12]
    assert versions == {1: "base", 11: "base", 12: "base"}


def test_rerun_after_partial_failure_converges_without_touching_done_pids(monkeypatch):
    rollout, log, _ = _rollout(monkeypatch, [11, 12], versions={1: "2", 11: "2"})
    result = rollout.run()
    assert result["ok"]
    assert {r["pid"]: r["outcome"] for r in result["pids"]} == {1: "already", 11: "already", 12: "done"}
    assert not any(entry[0] == "rollback" for entry in log)


def test_failed_canary_check_stops_before_the_rest(monkeypatch):
    rollout, log, _ = _rollout(monkeypatch, [11, 12, 13], canary=1, check="exit 1")
    result = rollout.run()
    assert [e for e in log if e[0] == "apply"] == [("apply", 1), ("apply", 11)]
    assert sorted(result["rolled_back"]) == [1, 11] and "exited 1" in result["error"]


def test_keep_going_reports_without_rolling_back(monkeypatch):
    rollout, log, _ = _rollout(monkeypatch, [11, 12], fail=11, keep_going=True)
    result = rollout.run()
    assert rollout.exit_code == 1 and result["rolled_back"] == [] and result["skew"]
    assert ("apply", 12) in log


def test_pid_sources(tmp_path):
    pidfile = tmp_path / "app.pid"
    pidfile.write_text("4242\n")
    assert tree.resolve_pid(None, str(pidfile)) == 4242
    assert tree.resolve_pid(7, None) == 7
    for pid, path in ((None, None), (7, str(pidfile)), (None, str(tmp_path / "missing"))):
        with pytest.raises(errors.UsageError):
            tree.resolve_pid(pid, path)


def test_main_resolution(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="pkg.app")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.delitem(sys.modules, "pkg.app", raising=False)
    assert importer.live_module("pkg.app") == (main, "pkg.app")
    assert importer.live_module("__main__") == (main, importer.MAIN_RUN_AS)
    assert importer.live_module("pkg.other") == (None, "pkg.other")
    main.__spec__ = None  # python app.py: only an explicit "__main__" reaches it
    assert importer.live_module("pkg.app") == (None, "pkg.app")


def test_already_means_the_bundle_is_in_effect_now():
    v2 = {"name": "pf-v2", "version": "2", "applied_at": 1.0}
    assert tree._runs({"version": "2", "history": [{"name": "base", "version": "base"}, v2]}, "pf-v2", "2")
    rolled_back = dict(v2, rolled_back_at=2.0)
    assert not tree._runs({"version": "base", "history": [{"name": "base", "version": "base"}, rolled_back]},
                          "pf-v2", "2")
    assert not tree._runs({"version": "2", "history": [v2]}, "other", "2")


def test_only_the_real_main_module_is_adopted_as_main(monkeypatch):
    alias = types.ModuleType("real.name")  # registered under another key: not __main__, no renaming
    monkeypatch.setitem(sys.modules, "alias.key", alias)
    assert not importer.is_main(alias) and not importer.is_main(None)
    assert importer.is_main(sys.modules["__main__"])


def test_fork_hooks_let_concurrent_forks_pass_and_bound_the_wait(monkeypatch):
    """The fork hooks' bookkeeping, driven from threads as concurrent forks would (no real fork)."""
    import threading
    import time

    from dynupdate_agent import forking

    monkeypatch.setattr(forking, "_state", forking._State())
    monkeypatch.setattr(forking, "FORK_WAIT", 0.2)
    inside = threading.Barrier(2, timeout=5)

    def fork_in_thread() -> None:
        forking._before_fork()
        inside.wait()  # both "forks" are between their hooks at once: neither waited for the other
        forking._after_fork_in_parent()

    threads = [threading.Thread(target=fork_in_thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert forking._state.forks == 0
    forking.enter_critical(tx=None)  # no fork in progress: at once
    try:
        started = time.monotonic()
        waiter = threading.Thread(target=lambda: (forking._before_fork(), forking._after_fork_in_parent()))
        waiter.start()
        waiter.join(5)
        assert 0.15 <= time.monotonic() - started < 2.0  # waited FORK_WAIT for the critical section, no more
    finally:
        forking.leave()
    assert not forking._state.critical and forking._state.forks == 0
