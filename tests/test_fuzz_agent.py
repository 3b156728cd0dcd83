"""Issue 5, fuzzing over a real socket: the request dispatcher of a real agent.

One rel_app target (started with `dynupdate run`) takes every example: random
bytes, truncated frames, huge lengths, valid msgpack of the wrong shape, and
requests of every type (hello, status, apply, rollback, ping) with wrong types
in every field, down inside `bundle` and its modules. Properties:

- every reply is a well-formed frame: `ok`, and when not ok an `error` with
  string `type`, `message`, `traceback`; malformed input gets an error frame
  (where the agent can still send one) and that connection is closed;
- a well-formed request never costs the connection: a `hello` on it still works;
- another client, connected before the fuzzing and kept open, is served after
  every example; the agent never dies;
- the target never sees it: it keeps answering HTTP with its state intact, on
  its base version, and prints nothing (no traceback, no agent log line).

Apply examples run with dry_run=True (mutations of `dry_run` itself are never
booleans), so a mutation that happens to be harmless cannot change the target.
"""
import copy
import socket
import struct
import sys
import time

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from conftest import TARGETS

sys.path.insert(0, str(TARGETS))
from rel_helpers import V2, module_output, snapshot, start_module_target, start_rel  # noqa: E402,F401

from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import agent_socket  # noqa: E402
from dynupdate_agent import wire  # noqa: E402

pytestmark = pytest.mark.usefixtures("module_output")

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REQUEST_TYPES = ["hello", "status", "apply", "rollback", "ping"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=12) | st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def rel(start_module_target):
    rel = start_rel(start_module_target, "--items", "50")
    rel.get("/incr", iid="i2", by=7)
    rel.before = snapshot(rel)
    rel.sock = agent_socket(rel.pid)
    rel.bystander = connect(rel)          # another client, open for the whole module
    yield rel
    rel.bystander.close()


def connect(rel) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(rel.sock)
    return s


def frame(obj) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def read_reply(s: socket.socket):
    """One frame, or None if the agent closed the connection."""
    try:
        return wire.read_frame(s)
    except ConnectionResetError:
        return None


def read_all(s: socket.socket) -> list:
    replies = []
    while True:
        reply = read_reply(s)
        if reply is None:
            return replies
        replies.append(reply)


def send(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent answered and closed before reading everything: allowed


def check_reply(reply) -> None:
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        err = reply["error"]
        assert isinstance(err, dict), reply
        for key in ("type", "message", "traceback"):
            assert isinstance(err[key], str), reply
        assert err["type"] and err["message"], reply


def still_serving(rel) -> None:
    """The bystander's connection and a brand-new one both get a hello answered."""
    for s in (rel.bystander, None):
        conn = s or connect(rel)
        try:
            conn.sendall(frame({"type": "hello", "id": 1}))
            reply = wire.read_frame(conn)
            assert reply["ok"] and reply["pid"] == rel.pid, reply
        finally:
            if s is None:
                conn.close()


def raw_exchange(rel, data: bytes) -> list:
    """Send raw bytes on a fresh connection, half-close, collect every reply frame."""
    with connect(rel) as s:
        send(s, data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_all(s)


# --- raw bytes ------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=200))
@example(b"\x00\x00\x00\x05hello")
@example(b"\x00\x00\x00\x01\xc1")
def test_random_bytes(rel, data):
    replies = raw_exchange(rel, data)
    for reply in replies:
        check_reply(reply)
    still_serving(rel)


@SETTINGS
@given(st.sampled_from(REQUEST_TYPES), st.data())
def test_truncated_frames(rel, kind, data):
    request = {"type": kind, "id": 3}
    if kind == "apply":
        request.update(bundle=load_bundle(V2), dry_run=True)
    full = frame(request)
    cut = data.draw(st.integers(min_value=1, max_value=len(full) - 1))
    replies = raw_exchange(rel, full[:cut])
    assert len(replies) <= 1
    for reply in replies:
        check_reply(reply)
        assert reply["error"]["type"] == "ProtocolError", reply
    still_serving(rel)


@SETTINGS
@given(st.integers(min_value=wire.MAX_FRAME + 1, max_value=2 ** 32 - 1), st.binary(max_size=32))
@example(wire.MAX_FRAME + 1, b"")
@example(2 ** 32 - 1, b"\x81")
def test_huge_lengths(rel, length, rest):
    replies = raw_exchange(rel, struct.pack(">I", length) + rest)
    assert len(replies) == 1, replies
    assert replies[0]["error"]["type"] == "ProtocolError" and "exceeds" in replies[0]["error"]["message"]
    still_serving(rel)


@SETTINGS
@given(values.filter(lambda v: not isinstance(v, dict)))
def test_valid_msgpack_of_the_wrong_shape(rel, value):
    replies = raw_exchange(rel, frame(value))
    assert len(replies) == 1, replies
    check_reply(replies[0])
    assert replies[0]["ok"] is False and replies[0]["error"]["type"] == "ProtocolError"
    still_serving(rel)


@SETTINGS
@given(st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), values, max_size=4), values)
def test_unknown_or_mistyped_request_type(rel, fields, kind):
    if isinstance(kind, str) and kind in REQUEST_TYPES:
        kind = kind + "?"
    replies = raw_exchange(rel, frame(dict(fields, type=kind)))
    assert len(replies) == 1, replies
    assert replies[0]["ok"] is False and replies[0]["error"]["type"] == "ProtocolError", replies
    still_serving(rel)


# --- well-formed frames, wrong fields -----------------------------------------------------

def exchange(rel, request) -> dict:
    """A well-formed request: one reply, and the connection keeps serving."""
    with connect(rel) as s:
        s.sendall(frame(request))
        reply = read_reply(s)
        while reply is not None and reply.get("event") == "progress":   # streamed before the reply
            assert isinstance(reply.get("phase"), str), reply
            reply = read_reply(s)
        assert reply is not None, "a well-formed request must get a reply"
        check_reply(reply)
        if "id" in request:
            assert reply.get("id") == request["id"], (request.get("id"), reply)
        s.sendall(frame({"type": "ping", "id": 99}))
        pong = read_reply(s)
        assert pong is not None and pong["ok"], pong
    return reply


@SETTINGS
@given(st.sampled_from(["hello", "status", "ping", "rollback"]),
       st.dictionaries(st.sampled_from(["id", "to", "timeout", "bundle", "lazy", "extra"]), values, max_size=4))
def test_simple_requests_with_random_fields(rel, kind, fields):
    reply = exchange(rel, dict(fields, type=kind))
    if kind == "rollback":   # nothing to roll back, or a field of the wrong type: refused either way
        assert reply["ok"] is False, reply
        assert reply["error"]["type"] in ("NothingToRollBack", "BadRequest", "UnknownVersion"), reply
    else:
        assert reply["ok"] is True, reply


BASE_BUNDLE = load_bundle(V2)
# every place in an apply request a value can go: (path, may it be deleted?)
PATHS = [(("timeout",), True), (("lazy",), True), (("dry_run",), False), (("id",), True), (("bundle",), True),
         (("bundle", "name"), True), (("bundle", "version"), True), (("bundle", "manifest"), True),
         (("bundle", "requires"), True), (("bundle", "lazy"), True), (("bundle", "modules"), True),
         (("bundle", "signature"), True), (("bundle", "description"), True),
         (("bundle", "modules", 0), True), (("bundle", "modules", 0, "name"), True),
         (("bundle", "modules", 0, "source"), True), (("bundle", "modules", 0, "sha256"), True),
         (("bundle", "modules", 0, "file"), True)]


def apply_request():
    return {"type": "apply", "id": 5, "bundle": copy.deepcopy(BASE_BUNDLE), "timeout": 5.0, "dry_run": True,
            "lazy": None}


@SETTINGS
@given(st.sampled_from(PATHS), values, st.booleans())
@example((("bundle", "modules"), True), [], False)
@example((("bundle", "modules", 0, "name"), True), "", False)
@example((("bundle", "modules", 0, "name"), True), "relapp..items", False)
@example((("timeout",), True), float("nan"), False)
@example((("timeout",), True), 2 ** 64 - 1, False)
def test_apply_with_a_wrong_value_anywhere(rel, path_spec, value, delete):
    path, deletable = path_spec
    if path == ("dry_run",) and isinstance(value, bool):
        value = int(value)        # a boolean here would be a real apply
    request = apply_request()
    parent = request
    for key in path[:-1]:
        parent = parent[key]
    if delete and deletable:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    reply = exchange(rel, request)
    if reply["ok"]:
        assert reply.get("dry_run") is True, reply     # only a harmless mutation may succeed, as a dry run
    else:
        assert reply["error"]["type"] in ("BadRequest", "DigestMismatch", "ModuleExecError", "CompileError",
                                          "RequirementNotMet", "UnsupportedChange"), reply
    assert reply["version"] == "base", reply


@SETTINGS
@given(st.sampled_from(["name", "version", "manifest", "modules", "requires", "lazy"]), st.data())
def test_apply_bundle_fields_of_every_wrong_type(rel, key, data):
    wrong = {"name": str, "version": str, "manifest": str, "modules": list, "requires": (str, type(None)),
             "lazy": bool}[key]
    value = data.draw(values.filter(lambda v: not isinstance(v, wrong) or (isinstance(v, bool) and wrong is not bool)))
    request = apply_request()
    request["bundle"][key] = value
    reply = exchange(rel, request)
    assert reply["ok"] is False and reply["error"]["type"] == "BadRequest", reply
    assert f"bundle.{key}" in reply["error"]["message"], reply


def test_the_target_never_noticed(rel):
    assert rel.target.alive()
    after = snapshot(rel)
    assert after == rel.before
    assert rel.status()["version"] == "base"
    still_serving(rel)
    time.sleep(0)  # (no wait needed: output is collected as it is printed)
    lines = [line for line in rel.target.output().splitlines() if not line.startswith("READY")]
    assert lines == [], "the target printed something:\n" + "\n".join(lines[:40])
