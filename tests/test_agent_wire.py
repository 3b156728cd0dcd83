"""Wire robustness over the real socket of a real target.

Malformed frames, an oversized length, unknown request types, a truncated
frame: each gets an error reply where one can be sent, that connection is
closed, and the agent goes on serving everyone else. Several clients at once
all get answers.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys

import msgpack
import pytest

from conftest import TARGETS

from dynupdate_agent.wire import MAX_FRAME  # noqa: E402


@pytest.fixture
def agent(start_target, runtime_env):
    t = start_target([sys.executable, str(TARGETS / "fnd_start.py")], env=runtime_env)
    ready = json.loads(t.ready_value())
    t.sock_path = ready["path1"]
    return t


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _frame(obj) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _read_reply(s: socket.socket) -> dict:
    (n,) = struct.unpack(">I", _recv_exact(s, 4))
    assert n <= MAX_FRAME
    return msgpack.unpackb(_recv_exact(s, n), raw=False)


def _assert_closed(s: socket.socket) -> None:
    try:
        assert s.recv(1) == b"", "the agent must close the connection after a protocol error"
    except ConnectionResetError:
        pass


def _hello_works(path: str, pid: int) -> None:
    with _connect(path) as s:
        s.sendall(_frame({"type": "hello", "id": 1}))
        reply = _read_reply(s)
    assert reply["ok"] is True and reply["pid"] == pid and reply["id"] == 1


def _error_then_close(path: str, data: bytes, half_close: bool = False) -> dict:
    with _connect(path) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        reply = _read_reply(s)
        _assert_closed(s)
    assert reply["ok"] is False
    assert set(reply["error"]) >= {"type", "message", "traceback"}
    return reply


BAD_FRAMES = {
    "not-msgpack": struct.pack(">I", 4) + b"\xc1\xc1\xc1\xc1",  # 0xc1 is never used in msgpack
    "trailing-garbage": struct.pack(">I", 3) + b"\x80\xc1\xc1",
    "empty-payload": struct.pack(">I", 0),
    "msgpack-list": _frame([1, 2, 3]),
    "msgpack-string": _frame("hello"),
    "msgpack-int": _frame(42),
    "unknown-type": _frame({"type": "launch_missiles"}),
    "no-type": _frame({"id": 3}),
    "type-not-a-string": _frame({"type": 7}),
    "bytes-type": _frame({"type": b"hello"}),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frame_gets_error_and_close(agent, case):
    reply = _error_then_close(agent.sock_path, BAD_FRAMES[case])
    assert reply["error"]["type"] == "ProtocolError"
    if case.endswith("type"):
        assert "unknown request type" in reply["error"]["message"]
        assert "hello" in reply["error"]["message"], "the error lists the request types the agent knows"
    _hello_works(agent.sock_path, agent.pid)


def test_unknown_type_echoes_nothing_but_an_error(agent):
    reply = _error_then_close(agent.sock_path, _frame({"type": "status2", "id": 9}))
    assert "status2" in reply["error"]["message"]


def test_oversized_length_header(agent):
    reply = _error_then_close(agent.sock_path, struct.pack(">I", MAX_FRAME + 1))
    assert reply["error"]["type"] == "ProtocolError"
    assert str(MAX_FRAME + 1) in reply["error"]["message"]
    reply = _error_then_close(agent.sock_path, struct.pack(">I", 0xFFFFFFFF))
    assert reply["error"]["type"] == "ProtocolError"
    _hello_works(agent.sock_path, agent.pid)


def test_frame_of_exactly_the_limit_is_not_rejected_by_length(agent):
    # a 64 MiB length is allowed; we send only part of it and close: the agent must
    # report a truncated frame, not an oversized one
    reply = _error_then_close(agent.sock_path, struct.pack(">I", MAX_FRAME) + b"\x81" * 1000, half_close=True)
    assert reply["error"]["type"] == "ProtocolError"
    assert "exceeds" not in reply["error"]["message"]
    _hello_works(agent.sock_path, agent.pid)


def test_truncated_frame_then_close(agent):
    frame = _frame({"type": "status", "id": 1})
    reply = _error_then_close(agent.sock_path, frame[:-3], half_close=True)
    assert reply["error"]["type"] == "ProtocolError"
    assert "closed" in reply["error"]["message"]
    reply = _error_then_close(agent.sock_path, frame[:2], half_close=True)  # even mid-header
    assert reply["error"]["type"] == "ProtocolError"
    # and a client that simply vanishes mid-frame costs nothing
    s = _connect(agent.sock_path)
    s.sendall(frame[:5])
    s.close()
    _hello_works(agent.sock_path, agent.pid)


def test_several_requests_on_one_connection_and_ids(agent):
    with _connect(agent.sock_path) as s:
        s.sendall(_frame({"type": "hello", "id": 1}) + _frame({"type": "status", "id": 2}) +
                  _frame({"type": "ping", "id": "three"}))
        replies = [_read_reply(s) for _ in range(3)]
    assert [r["id"] for r in replies] == [1, 2, "three"]
    assert all(r["ok"] for r in replies)
    assert replies[0]["protocol_version"] == 1 and replies[0]["agent_version"] == "0.1.0"
    for key in ("agent_version", "protocol_version", "python", "pid", "executable", "started_at"):
        assert key in replies[0]
    assert replies[1]["pid"] == agent.pid and replies[1]["version"] == "base"


def test_many_clients_at_once(agent):
    # an idle client, one stuck mid-frame, and one that sent garbage, all connected together
    idle = _connect(agent.sock_path)
    stuck = _connect(agent.sock_path)
    stuck.sendall(struct.pack(">I", 100) + b"\x80")
    clients = [_connect(agent.sock_path) for _ in range(12)]
    try:
        for i, s in enumerate(clients):  # every request is sent before any reply is read
            s.sendall(_frame({"type": "status" if i % 2 else "hello", "id": i}))
        for i, s in enumerate(clients):
            reply = _read_reply(s)
            assert reply["ok"] is True and reply["id"] == i and reply["pid"] == agent.pid
        idle.sendall(_frame({"type": "hello", "id": "late"}))
        assert _read_reply(idle)["id"] == "late", "an idle connection is still served"
    finally:
        for s in clients + [idle, stuck]:
            s.close()
    _hello_works(agent.sock_path, agent.pid)
