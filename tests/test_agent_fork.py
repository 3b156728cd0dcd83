"""Fork safety: a forked child gets its own agent and socket; the parent's keeps working."""
from __future__ import annotations

import os
import signal
import stat
import sys

from conftest import TARGETS, dynupdate_json, wait_until


def _status(pid: int, env: dict) -> dict:
    code, data = dynupdate_json("status", "--pid", str(pid), "--no-inject", env=env)
    assert code == 0, data
    return data


def test_fork_child_gets_own_agent(start_target, runtime_env):
    t = start_target([sys.executable, str(TARGETS / "fnd_fork.py")], env=runtime_env)
    parent = int(t.wait_for("PARENT ").split()[1])
    child_line = t.wait_for("CHILD ")
    child = int(child_line.split()[1])
    assert parent == t.pid and child != parent
    assert "running=True" in child_line
    folder = os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}")
    parent_sock = os.path.join(folder, f"{parent}.sock")
    child_sock = os.path.join(folder, f"{child}.sock")
    assert stat.S_ISSOCK(os.stat(child_sock).st_mode)
    assert stat.S_IMODE(os.stat(child_sock).st_mode) == 0o600

    child_status = _status(child, runtime_env)
    assert child_status["pid"] == child
    assert child_status["agent"]["socket"] == child_sock
    assert [th["name"] for th in child_status["threads"]] == ["MainThread"]
    parent_status = _status(parent, runtime_env)
    assert parent_status["pid"] == parent
    assert parent_status["agent"]["socket"] == parent_sock
    assert parent_status["agent"]["started_at"] <= child_status["agent"]["started_at"]

    os.kill(child, signal.SIGTERM)  # the child exits through sys.exit: atexit removes its socket
    assert t.wait_for("CHILD_EXITED").split()[1] == "0"
    assert not os.path.exists(child_sock), "the child's socket must be removed when it exits"
    assert os.path.exists(parent_sock), "the child must not remove the parent's socket"
    assert _status(parent, runtime_env)["pid"] == parent
    code, _ = dynupdate_json("status", "--pid", str(child), "--no-inject", env=runtime_env)
    assert code == 3
