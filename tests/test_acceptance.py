"""Acceptance: the published contract (CLI, bundle format, exit codes, JSON) against
real servers the way a user runs them, checked from outside over HTTP.

One module-scoped threaded HTTP server (``dynupdate run app.py``) and, when the
packages are installed, one gunicorn tree (``dynupdate run -- python -m gunicorn``).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

PY = sys.executable
CLI = [PY, "-m", "dynupdate"]

APP = textwrap.dedent('''
    import http.server, socketserver, sys, time
    COUNT = {"n": 0}
    def answer():
        return "v1"
    def slow(s):
        time.sleep(s)
        return "slow"
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/slow/"):
                body = slow(float(self.path.split("/")[2]))
            else:
                COUNT["n"] += 1
                body = answer()
            b = body.encode()
            self.send_response(200); self.send_header("Content-Length", str(len(b)))
            self.end_headers(); self.wfile.write(b)
        def log_message(self, *a): pass
    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
    if __name__ == "__main__":
        s = S(("127.0.0.1", 0), H)
        print("PORT", s.server_address[1], flush=True)
        s.serve_forever()
''')

WSGI_LOGIC = 'def greet():\n    return "g1"\n'
WSGI_APP = textwrap.dedent('''
    from qaapp import logic
    def app(environ, start_response):
        b = logic.greet().encode()
        start_response("200 OK", [("Content-Length", str(len(b)))])
        return [b]
''')


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port: int, path: str = "/", timeout: float = 10) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout).read().decode()


def cli(*args, timeout: float = 60, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def bundle(folder: Path, module: str, source: str, name: str, version: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mod.py").write_text(source)
    (folder / "patch.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\n{extra}[modules]\n"{module}" = "mod.py"\n')
    return folder


class Load:
    """A client thread sending requests, counting failures and the slowest answer."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.port, self.path = port, path
        self.ok = self.fail = 0
        self.max = 0.0
        self.bodies = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.time() + 60
        while not self._stop.is_set() and time.time() < deadline:
            t = time.time()
            try:
                self.bodies.add(get(self.port, self.path))
                self.ok += 1
                self.max = max(self.max, time.time() - t)
            except Exception:
                self.fail += 1
            time.sleep(0.01)

    def __enter__(self):
        self._t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(15)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa-plain")
    (d / "app.py").write_text(APP)
    proc = subprocess.Popen(CLI + ["run", "app.py"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    port = None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PORT"):
            port = int(line.split()[1])
            break
        if not line and proc.poll() is not None:
            break
    if port is None:
        proc.kill()
        pytest.fail("the plain server did not start")
    yield {"pid": proc.pid, "port": port, "dir": d}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_apply_under_load_then_rollback(plain, tmp_path):
    pid, port = plain["pid"], plain["port"]
    assert get(port) == "v1"
    b = bundle(tmp_path / "v2", "__main__", APP.replace('return "v1"', 'return "v2"'), "qa-v2", "2")
    with Load(port) as load:
        r = cli("apply", "--pid", pid, b, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("ok", "pid", "version", "previous_version", "phases", "updated", "warnings", "error"):
        assert key in res
    assert res["ok"] is True and res["version"] == "2" and res["previous_version"] == "base"
    assert load.fail == 0 and load.max < 5
    assert get(port) == "v2"
    st = json.loads(cli("status", "--pid", pid, "--json").stdout)
    assert st["version"] == "2" and [h["version"] for h in st["history"]][-1] == "2"
    r = cli("rollback", "--pid", pid, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "base"
    assert get(port) == "v1"
    assert cli("rollback", "--pid", pid).returncode == 1          # nothing to roll back
    assert cli("rollback", "--pid", pid, "--to", "base").returncode == 0   # already there: no-op


def test_dry_run_changes_nothing(plain, tmp_path):
    pid, port = plain["pid"], plain["port"]
    b = bundle(tmp_path / "dry", "__main__", APP.replace('return "v1"', 'return "dry"'), "qa-dry", "dry")
    r = cli("apply", "--pid", pid, b, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert get(port) == "v1"
    assert json.loads(cli("status", "--pid", pid, "--json").stdout)["version"] == "base"


def test_no_safe_point_exits_4_and_target_unchanged(plain, tmp_path):
    pid, port = plain["pid"], plain["port"]
    b = bundle(tmp_path / "v3", "__main__", APP.replace('return "slow"', 'return "slow3"'), "qa-v3", "3")
    slow = threading.Thread(target=lambda: get(port, "/slow/5", timeout=20), daemon=True)
    slow.start()
    time.sleep(0.5)
    r = cli("apply", "--pid", pid, b, "--timeout", "1", "--json")
    slow.join(20)
    assert r.returncode == 4, (r.stdout, r.stderr)
    res = json.loads(r.stdout)
    assert res["ok"] is False and res["version"] == "base" and res["error"]["type"]
    assert get(port) == "v1"


def test_transfer_hook_failure_is_atomic(plain, tmp_path):
    pid, port = plain["pid"], plain["port"]
    src = APP.replace('return "v1"', 'return "bad"') + '\ndef __dynupdate_transfer__(old):\n    raise ValueError("boom")\n'
    b = bundle(tmp_path / "bad", "__main__", src, "qa-bad", "bad")
    r = cli("apply", "--pid", pid, b, "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    res = json.loads(r.stdout)
    assert res["ok"] is False and res["version"] == "base" and "boom" in res["error"]["message"]
    assert get(port) == "v1"


@pytest.mark.parametrize("breakage", ["syntax", "missing", "symlink", "toml", "unknown_key", "stdlib"])
def test_invalid_bundles_exit_2_before_contacting_target(plain, tmp_path, breakage):
    b = bundle(tmp_path / breakage, "__main__", APP, "qa-inv", "inv")
    if breakage == "syntax":
        (b / "mod.py").write_text(APP + "\ndef broken(:\n")
    elif breakage == "missing":
        (b / "mod.py").unlink()
    elif breakage == "symlink":
        (b / "mod.py").unlink()
        os.symlink(plain["dir"] / "app.py", b / "mod.py")
    elif breakage == "toml":
        (b / "patch.toml").write_text('name = "x\n')
    elif breakage == "unknown_key":
        (b / "patch.toml").write_text('bogus = 1\n' + (b / "patch.toml").read_text())
    elif breakage == "stdlib":
        (b / "patch.toml").write_text((b / "patch.toml").read_text().replace('"__main__"', '"json"'))
    assert cli("check", b).returncode == 2
    r = cli("apply", "--pid", plain["pid"], b)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert get(plain["port"]) == "v1"


def test_unreachable_targets_exit_3(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert cli("status", "--pid", sleeper.pid).returncode == 3        # not a Python process
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cli("status", "--pid", 2 ** 22 + 7).returncode == 3            # no such process


@pytest.fixture(scope="module")
def gunicorn_tree(tmp_path_factory):
    pytest.importorskip("gunicorn", reason="gunicorn is not installed")
    d = tmp_path_factory.mktemp("qa-gunicorn")
    (d / "qaapp").mkdir()
    (d / "qaapp" / "__init__.py").write_text("")
    (d / "qaapp" / "logic.py").write_text(WSGI_LOGIC)
    (d / "qaapp" / "wsgi.py").write_text(WSGI_APP)
    port, pidfile = _port(), d / "g.pid"
    proc = subprocess.Popen(CLI + ["run", "--", PY, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
                                   "-p", str(pidfile), "qaapp.wsgi:app"],
                            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if get(port, timeout=2) == "g1" and pidfile.exists():
                break
        except Exception:
            pass
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("gunicorn did not start")
    yield {"port": port, "pidfile": pidfile, "dir": d}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_gunicorn_tree_apply_failed_check_then_apply_and_rollback(gunicorn_tree, tmp_path):
    port, pidfile = gunicorn_tree["port"], gunicorn_tree["pidfile"]
    b = bundle(tmp_path / "g2", "qaapp.logic", WSGI_LOGIC.replace("g1", "g2"), "qa-g2", "2")
    # a failing --check rolls every changed process back
    r = cli("apply", "--pidfile", pidfile, "--tree", b, "--canary", "1", "--check", "false", "--json", timeout=120)
    assert r.returncode == 1, r.stderr
    res = json.loads(r.stdout)
    assert res["ok"] is False and res["rolled_back"]
    assert {get(port) for _ in range(6)} == {"g1"}
    # the real rollout under load
    with Load(port) as load:
        r = cli("apply", "--pidfile", pidfile, "--tree", b, "--canary", "1",
                "--check", f"{PY} -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/')\"",
                "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ok"] is True and all(p["version"] == "2" for p in res["pids"])
    assert load.fail == 0
    assert {get(port) for _ in range(6)} == {"g2"}
    st = json.loads(cli("status", "--pidfile", pidfile, "--tree", "--json").stdout)
    assert st["skew"] is False and st["versions"] == ["2"]
    r = cli("rollback", "--pidfile", pidfile, "--tree", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert {get(port) for _ in range(6)} == {"g1"}
