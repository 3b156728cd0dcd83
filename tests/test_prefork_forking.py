"""Fork safety during an update, against a real process that forks on command.

A child forked during the safe-point wait runs the complete old version; one
forked during the swap/transfer waits for it and runs the complete new one;
one forked after that wait gave up (FORK_WAIT) undoes the update in itself.
Every child answers at once (no call held by a mediator it inherited) and is
updatable (its update lock is free, it has its own agent).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, TARGETS, dynupdate_json, wait_until

BUNDLE = str(ROOT / "tests" / "bundles" / "pf-fork-v2")


@pytest.fixture
def forker(start_target, runtime_env, tmp_path):
    """start(**env) -> (target, send): pf_forker.py driven through a FIFO."""
    made = []

    def start(**env):
        fifo = str(tmp_path / f"cmd{len(made)}")
        os.mkfifo(fifo)
        t = start_target([sys.executable, str(TARGETS / "pf_forker.py"), fifo],
                         env=dict(runtime_env, PYTHONPATH=str(TARGETS), **env))
        writer = open(fifo, "w")
        made.append(writer)

        def send(command: str) -> None:
            writer.write(command + "\n")
            writer.flush()
        return t, send

    yield start
    for writer in made:
        writer.close()


def _child(t) -> tuple:
    line = t.wait_for("CHILD ", timeout=20)
    _, pid, greet, version = line.split()
    return int(pid), greet, version


def _apply_in_background(pid: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dynupdate", "apply", "--pid", str(pid), BUNDLE,
                             "--timeout", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **env))


def _updatable(child: int, env: dict, expected_before: str) -> None:
    code, data = dynupdate_json("status", "--pid", str(child), "--no-inject", env=env)
    assert code == 0 and data["version"] == expected_before, data
    if expected_before == "base":
        code, data = dynupdate_json("apply", "--pid", str(child), BUNDLE, env=env)
    else:
        code, data = dynupdate_json("rollback", "--pid", str(child), env=env)
    assert code == 0 and data["ok"], data  # not "busy": the child's update lock is its own


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def test_fork_during_safe_point_wait_gives_the_old_version(forker, runtime_env):
    t, send = forker()
    send("hold")
    t.wait_for("HOLDING")
    apply = _apply_in_background(t.pid, runtime_env)
    try:
        wait_until(lambda: dynupdate_json("status", "--pid", str(t.pid), "--no-inject",
                                          env=runtime_env)[1]["generation"] == 1,
                   timeout=20, interval=0.1, message="the update to wait for its safe point")
        send("fork")
        child, greet, version = _child(t)
        try:
            assert (greet, version) == ("v1", "base")  # no held call, no trampoline left
            _updatable(child, runtime_env, "base")
        finally:
            _kill(child)
        send("release")
        out, err = apply.communicate(timeout=60)
        assert apply.returncode == 0, err
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait()


@pytest.mark.parametrize("sleep,expected", [(1.0, ("v2", "2")), (5.0, ("v1", "base"))],
                         ids=["waits-for-the-swap", "gives-up-and-undoes"])
def test_fork_during_the_swap(forker, runtime_env, tmp_path, sleep, expected):
    mark = tmp_path / "critical"
    t, send = forker(PF_MARK=str(mark), PF_SLEEP=str(sleep))
    apply = _apply_in_background(t.pid, runtime_env)
    try:
        wait_until(mark.exists, timeout=20, message="the critical section to begin")
        send("fork")
        child, greet, version = _child(t)
        try:
            assert (greet, version) == expected
            waited = float(t.wait_for("FORKED").split()[2])
            assert waited <= 2.0 + 1.0  # FORK_WAIT bounds the fork's wait (plus scheduling slack)
            _updatable(child, runtime_env, expected[1])
        finally:
            _kill(child)
        out, err = apply.communicate(timeout=60)
        assert apply.returncode == 0, err  # the parent itself completes the update
        code, data = dynupdate_json("status", "--pid", str(t.pid), "--no-inject", env=runtime_env)
        assert data["version"] == "2"
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait()
