"""The ways the agent gets into a process, against real processes.

- `dynupdate run app.py args`, `dynupdate run -m pkg.mod args`,
  `dynupdate run -- /usr/bin/python3.11 -X dev -S (app.py | -m pkg.mod)`:
  the program sees its own argv / __main__ / sys.path[0], keeps the pid we
  started (exec), gets its signals and passes its exit code through, and the
  agent answers `status` from the start.
- `import dynupdate_agent; dynupdate_agent.start()` (idempotent).
- `dynupdate attach --pid` on a plain `python -S` program (if inject.py exists).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TARGETS, dynupdate, dynupdate_json, wait_until

STRIPPED = "/usr/bin/python3.11"
needs_stripped = pytest.mark.skipif(not os.access(STRIPPED, os.X_OK), reason=f"{STRIPPED} not installed")

DU = [sys.executable, "-m", "dynupdate"]


def _info(target) -> dict:
    return json.loads(target.wait_for("INFO ").split("INFO ", 1)[1])


def _socket_of(env: dict, pid: int) -> str:
    return os.path.join(env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}", f"{pid}.sock")


def _status(pid: int, env: dict) -> dict:
    code, data = dynupdate_json("status", "--pid", str(pid), "--no-inject", env=env)
    assert code == 0, data
    return data


def _stops_with(target, sig: int, code: int) -> None:
    os.kill(target.pid, sig)
    assert target.proc.wait(10) == code, target.output()


def test_run_script(start_target, runtime_env):
    script = str(TARGETS / "fnd_app.py")
    t = start_target([*DU, "run", script, "alpha", "--beta", "-x"], env=runtime_env, cwd="/")
    info = _info(t)
    assert info["argv"] == [script, "alpha", "--beta", "-x"]
    assert info["name"] == "__main__"
    assert info["path0"] == str(TARGETS)
    assert info["pid"] == t.pid, "dynupdate run must exec: the program keeps the pid we started"
    assert info["agent_loaded"], "the agent is listening before the program's code starts"
    assert not info["dynupdate_loaded"], "the CLI package must not leak into the program"
    assert str(Path(__file__).resolve().parent.parent / "agent") not in info["path"]
    data = _status(t.pid, runtime_env)
    assert data["pid"] == t.pid
    assert data["agent"]["socket"] == _socket_of(runtime_env, t.pid)
    _stops_with(t, signal.SIGUSR1, 7)


def test_run_script_relative_path_and_exit_code(runtime_env):
    proc = subprocess.run([*DU, "run", "fnd_app.py", "--exit", "5"], cwd=str(TARGETS), capture_output=True,
                          text=True, timeout=30, env={**os.environ, **runtime_env})
    assert proc.returncode == 5, proc.stderr
    info = json.loads(proc.stdout.split("INFO ", 1)[1].splitlines()[0])
    assert info["argv"] == ["fnd_app.py", "--exit", "5"]
    assert info["path0"] == str(TARGETS)
    assert proc.stderr == ""
    # the socket goes away with the interpreter
    assert not os.listdir(os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}"))


def test_run_module(start_target, runtime_env):
    t = start_target([*DU, "run", "-m", "fnd_pkg.svc", "one", "--two"], env=runtime_env, cwd=str(TARGETS))
    info = _info(t)
    assert info["argv"][0] == str(TARGETS / "fnd_pkg" / "svc.py")
    assert info["argv"][1:] == ["one", "--two"]
    assert info["name"] == "__main__"
    assert info["package"] == "fnd_pkg"
    assert info["helper"] == "helper-from-fnd_pkg"
    assert info["path0"] == str(TARGETS)
    assert info["pid"] == t.pid
    assert info["agent_loaded"]
    assert _status(t.pid, runtime_env)["pid"] == t.pid
    _stops_with(t, signal.SIGUSR1, 7)


@needs_stripped
def test_run_stripped_interpreter_script(start_target, runtime_env):
    """Debian's python3.11 has neither dynupdate nor msgpack; the agent must still come up."""
    check = subprocess.run([STRIPPED, "-S", "-c", "import msgpack"], capture_output=True)
    assert check.returncode != 0, "this test needs an interpreter without msgpack"
    script = str(TARGETS / "fnd_app.py")
    t = start_target([*DU, "run", "--", STRIPPED, "-X", "dev", "-S", script, "arg1"], env=runtime_env, cwd="/")
    info = _info(t)
    assert info["executable"] == STRIPPED
    assert info["flags_dev_mode"] and info["flags_no_site"], "interpreter options must reach the interpreter"
    assert info["argv"] == [script, "arg1"]
    assert info["name"] == "__main__"
    assert info["path0"] == str(TARGETS)
    assert info["pid"] == t.pid
    assert not info["msgpack_loaded"], "the agent's private msgpack must not appear as `msgpack` in sys.modules"
    assert not any(".pyenv" in p or "site-packages" in p for p in info["path"]), info["path"]
    data = _status(t.pid, runtime_env)
    assert data["pid"] == t.pid
    want = subprocess.run([STRIPPED, "-S", "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True).stdout.strip()
    assert data["agent"]["python"] == want
    _stops_with(t, signal.SIGTERM, 42)
    assert "GOT SIGTERM" in t.output()
    # -X dev shows every warning: the agent must not have caused any, nor printed anything
    noise = [line for line in t.lines if not line.startswith(("INFO ", "READY ", "GOT SIGTERM"))]
    assert noise == []


@needs_stripped
def test_run_stripped_interpreter_exit_code(runtime_env):
    proc = subprocess.run([*DU, "run", "--", STRIPPED, "-X", "dev", "-S", str(TARGETS / "fnd_app.py"), "--exit", "7"],
                          capture_output=True, text=True, timeout=30, env={**os.environ, **runtime_env})
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr == ""


@needs_stripped
def test_run_stripped_interpreter_module(start_target, runtime_env):
    t = start_target([*DU, "run", "--", STRIPPED, "-X", "dev", "-S", "-m", "fnd_pkg.svc", "--port", "8000"],
                     env=runtime_env, cwd=str(TARGETS))
    info = _info(t)
    assert info["argv"] == [str(TARGETS / "fnd_pkg" / "svc.py"), "--port", "8000"]
    assert info["name"] == "__main__" and info["package"] == "fnd_pkg" and info["path0"] == str(TARGETS)
    assert info["pid"] == t.pid
    assert _status(t.pid, runtime_env)["pid"] == t.pid
    _stops_with(t, signal.SIGUSR1, 7)


def test_start_in_program(start_target, runtime_env):
    t = start_target([sys.executable, str(TARGETS / "fnd_start.py")], env=runtime_env)
    ready = json.loads(t.ready_value())
    assert ready["path1"] == ready["path2"] == _socket_of(runtime_env, t.pid), "start() twice is a no-op"
    assert ready["running"] is True
    assert ready["version"] == "base"
    assert ready["handlers_unchanged"], "the agent must not install signal handlers"
    assert ready["agent_threads"] == ["dynupdate-agent"], "one agent thread, even after start() twice"
    data = _status(t.pid, runtime_env)
    assert data["pid"] == t.pid and data["version"] == "base"


def test_attach_plain_python(start_target, runtime_env):
    try:
        from dynupdate import inject
    except ImportError:
        inject = None
    if not callable(getattr(inject, "inject", None)):
        pytest.skip("dynupdate/inject.py (gdb injection) is not written yet; covered by tests/test_inject.py")
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed (attach needs it; see README: Troubleshooting)")
    t = start_target([STRIPPED if os.access(STRIPPED, os.X_OK) else sys.executable, "-S",
                      str(TARGETS / "fnd_plain.py")], env=runtime_env)
    proc = dynupdate("attach", "--pid", str(t.pid), env=runtime_env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = _status(t.pid, runtime_env)
    assert data["pid"] == t.pid
    again = dynupdate("attach", "--pid", str(t.pid), env=runtime_env, timeout=60)
    assert again.returncode == 0 and "already running" in again.stdout
    assert t.alive()


@needs_stripped
def test_run_through_interpreter_wrapper_script(tmp_path, runtime_env):
    """`dynupdate run -- python ...` where `python` is a shell shim (pyenv, asdf), not the ELF binary."""
    shim = tmp_path / "mypython"
    shim.write_text(f'#!/bin/sh\nexec {STRIPPED} "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, **runtime_env, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run([*DU, "run", "--", "mypython", "-S", "fnd_app.py", "--exit", "4"], cwd=str(TARGETS),
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    info = json.loads(proc.stdout.split("INFO ", 1)[1].splitlines()[0])
    assert info["executable"] == STRIPPED and info["agent_loaded"] and info["argv"] == ["fnd_app.py", "--exit", "4"]


@needs_stripped
@pytest.mark.parametrize("options", [["-I"], ["-S"], [], ["-X", "dev", "-s"]])
def test_run_gives_the_program_the_sys_path_the_interpreter_would(runtime_env, options):
    """sys.path as with the plain interpreter: e.g. with -I the script's folder is not on it."""
    script = str(TARGETS / "fnd_app.py")
    plain = subprocess.run([STRIPPED, *options, script, "--exit", "0"], capture_output=True, text=True, timeout=30)
    ours = subprocess.run([*DU, "run", "--", STRIPPED, *options, script, "--exit", "0"], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **runtime_env})
    assert ours.returncode == 0, ours.stderr

    def path_of(out):
        return json.loads(out.split("INFO ", 1)[1].splitlines()[0])["path"]

    assert path_of(ours.stdout) == path_of(plain.stdout)
