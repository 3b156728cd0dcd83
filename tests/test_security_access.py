"""Issue 5, security: who may talk to an agent, and where it is willing to listen.

- SO_PEERCRED: a client of another uid (nobody, 65534) that gets past the file
  modes is refused with a PermissionDenied error frame; root and the owner are served.
- The socket folder: pre-created by another user (chowned to nobody), or a
  symlink in its place: the agent refuses to start, with a message that says
  why, and creates nothing there; the program itself still runs.
- The client side: a socket in such a folder served by anyone but the target
  itself is refused by the CLI (SO_PEERCRED on the client), so an impostor never
  receives a request, let alone a bundle.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import msgpack
import pytest

from conftest import TARGETS, dynupdate, dynupdate_json

sys.path.insert(0, str(TARGETS))
from rel_helpers import REL_SERVER, V2, start_rel  # noqa: E402

from dynupdate import errors  # noqa: E402
from dynupdate.client import Client  # noqa: E402

NOBODY = 65534
UID = os.getuid()
SETPRIV = shutil.which("setpriv")
STRIPPED = "/usr/bin/python3.11"  # readable by nobody (the project's interpreter lives under /root)

needs_nobody = pytest.mark.skipif(UID != 0 or SETPRIV is None or not os.access(STRIPPED, os.X_OK),
                                  reason="needs root, setpriv and a system python to run a client as nobody")

_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_errno": exc.errno})); sys.exit(0)
payload = bytes.fromhex(sys.argv[2])
try:
    s.sendall(len(payload).to_bytes(4, "big") + payload)
except OSError:
    pass
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
print(json.dumps({"reply": data.hex()}))
"""


def as_nobody(sock_path: str, request: dict, caps: bool) -> dict:
    cmd = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:  # past the 0700 folder and the 0600 socket: only the agent's own check is left
        cmd += ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    payload = msgpack.packb(request, use_bin_type=True).hex()
    proc = subprocess.run(cmd + [STRIPPED, "-S", "-c", _CLIENT, sock_path, payload], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def frames(data: bytes) -> list:
    out = []
    while data:
        n = int.from_bytes(data[:4], "big")
        out.append(msgpack.unpackb(data[4:4 + n], raw=False))
        data = data[4 + n:]
    return out


def folder(env: dict) -> str:
    return os.path.join(env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{UID}")


@needs_nobody
@pytest.mark.parametrize("request_type", ["hello", "status", "apply"])
def test_peer_of_another_uid_is_refused(start_target, runtime_env, request_type):
    rel = start_rel(start_target, "--items", "5", env=runtime_env)
    sock = os.path.join(folder(runtime_env), f"{rel.pid}.sock")
    from dynupdate.bundle import load_bundle

    request = {"type": request_type, "id": 1}
    if request_type == "apply":
        request["bundle"] = load_bundle(V2)
    # the file modes alone keep nobody out
    assert as_nobody(sock, request, caps=False) == {"connect_errno": 13}
    # past them, the agent checks the peer's uid: one error frame, then the connection closes
    got = frames(bytes.fromhex(as_nobody(sock, request, caps=True)["reply"]))
    assert len(got) == 1, got
    assert got[0]["ok"] is False and got[0]["error"]["type"] == "PermissionDenied", got
    assert f"uid {NOBODY}" in got[0]["error"]["message"]
    assert set(got[0]) == {"ok", "error"}, "nothing about the target for a refused peer"
    # root (the owner here) is served, and nothing changed
    code, data = dynupdate_json("status", "--pid", str(rel.pid), "--no-inject", env=runtime_env)
    assert code == 0 and data["version"] == "base", data
    assert rel.get("/label") == {"label": "v1"}


def make_unsafe(kind: str, env: dict) -> tuple:
    path = folder(env)
    if kind == "other-owner":
        os.mkdir(path, 0o700)
        os.chown(path, NOBODY, NOBODY)
        return path, f"owned by uid {NOBODY}", path
    real = os.path.join(env["DYNUPDATE_RUNTIME_DIR"], "elsewhere")
    os.mkdir(real, 0o700)
    os.symlink(real, path)
    return path, "is a symlink", real


@pytest.mark.skipif(UID != 0, reason="chown to nobody needs root")
@pytest.mark.parametrize("kind", ["other-owner", "symlink"])
@pytest.mark.parametrize("how", ["run", "start"])
def test_agent_refuses_an_unsafe_folder(runtime_env, kind, how):
    path, words, inside = make_unsafe(kind, runtime_env)
    env = {**os.environ, **runtime_env, "PYTHONUNBUFFERED": "1"}
    if how == "run":
        argv = [sys.executable, "-m", "dynupdate", "run", str(REL_SERVER)]
    else:
        argv = [sys.executable, str(REL_SERVER), "--start-agent"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if how == "run":     # the program runs without the agent, after saying why
            line = proc.stdout.readline()
            assert line.startswith("READY "), line
            proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert words in err and path in err, err
    if how == "run":
        assert "agent did not start" in err and "Traceback" not in err, err
    else:                    # start() raises AgentStartError into the program that asked for it
        assert "AgentStartError" in err and proc.returncode != 0, err
    assert os.listdir(inside) == [], "nothing may be created in a folder the agent does not trust"
    st = os.lstat(path)
    assert st.st_uid == (NOBODY if kind == "other-owner" else UID), "refused, not repaired"


@pytest.mark.skipif(UID != 0, reason="chown to nobody needs root")
def test_cli_refuses_an_impostor_socket(start_target, runtime_env, monkeypatch):
    """Another user pre-created the folder (so the target's agent could not start) and
    listens at <pid>.sock: the CLI must not talk to it."""
    target = start_target([sys.executable, str(REL_SERVER)], env=runtime_env)   # no agent
    path = folder(runtime_env)
    os.mkdir(path, 0o700)
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(os.path.join(path, f"{target.pid}.sock"))
    os.chown(path, NOBODY, NOBODY)
    impostor.listen(4)
    received = []

    def serve():
        while True:
            try:
                conn, _ = impostor.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    received.append(conn.recv(65536))
                    fake = msgpack.packb({"ok": True, "pid": target.pid, "version": "fake"}, use_bin_type=True)
                    conn.sendall(len(fake).to_bytes(4, "big") + fake)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        proc = dynupdate("status", "--pid", str(target.pid), "--no-inject", env=runtime_env)
        assert proc.returncode == 3, proc.stdout + proc.stderr     # "no agent", not the impostor's answer
        assert "fake" not in proc.stdout + proc.stderr
        monkeypatch.setenv("DYNUPDATE_RUNTIME_DIR", runtime_env["DYNUPDATE_RUNTIME_DIR"])
        with pytest.raises(errors.TargetUnreachable) as info:       # the client library says why
            Client.connect(target.pid)
        assert f"not by pid {target.pid}" in str(info.value) and "refusing" in str(info.value)
        assert not any(received), f"the impostor received {received!r}"
    finally:
        impostor.close()
