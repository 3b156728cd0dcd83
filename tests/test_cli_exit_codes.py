"""The CLI as a real subprocess: help, module imports, and the exit-code contract.

0 ok, 1 failed in target, 2 usage / invalid input (before contacting anything),
3 target unreachable (no such process, not Python, no agent, ...).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TARGETS, dynupdate, dynupdate_json

ROOT = Path(__file__).resolve().parent.parent


def test_python_m_dynupdate_help():
    proc = subprocess.run([sys.executable, "-m", "dynupdate", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "attach", "status", "ps", "check", "apply", "rollback"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout
    for command in ("run", "attach", "status", "ps", "check"):
        sub = dynupdate(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "Usage:" in sub.stdout


def test_console_script_and_version():
    proc = subprocess.run([str(Path(sys.executable).with_name("dynupdate")), "--version"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "0.1.0" in proc.stdout


def test_every_dynupdate_module_imports_in_a_fresh_interpreter():
    names = ["dynupdate"] + [f"dynupdate.{p.stem}" for p in sorted((ROOT / "dynupdate").glob("*.py"))
                             if p.stem not in ("__init__", "__main__")]
    code = ("import importlib, json, sys\nfailed = {}\n"
            "for n in json.loads(sys.argv[1]):\n"
            "    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        failed[n] = f'{type(e).__name__}: {e}'\n"
            "print(json.dumps(failed))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True, text=True, timeout=60,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}
    # the library API scripts use
    proc = subprocess.run([sys.executable, "-c", "from dynupdate import Client, connect, load_bundle, DynupdateError"],
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.returncode == 0, proc.stderr


def _free_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_status_of_missing_pid_is_3():
    pid = _free_pid()
    proc = dynupdate("status", "--pid", str(pid))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"no process with pid {pid}" in proc.stderr
    assert "hint" in proc.stderr
    code, data = dynupdate_json("status", "--pid", str(pid))
    assert code == 3 and data["ok"] is False and data["error"]["type"] == "NoSuchProcess"


def test_status_of_non_python_process_is_3(start_target):
    sleeper = start_target(["sleep", "100"], ready=None)
    proc = dynupdate("status", "--pid", str(sleeper.pid))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not a Python process" in proc.stderr
    assert "dynupdate ps" in proc.stderr, "the message says what to do"
    code, data = dynupdate_json("status", "--pid", str(sleeper.pid))
    assert code == 3 and data["error"]["type"] == "NotPython"
    assert sleeper.alive()


def test_status_without_agent_and_no_inject_is_3(start_target, runtime_env):
    plain = start_target([sys.executable, str(TARGETS / "fnd_plain.py")], env=runtime_env)
    proc = dynupdate("status", "--pid", str(plain.pid), "--no-inject", env=runtime_env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no dynupdate agent" in proc.stderr and "attach" in proc.stderr
    assert plain.alive()


def test_stale_socket_is_not_an_agent(start_target, runtime_env):
    """A socket file left behind by a killed process must read as 'no agent', not hang or crash."""
    import socket as socketlib

    plain = start_target([sys.executable, str(TARGETS / "fnd_plain.py")], env=runtime_env)
    folder = os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}")
    os.mkdir(folder, 0o700)
    stale = socketlib.socket(socketlib.AF_UNIX)
    stale.bind(os.path.join(folder, f"{plain.pid}.sock"))
    stale.close()  # bound, never listening: connect() is refused
    proc = dynupdate("status", "--pid", str(plain.pid), "--no-inject", env=runtime_env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    code, rows = dynupdate_json("ps", env=runtime_env)
    assert code == 0
    assert [r["agent"] for r in rows if r["pid"] == plain.pid] == [False]


@pytest.mark.parametrize("args", [
    ["status"],                           # --pid missing
    ["status", "--pid", "abc"],           # not a number
    ["frobnicate"],                       # no such command
    ["ps", "--bogus"],                    # unknown option
    ["run"],                              # nothing to run
    ["run", "/nonexistent/app.py"],       # no such file
    ["run", "-m"],                        # -m without a module
    ["run", "-c"],                        # -c without code
    ["run", "--", sys.executable, "-c"],  # the same through an interpreter
    ["status", "--pid", "-5"],            # not a pid
    ["status", "--pid", "0"],             # not a pid
    ["rollback", "--pid", "1", "--timeout", "nan"],   # not a duration
    ["rollback", "--pid", "1", "--timeout", "1e9"],   # beyond what the agent accepts
    ["check"],                            # bundle missing
])
def test_bad_usage_is_2(args):
    proc = dynupdate(*args)
    assert proc.returncode == 2, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr.strip(), "a usage error says what is wrong"
    assert "Traceback" not in proc.stderr


def _bundle(tmp_path, manifest=None, files=None) -> str:
    folder = tmp_path / "bundle"
    folder.mkdir()
    if manifest is not None:
        (folder / "patch.toml").write_text(manifest)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return str(folder)


GOOD_MANIFEST = 'name = "t"\nversion = "2"\n[modules]\n"shop.cart" = "cart.py"\n'


def test_check_valid_bundle_is_0(tmp_path):
    folder = _bundle(tmp_path, GOOD_MANIFEST, {"cart.py": "def total():\n    return 1\n"})
    proc = dynupdate("check", folder)
    assert proc.returncode == 0, proc.stderr
    code, data = dynupdate_json("check", folder)
    assert code == 0 and data["ok"] and data["name"] == "t" and data["version"] == "2"
    assert list(data["modules"]) == ["shop.cart"]


def test_check_without_manifest_is_2(tmp_path):
    folder = _bundle(tmp_path, None, {"cart.py": "x = 1\n"})
    proc = dynupdate("check", folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert os.path.join(folder, "patch.toml") in proc.stderr and "missing" in proc.stderr


def test_check_bad_toml_is_2_and_names_the_file(tmp_path):
    folder = _bundle(tmp_path, 'name = "t"\nversion = \n', {"cart.py": "x = 1\n"})
    proc = dynupdate("check", folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert os.path.join(folder, "patch.toml") in proc.stderr and "TOML" in proc.stderr
    code, data = dynupdate_json("check", folder)
    assert code == 2 and data["ok"] is False and data["error"]["type"] == "BundleError"


def test_check_syntax_error_is_2_with_file_and_line(tmp_path):
    folder = _bundle(tmp_path, GOOD_MANIFEST, {"cart.py": "def total():\n    return 1\n\ndef broken(:\n    pass\n"})
    proc = dynupdate("check", folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{os.path.join(folder, 'cart.py')}:4" in proc.stderr.replace("\n", "")


def test_check_missing_source_file_is_2(tmp_path):
    folder = _bundle(tmp_path, GOOD_MANIFEST, {})
    proc = dynupdate("check", folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cart.py" in proc.stderr and "missing" in proc.stderr


def test_check_manifest_without_required_keys_is_2(tmp_path):
    folder = _bundle(tmp_path, '[modules]\n"m" = "m.py"\n', {"m.py": "x = 1\n"})
    proc = dynupdate("check", folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "name" in proc.stderr
