"""`dynupdate status` and `dynupdate ps` against real targets, table and JSON."""
from __future__ import annotations

import json
import os
import signal
import sys

from conftest import TARGETS, dynupdate, dynupdate_json, wait_until

DU = [sys.executable, "-m", "dynupdate"]


def _status(pid: int, env: dict) -> dict:
    code, data = dynupdate_json("status", "--pid", str(pid), env=env)
    assert code == 0, data
    return data


def _start(start_target, env):
    t = start_target([sys.executable, str(TARGETS / "fnd_start.py")], env=env)
    return t, json.loads(t.ready_value())


def _instances(data: dict) -> dict:
    return {f["class"]: f["instances"] for f in data["factories"]}


def test_status_json_shape_is_exactly_the_published_one(start_target, runtime_env):
    t, _ = _start(start_target, runtime_env)
    data = _status(t.pid, runtime_env)
    assert set(data) == {"pid", "version", "history", "generation", "update", "threads", "tasks", "factories",
                         "probes", "agent"}
    assert data["update"] == {"running": None, "stuck": []}
    assert data["pid"] == t.pid
    assert data["version"] == "base"
    assert isinstance(data["generation"], int)
    assert data["history"] and all(set(h) == {"name", "version", "applied_at", "rolled_back_at"}
                               for h in data["history"])
    assert data["history"][0]["version"] == "base"
    assert data["threads"] and all(set(th) == {"id", "name", "generation", "in_activity"} for th in data["threads"])
    assert data["factories"] and all(set(f) == {"class", "instances", "pending"} for f in data["factories"])
    assert set(data["agent"]) == {"version", "python", "started_at", "socket"}
    assert data["agent"]["socket"] == os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}",
                                                   f"{t.pid}.sock")
    assert data["agent"]["python"] == sys.version.split()[0]
    assert isinstance(data["agent"]["started_at"], float)


def test_status_factories_track_live_instances_weakly(start_target, runtime_env):
    t, _ = _start(start_target, runtime_env)
    assert _instances(_status(t.pid, runtime_env)) == {"__main__.Item": 5, "__main__.Other": 1}
    os.kill(t.pid, signal.SIGUSR1)  # del 2 of them, gc.collect()
    t.wait_for("DROPPED 3")
    data = _status(t.pid, runtime_env)
    assert _instances(data) == {"__main__.Item": 3, "__main__.Other": 1}, "collected instances must not be counted"
    assert all(f["pending"] == 0 for f in data["factories"])
    os.kill(t.pid, signal.SIGUSR2)  # 4 more
    t.wait_for("CREATED 7")
    assert _instances(_status(t.pid, runtime_env))["__main__.Item"] == 7


def test_status_threads_generation_and_activity(start_target, runtime_env):
    t, _ = _start(start_target, runtime_env)
    data = _status(t.pid, runtime_env)
    assert data["generation"] == 1  # the target advanced it once
    threads = {th["name"]: th for th in data["threads"]}
    assert not any(name.startswith("dynupdate-agent") for name in threads), "the agent's own threads are hidden"
    assert threads["early-thread"]["generation"] == 0  # predates the agent
    assert threads["worker-gen0"]["generation"] == 0
    assert threads["worker-gen1"]["generation"] == 1, "a thread started after an advance belongs to the new generation"
    assert threads["in-activity"]["in_activity"] is True
    assert threads["in-decorated-activity"]["in_activity"] is True
    assert threads["worker-gen0"]["in_activity"] is False
    assert threads["MainThread"]["in_activity"] is False
    assert all(isinstance(th["id"], int) for th in data["threads"])


def test_status_table(start_target, runtime_env):
    t, _ = _start(start_target, runtime_env)
    proc = dynupdate("status", "--pid", str(t.pid), env={**runtime_env, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"pid {t.pid}" in out and "version base" in out and "generation 1" in out
    for title in ("Version history", "Threads", "Factories"):
        assert title in out
    assert "__main__.Item" in out and "worker-gen1" in out and "in-activity" in out
    assert f"{t.pid}.sock" in out


def test_ps_lists_agent_and_plain_processes(start_target, runtime_env):
    with_agent, _ = _start(start_target, runtime_env)
    plain = start_target([sys.executable, str(TARGETS / "fnd_plain.py")], env=runtime_env)
    code, rows = dynupdate_json("ps", env=runtime_env)
    assert code == 0
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[with_agent.pid]["agent"] is True
    assert by_pid[with_agent.pid]["agent_version"] == "0.1.0"
    assert "fnd_start.py" in by_pid[with_agent.pid]["cmdline"]
    assert by_pid[plain.pid]["agent"] is False
    assert "fnd_plain.py" in by_pid[plain.pid]["cmdline"]
    assert os.getpid() in by_pid, "the test runner itself is a Python process"
    table = dynupdate("ps", env={**runtime_env, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    agent_line = next(line for line in lines if f" {with_agent.pid} " in line)
    plain_line = next(line for line in lines if f" {plain.pid} " in line)
    assert "yes (0.1.0)" in agent_line
    assert " no " in plain_line
