"""Issue 5, fuzzing (in-process): the frame decoder and reader of agent/wire.py.

Whatever the bytes, `decode` returns a dict or raises wire.ProtocolError, and
`read_frame` returns a dict, None (clean close between frames) or raises
ProtocolError: never another exception, never a hang, never a read of a body
longer than MAX_FRAME.
"""
import socket
import struct
import threading

import msgpack
from hypothesis import HealthCheck, example, given, settings, strategies as st

from dynupdate_agent import wire

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=120)  # the examples built from nested values cost more

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4), max_leaves=12)


def header(n: int) -> bytes:
    return struct.pack(">I", n)


@SETTINGS
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xc1")                      # never used in msgpack
@example(b"\x81\xa4type")              # a map cut short
@example(b"\xdf\xff\xff\xff\xff")      # a map claiming 4 billion entries
def test_decode_random_bytes(data):
    try:
        message = wire.decode(data)
    except wire.ProtocolError:
        return
    assert isinstance(message, dict)


@FEWER
@given(values)
def test_decode_valid_msgpack_of_any_shape(value):
    payload = msgpack.packb(value, use_bin_type=True)
    try:
        message = wire.decode(payload)
    except wire.ProtocolError as exc:
        assert not isinstance(value, dict) or "msgpack" in str(exc), exc
        return
    assert isinstance(value, dict) and isinstance(message, dict)


@FEWER
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_encode_decode_round_trip(message):
    frame = wire.encode(message)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    back = wire.decode(frame[4:])
    assert msgpack.packb(back, use_bin_type=True) == msgpack.packb(message, use_bin_type=True)


def read_from(data: bytes):
    """Feed `data` to read_frame over a real socket pair, the writer closing after it."""
    a, b = socket.socketpair()
    a.settimeout(10)
    writer = threading.Thread(target=lambda: (b.sendall(data), b.close()), daemon=True)
    writer.start()
    try:
        return wire.read_frame(a)
    finally:
        a.close()
        writer.join(10)


@SETTINGS
@given(st.binary(max_size=400))
def test_read_frame_random_bytes(data):
    try:
        message = read_from(data)
    except wire.ProtocolError:
        return
    assert message is None or isinstance(message, dict)
    if message is None:
        assert data == b""


@FEWER
@given(st.dictionaries(st.text(max_size=8), values, min_size=1, max_size=6), st.data())
def test_read_frame_truncated(message, data):
    frame = wire.encode(message)
    cut = data.draw(st.integers(min_value=1, max_value=len(frame) - 1))
    try:
        read_from(frame[:cut])
    except wire.ProtocolError as exc:
        assert "closed" in str(exc) or "mid-frame" in str(exc), exc
    else:
        raise AssertionError("a truncated frame must not decode")


@SETTINGS
@given(st.integers(min_value=wire.MAX_FRAME + 1, max_value=2 ** 32 - 1), st.binary(max_size=64))
@example(wire.MAX_FRAME + 1, b"")
@example(2 ** 32 - 1, b"\x80")
def test_read_frame_huge_length_is_refused_before_reading(length, rest):
    try:
        read_from(header(length) + rest)
    except wire.ProtocolError as exc:
        assert "exceeds" in str(exc), exc
    else:
        raise AssertionError("an oversized length must be refused")


def test_read_frame_sequence_then_clean_close():
    frames = [{"type": "hello", "id": i} for i in range(3)]
    a, b = socket.socketpair()
    b.sendall(b"".join(wire.encode(f) for f in frames))
    b.close()
    try:
        assert [wire.read_frame(a) for _ in range(3)] == frames
        assert wire.read_frame(a) is None
    finally:
        a.close()


def test_zero_length_frame_is_an_error_not_a_crash():
    try:
        read_from(header(0))
    except wire.ProtocolError as exc:
        assert "msgpack" in str(exc)
