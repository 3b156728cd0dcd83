"""Every CPython a target may run (issue #15 item 9): run, attach, apply, rollback - checked from outside.

For each pyenv interpreter 3.9-3.13 found on the machine (skipped with the
reason when missing) two targets are shared by the tests of that
interpreter: one started with `dynupdate run -- PYTHON app.py`, one started
plainly and attached with gdb. The app imports nothing of dynupdate, so the
injected agent must load on its own; in interpreters without msgpack (here
pyenv 3.9, 3.10, 3.12, 3.13) it runs on the CLI's copy loaded under a private
name (agent/_msgpack.py) with msgpack's pure-Python codec. Older interpreters (3.6-3.8, and 2.7)
must be refused with "unsupported Python X.Y" (exit 3) before any injection.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import urllib.request

import pytest
from conftest import TARGETS, Target, dynupdate, dynupdate_json

APP = TARGETS / "matrix_app" / "app.py"
PYENV = os.path.expanduser("~/.pyenv/versions")
SUPPORTED = ["3.9", "3.10", "3.11", "3.12", "3.13"]
OLD = ["2.7", "3.6", "3.7", "3.8"]


def interpreter(minor: str):
    found = sorted(glob.glob(os.path.join(PYENV, f"{minor}.*", "bin", f"python{minor}")))
    return found[-1] if found else None


def bundle(tmp: str, version: str, greeting: str) -> str:
    folder = os.path.join(tmp, f"mx-{version}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "mx_greet.py"), "w") as fh:
        fh.write((TARGETS / "matrix_app" / "mx_greet.py").read_text().replace('"hello v1"', repr(greeting)))
    with open(os.path.join(folder, "patch.toml"), "w") as fh:
        fh.write(f'name = "mx"\nversion = "{version}"\n\n[modules]\n"mx_greet" = "mx_greet.py"\n')
    return folder


def get(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("mx"))
    return bundle(tmp, "2", "hello v2")


@pytest.fixture(scope="module", params=SUPPORTED)
def targets(request):
    """(python, {"run": (Target, port), "attach": (Target, port)}) for one interpreter, shared by its tests."""
    python = interpreter(request.param)
    if python is None:
        pytest.skip(f"CPython {request.param} is not installed under {PYENV} (pyenv install {request.param})")
    started = []
    try:
        run = Target([sys.executable, "-m", "dynupdate", "run", "--", python, str(APP)],
                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        started.append(run)
        plain = Target([python, str(APP)], env=dict(os.environ, PYTHONUNBUFFERED="1"))
        started.append(plain)
        out = {"run": (run, int(run.ready_value("READY", 60))),
               "attach": (plain, int(plain.ready_value("READY", 60)))}
        yield python, out
    finally:
        for target in started:
            target.stop()


@pytest.mark.parametrize("how", ["run", "attach"])
def test_apply_and_rollback(targets, bundles, how):
    python, by_how = targets
    target, port = by_how[how]
    minor = "%s.%s" % tuple(os.path.basename(os.path.dirname(os.path.dirname(python))).split(".")[:2])
    before = get(port)
    assert before["python"] == minor and before["greet"] == "hello v1"
    if how == "attach":
        if shutil.which("gdb") is None:
            pytest.skip("gdb not installed")
        code, data = dynupdate_json("attach", "--pid", str(target.pid), timeout=120)
        assert code == 0 and data.get("injected") is True, data
    code, data = dynupdate_json("apply", "--pid", str(target.pid), bundles, timeout=120)
    assert code == 0, data
    after = get(port)
    assert after["greet"] == "hello v2" and after["hits"] == before["hits"] + 1
    code, data = dynupdate_json("status", "--pid", str(target.pid), timeout=60)
    assert code == 0 and data["version"] == "2", data
    code, data = dynupdate_json("rollback", "--pid", str(target.pid), timeout=120)
    assert code == 0, data
    back = get(port)
    assert back["greet"] == "hello v1" and back["hits"] == after["hits"] + 1
    assert target.alive()


@pytest.mark.parametrize("minor", OLD)
def test_old_python_refused_before_injection(minor, bundles):
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"CPython {minor} is not installed under {PYENV}")
    sleeper = "import sys, time\nsys.stdout.write('READY 0\\n')\nsys.stdout.flush()\ntime.sleep(600)\n"
    target = Target([python, "-c", sleeper], env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        target.ready_value("READY", 60)
        for command in (["attach"], ["status"], ["apply", bundles]):
            proc = dynupdate(*command, "--pid", str(target.pid), timeout=60)
            assert proc.returncode == 3, (command, proc.stdout, proc.stderr)
            assert f"unsupported Python {minor}" in proc.stderr, proc.stderr
        with open(f"/proc/{target.pid}/status") as fh:
            assert "TracerPid:\t0" in fh.read()
        assert not os.path.exists(f"/tmp/dynupdate-{os.getuid()}/{target.pid}.sock")
        assert target.alive()
    finally:
        target.stop()


@pytest.mark.parametrize("minor", ["3.6", "3.8"])
def test_old_python_under_run_says_unsupported_not_syntaxerror(minor, tmp_path):
    """`dynupdate run` on an old interpreter: the bootstrap logs "unsupported Python X.Y" (no SyntaxError
    from the agent's sources) and the program itself still runs."""
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"CPython {minor} is not installed under {PYENV}")
    app = tmp_path / "old_app.py"
    app.write_text("import sys, time\nsys.stdout.write('READY 0\\n')\nsys.stdout.flush()\ntime.sleep(600)\n")
    target = Target([sys.executable, "-m", "dynupdate", "run", "--", python, str(app)],
                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        target.ready_value("READY", 60)
        assert f"unsupported Python {minor}" in target.output()
        assert "SyntaxError" not in target.output()
    finally:
        target.stop()
