"""Issue 9, items 5 and 7: the agent bounds its resources and never dies.

Against real targets over the real socket:
- thread exhaustion: a target of its own uid under RLIMIT_NPROC (set by
  `resource.setrlimit` in the target once its agent runs); connections beyond what the limit allows are refused with
  `ResourceExhausted`, the accept loop survives, nothing but logging records
  reaches the target's output, and once the held connections close the agent
  accepts and answers again (also through the real CLI);
- a cap on concurrent connections (server.MAX_CONNECTIONS): one more is told
  `TooManyConnections`, and a slot freed is usable again;
- partly received frames: 12 clients each announce a maximal frame and send all
  but its last byte; frames beyond the budget (server.MAX_PENDING_BYTES) are
  refused at their header, and the target's RSS stays within the budget.
"""
import json
import os
import pwd
import shutil
import socket
import sys
import tempfile

import msgpack
import pytest

from conftest import ROOT, TARGETS, dynupdate, wait_until

from dynupdate_agent import server, wire

SETPRIV = shutil.which("setpriv")
ALLOWED = 3  # connection threads the thread limit leaves room for (main + accept thread + these)
THREADS_TARGET = str(TARGETS / "sec_threads.py")
# an interpreter another uid may run (ours may live under root's private home)
OTHER_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s


def hello(s: socket.socket) -> dict:
    """Send hello, return the first frame back (a refusal may come, and the socket close, before we send)."""
    try:
        s.sendall(wire.encode({"type": "hello", "id": 1}))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = wire.read_frame(s, frame_timeout=20)
    assert reply is not None, "closed without a reply"
    return reply


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _free_uid() -> int:
    """A uid with no account and no process: RLIMIT_NPROC then counts only our target."""
    used = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                used.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                pass
    for uid in range(47311, 48000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in used:
                return uid
    pytest.skip("no free uid")


@pytest.fixture
def limited(start_target, request):
    """sec_threads.py as an unused uid, agent loaded by its bootstrap; the runtime dir is its own."""
    if os.getuid() != 0 or not SETPRIV:
        pytest.skip("needs root and setpriv")
    import msgpack as mp

    uid = _free_uid()
    base = tempfile.mkdtemp(prefix="du-nproc-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        shutil.copytree(os.path.dirname(mp.__file__), os.path.join(base, "mp", "msgpack"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # pure Python: any 3.x
        runtime = os.path.join(base, "run")
        os.mkdir(runtime, 0o755)
        os.chown(runtime, uid, uid)
        for folder, dirs, files in os.walk(base):
            for name in dirs + files:
                os.chmod(os.path.join(folder, name), 0o755)
        env = {"DYNUPDATE_RUNTIME_DIR": runtime, "PYTHONDONTWRITEBYTECODE": "1"}
        argv = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                OTHER_PYTHON, "-S", THREADS_TARGET, str(ROOT / "agent"), os.path.join(base, "mp"),
                getattr(request, "param", f"nproc={2 + ALLOWED}")]
        target = start_target(argv, env=env)
        target.uid, target.env = uid, env
        target.sock_path = os.path.join(runtime, f"dynupdate-{uid}", f"{target.pid}.sock")
        yield target
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_agent_accepts_again_after_a_thread_exhaustion_episode(limited):
    pid = limited.pid
    wait_until(lambda: thread_count(pid) == 2, timeout=10, message="main + accept thread only")
    allowed = ALLOWED
    held, refused = [], []
    try:
        for _ in range(allowed + 5):
            s = connect(limited.sock_path)
            reply = hello(s)
            if reply.get("ok"):
                held.append(s)
            else:
                refused.append(reply)
                s.close()
        assert 1 <= len(held) <= allowed, (held, refused)
        assert len(refused) >= 5, refused
        for reply in refused:
            assert reply["error"]["type"] == "ResourceExhausted", reply
            assert "thread" in reply["error"]["message"], reply
        assert limited.alive()
    finally:
        for s in held:
            s.close()
    # the episode ends: connection threads exit, the limit is no longer reached
    wait_until(lambda: thread_count(pid) == 2, timeout=20, message="connection threads to exit")

    def answers() -> bool:
        s = connect(limited.sock_path)
        try:
            return bool(hello(s).get("ok"))
        finally:
            s.close()

    wait_until(answers, timeout=10, interval=0.1, message="the agent to accept again")
    proc = dynupdate("status", "--pid", str(pid), "--no-inject", "--json", env=limited.env)
    assert proc.returncode == 0, proc
    assert json.loads(proc.stdout)["pid"] == pid
    output = limited.output()
    assert "Traceback" not in output and "Exception in thread" not in output, output
    assert "cannot start a connection thread" in output, output           # one logging record
    assert "serving connections again" in output, output


@pytest.mark.parametrize("limited", [f"nofile={ALLOWED + 1}"], indirect=True)
def test_the_agent_accepts_again_after_running_out_of_descriptors(limited):
    """accept() fails with EMFILE: the loop backs off, and serves the waiting client once fds return."""
    held = []
    try:
        for _ in range(ALLOWED + 8):
            s = connect(limited.sock_path)
            s.settimeout(2)
            try:
                reply = hello(s)
            except (socket.timeout, wire.FrameTimeout):
                waiting = s                     # connected (backlog) but not accepted: no fd for it
                break
            assert reply["ok"], reply
            held.append(s)
        else:
            raise AssertionError("the descriptor limit was never reached")
        assert len(held) >= 1, held             # (the exact count depends on fds the runtime holds)
        assert limited.alive()
    finally:
        for s in held:
            s.close()
    waiting.settimeout(20)                      # the same request is answered once fds come back
    reply = wire.read_frame(waiting, frame_timeout=20)
    waiting.close()
    assert reply is not None and reply["ok"], reply
    proc = dynupdate("status", "--pid", str(limited.pid), "--no-inject", "--json", env=limited.env)
    assert proc.returncode == 0, proc
    output = limited.output()
    assert "Traceback" not in output and "Exception in thread" not in output, output
    assert "accept failed" in output and "serving connections again" in output, output


@pytest.fixture
def agent(start_target, runtime_env):
    t = start_target([sys.executable, str(TARGETS / "fnd_start.py")], env=runtime_env)
    t.sock_path = json.loads(t.ready_value())["path1"]
    return t


def test_connections_beyond_the_cap_are_refused_clearly(agent):
    held = []
    try:
        for _ in range(server.MAX_CONNECTIONS):
            s = connect(agent.sock_path)
            assert hello(s)["ok"]
            held.append(s)
        extra = connect(agent.sock_path)
        reply = hello(extra)
        extra.close()
        assert reply["ok"] is False and reply["error"]["type"] == "TooManyConnections", reply
        assert str(server.MAX_CONNECTIONS) in reply["error"]["message"]
        held.pop().close()

        def answers() -> bool:
            s = connect(agent.sock_path)
            try:
                return bool(hello(s).get("ok"))
            finally:
                s.close()

        wait_until(answers, timeout=10, interval=0.05, message="a freed slot to be usable")
    finally:
        for s in held:
            s.close()
    assert "Traceback" not in agent.output(), agent.output()


def test_partly_received_frames_hold_bounded_memory(agent):
    before = rss_bytes(agent.pid)
    body = msgpack.packb({"type": "hello", "pad": "x" * (wire.MAX_FRAME - 64)}, use_bin_type=True)
    assert len(body) <= wire.MAX_FRAME
    header = len(body).to_bytes(4, "big")
    accepted, refused = [], []
    conns = []
    try:
        for _ in range(12):
            s = connect(agent.sock_path)
            conns.append(s)
            try:
                s.sendall(header + body[:-1])  # everything but the last byte: the agent holds it
            except (BrokenPipeError, ConnectionResetError):
                refused.append(wire.read_frame(s, frame_timeout=10))  # told why, at the header
                continue
            accepted.append(s)
        peak = rss_bytes(agent.pid)
        assert len(accepted) * len(body) <= server.MAX_PENDING_BYTES, len(accepted)
        assert len(refused) >= 12 - server.MAX_PENDING_BYTES // len(body), refused
        for reply in refused:
            assert reply["error"]["type"] == "ProtocolError" and "refused" in reply["error"]["message"], reply
        grown = peak - before
        assert grown < server.MAX_PENDING_BYTES + 32 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"
        for s in accepted:                # completing a held frame still works
            s.sendall(body[-1:])
            assert hello_reply_after_body(s)
    finally:
        for s in conns:
            s.close()
    s = connect(agent.sock_path)
    assert hello(s)["ok"]
    s.close()
    assert "Traceback" not in agent.output(), agent.output()


def hello_reply_after_body(s: socket.socket) -> bool:
    reply = wire.read_frame(s, frame_timeout=30)
    return bool(reply and reply.get("ok"))
