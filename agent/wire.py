"""The wire protocol shared by the agent and the client.

A frame is a 4-byte big-endian length followed by one msgpack map. The client
imports this module too, so both sides agree on limits and message kinds by
construction rather than by convention.
"""
from __future__ import annotations

import socket
import struct
from typing import Any, Dict, Optional

from ._msgpack import msgpack

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

#: Request types the agent understands. Anything else gets an error reply.
REQUEST_TYPES = frozenset({"hello", "status", "apply", "rollback", "ping", "probe"})


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the connection ends."""


def encode(message: Dict[str, Any]) -> bytes:
    """Serialise one message into a complete frame (header included)."""
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Dict[str, Any]:
    """Parse one frame payload; anything but a msgpack map is a protocol error."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not valid msgpack: {exc.__class__.__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame must hold a map, got {type(message).__name__}")
    return message


def _recv_exact(sock: socket.socket, size: int) -> Optional[bytes]:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise ProtocolError(f"connection closed mid-frame ({size - remaining} of {size} bytes)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> Optional[Dict[str, Any]]:
    """Read one message; None means the peer closed cleanly between frames."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} exceeds the {MAX_FRAME}-byte limit")
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        raise ProtocolError("connection closed before the frame body")
    return decode(payload)


def write_frame(sock: socket.socket, message: Dict[str, Any]) -> None:
    sock.sendall(encode(message))


def error_reply(kind: str, message: str, traceback: str = "", **extra: Any) -> Dict[str, Any]:
    """Build the failure reply every request type shares."""
    reply = {"ok": False, "error": {"type": kind, "message": message, "traceback": traceback}}
    reply.update(extra)
    return reply


def progress(phase: str, **fields: Any) -> Dict[str, Any]:
    """A progress event streamed before a long request's final reply."""
    event = {"event": "progress", "phase": phase}
    event.update(fields)
    return event
