"""The socket folder and the socket: modes, owners, refusal of unsafe folders, peer uid checks."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import msgpack
import pytest

from conftest import TARGETS, dynupdate_json

STRIPPED = "/usr/bin/python3.11"
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
UID = os.getuid()


def _folder(env: dict, uid: int = UID) -> str:
    return os.path.join(env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{uid}")


def _start(start_target, env=None, prefix=()):
    t = start_target([*prefix, sys.executable, str(TARGETS / "fnd_start.py")], env=env)
    return t, json.loads(t.ready_value())


def test_folder_0700_and_socket_0600(start_target, runtime_env):
    t, ready = _start(start_target, runtime_env)
    folder = _folder(runtime_env)
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == UID
    sock = os.path.join(folder, f"{t.pid}.sock")
    assert ready["path1"] == sock
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == UID


def test_default_folder_is_tmp_dynupdate_uid(start_target):
    if os.environ.get("DYNUPDATE_RUNTIME_DIR"):
        pytest.skip("DYNUPDATE_RUNTIME_DIR is set in the environment; the default path cannot be checked")
    env = dict(os.environ)
    t = start_target([sys.executable, str(TARGETS / "fnd_start.py")])
    ready = json.loads(t.ready_value())
    folder = f"/tmp/dynupdate-{UID}"
    sock = f"{folder}/{t.pid}.sock"
    assert ready["path1"] == sock
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == UID
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
    code, data = dynupdate_json("status", "--pid", str(t.pid), "--no-inject", env=env)
    assert code == 0 and data["agent"]["socket"] == sock


def _make_unsafe(kind: str, env: dict) -> tuple:
    """Put an unsafe thing where the socket folder goes; return (path, expected words in the message)."""
    folder = _folder(env)
    if kind == "mode0755":
        os.mkdir(folder)
        os.chmod(folder, 0o755)
        return folder, ["mode 755", "700"]
    if kind == "other-owner":
        os.mkdir(folder, 0o700)
        os.chown(folder, NOBODY, NOBODY)
        return folder, ["owned by uid 65534"]
    if kind == "symlink":
        real = os.path.join(env["DYNUPDATE_RUNTIME_DIR"], "elsewhere")
        os.mkdir(real, 0o700)
        os.symlink(real, folder)
        return folder, ["symlink"]
    if kind == "file":
        open(folder, "w").close()
        return folder, ["not a directory"]
    raise AssertionError(kind)


UNSAFE = ["mode0755", "other-owner", "symlink", "file"]


@pytest.mark.parametrize("kind", UNSAFE)
def test_start_refuses_unsafe_folder(runtime_env, kind):
    folder, words = _make_unsafe(kind, runtime_env)
    before = os.lstat(folder)
    proc = subprocess.run([sys.executable, str(TARGETS / "fnd_badstart.py")], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **runtime_env})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("REFUSED "), proc.stdout + proc.stderr
    for word in words:
        assert word in proc.stdout
    assert folder in proc.stdout
    after = os.lstat(folder)
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid), "an unsafe folder is refused, not repaired"
    if kind == "symlink":
        assert os.listdir(os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], "elsewhere")) == []


@pytest.mark.parametrize("kind", ["mode0755", "other-owner", "symlink"])
def test_run_with_unsafe_folder_still_runs_the_program(runtime_env, kind):
    folder, words = _make_unsafe(kind, runtime_env)
    proc = subprocess.run([sys.executable, "-m", "dynupdate", "run", str(TARGETS / "fnd_app.py"), "--exit", "3"],
                          capture_output=True, text=True, timeout=30, env={**os.environ, **runtime_env})
    assert proc.returncode == 3, proc.stderr
    assert "INFO " in proc.stdout, "the program must run even though the agent could not start"
    assert "agent did not start" in proc.stderr
    for word in words:
        assert word in proc.stderr
    assert "Traceback" not in proc.stderr, "an expected refusal is a message, not a crash report"


@pytest.mark.parametrize("kind", ["path-too-long", "missing-base"])
def test_start_with_unusable_location_raises_agent_start_error(runtime_env, kind):
    base = runtime_env["DYNUPDATE_RUNTIME_DIR"]
    if kind == "path-too-long":  # AF_UNIX paths are limited to 107 bytes
        base = os.path.join(base, "d" * 100)
        os.mkdir(base)
    else:
        base = os.path.join(base, "does", "not", "exist")
    proc = subprocess.run([sys.executable, str(TARGETS / "fnd_badstart.py")], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "DYNUPDATE_RUNTIME_DIR": base})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("REFUSED "), proc.stdout + proc.stderr
    assert base in proc.stdout


def test_socket_removed_at_interpreter_exit(runtime_env):
    proc = subprocess.run([sys.executable, str(TARGETS / "fnd_badstart.py")], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **runtime_env})
    assert proc.stdout.startswith("STARTED "), proc.stdout + proc.stderr
    path = proc.stdout.split()[1]
    assert os.path.dirname(path) == _folder(runtime_env)
    assert not os.path.exists(path)
    assert os.listdir(_folder(runtime_env)) == []


# --- peers of another uid --------------------------------------------------------

# A client that needs nothing but the stdlib: sends {"type": "hello"}, prints what came back (hex).
_CLIENT = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("CONNECT_ERROR", exc.errno)
    sys.exit(0)
payload = b"\x81\xa4type\xa5hello"
try:
    s.sendall(len(payload).to_bytes(4, "big") + payload)
except OSError:
    pass  # the agent may already have answered and closed
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break  # closed with our request unread: the reply (if any) was already received
    if not chunk:
        break
    data += chunk
print("UID", os.getuid(), "REPLY", data.hex())
"""

needs_nobody = pytest.mark.skipif(UID != 0 or SETPRIV is None or not os.access(STRIPPED, os.X_OK),
                                  reason="needs root, setpriv and /usr/bin/python3.11 to run a client as nobody")


def _as_nobody(argv, caps: bool) -> list:
    cmd = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        # keep only CAP_DAC_OVERRIDE: file modes no longer stop nobody, so the agent's own
        # SO_PEERCRED check is what is being tested
        cmd += ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    return cmd + list(argv)


def _frames(data: bytes) -> list:
    frames = []
    while data:
        n = int.from_bytes(data[:4], "big")
        frames.append(msgpack.unpackb(data[4:4 + n], raw=False))
        data = data[4 + n:]
    return frames


@needs_nobody
def test_client_of_another_uid_is_refused(start_target, runtime_env):
    t, ready = _start(start_target, runtime_env)
    sock = ready["path1"]
    # 1. plainly as nobody: the folder (0700) and the socket (0600) already keep it out
    plain = subprocess.run(_as_nobody([STRIPPED, "-S", "-c", _CLIENT, sock], caps=False), capture_output=True,
                           text=True, timeout=30)
    assert plain.stdout.split()[:2] == ["CONNECT_ERROR", "13"], plain.stdout + plain.stderr
    # 2. nobody past the file modes: the agent checks the peer's uid and refuses with an error frame
    proc = subprocess.run(_as_nobody([STRIPPED, "-S", "-c", _CLIENT, sock], caps=True), capture_output=True,
                          text=True, timeout=30)
    words = proc.stdout.split()
    assert words[:2] == ["UID", str(NOBODY)] and words[2] == "REPLY", proc.stdout + proc.stderr
    frames = _frames(bytes.fromhex(words[3]))
    assert len(frames) == 1, "one error frame, then the connection is closed"
    reply = frames[0]
    assert reply["ok"] is False
    assert reply["error"]["type"] == "PermissionDenied"
    assert str(NOBODY) in reply["error"]["message"]
    assert "pid" not in reply and "agent_version" not in reply, "nothing about the target leaks to a refused peer"
    # the agent keeps serving its owner
    code, data = dynupdate_json("status", "--pid", str(t.pid), "--no-inject", env=runtime_env)
    assert code == 0 and data["pid"] == t.pid


@needs_nobody
def test_root_may_talk_to_another_users_agent(start_target, runtime_env):
    # the target runs as nobody (with DAC override only so it can read this Python install)
    t, ready = _start(start_target, runtime_env, prefix=_as_nobody([], caps=True))
    folder = _folder(runtime_env, NOBODY)
    assert ready["path1"] == os.path.join(folder, f"{t.pid}.sock")
    st = os.lstat(folder)
    assert st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) == 0o700
    assert os.lstat(ready["path1"]).st_uid == NOBODY
    code, data = dynupdate_json("status", "--pid", str(t.pid), "--no-inject", env=runtime_env)
    assert code == 0, data
    assert data["pid"] == t.pid
