"""The agent's standard-library msgpack codec speaks msgpack exactly, for every type the protocol uses.

It is what the agent falls back to when neither the target nor the CLI's copy
of msgpack can be loaded (root attaching to another user's process; see
tests/test_inject_folders.py for that case against a real process), so its
bytes must be the real msgpack's bytes, both ways.
"""
from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynupdate_agent import _minipack

ints = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)  # what msgpack itself can pack
scalars = st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=20)
                      | st.dictionaries(st.text() | ints, inner, max_size=20), max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_bytes_as_msgpack_and_back(value):
    ours = _minipack.packb(value)
    assert ours == msgpack.packb(value, use_bin_type=True)
    assert _minipack.unpackb(ours) == msgpack.unpackb(ours, raw=False, strict_map_key=False)


@pytest.mark.parametrize("size", [0, 15, 16, 31, 32, 255, 256, 65535, 65536])
def test_length_boundaries(size):
    for value in ("s" * size, b"b" * size, list(range(size)), {i: None for i in range(min(size, 70000))}):
        ours = _minipack.packb(value)
        assert ours == msgpack.packb(value, use_bin_type=True)
        assert _minipack.unpackb(ours) == value


def test_nan_and_infinities():
    for value in (math.inf, -math.inf):
        assert _minipack.unpackb(_minipack.packb(value)) == value
    assert math.isnan(_minipack.unpackb(msgpack.packb(math.nan)))


@pytest.mark.parametrize("data, why", [
    (b"", "incomplete"), (b"\x92\x01", "incomplete"), (b"\xc1", "unsupported"), (b"\xd4\x01\x02", "unsupported"),
    (b"\x01\x02", "after the object"), (b"\x91" * 100 + b"\xc0", "nested too deeply"),
    (b"\xdd\xff\xff\xff\xff", "incomplete"), (b"\x81\x90\x01", "unhashable"),
])
def test_hostile_bytes_are_refused_with_value_error(data, why):
    with pytest.raises(ValueError, match=why):
        _minipack.unpackb(data)


def test_wire_frames_round_trip_through_both_codecs():
    from dynupdate_agent import wire

    message = {"type": "apply", "id": 3, "bundle": {"name": "n", "modules": [{"source": "x = 1\n"}]},
               "timeout": 10.0, "lazy": None, "data": b"\x00\xff"}
    payload = wire.encode(message)[4:]
    assert _minipack.unpackb(payload) == message
    assert wire.decode(_minipack.packb(message)) == message
