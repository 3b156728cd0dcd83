"""A small msgpack codec in pure standard-library Python: the agent's last resort.

The agent prefers the target's msgpack, then the CLI's copy (see _msgpack.py).
Neither may be readable: root attaching to a service that runs as another user,
with dynupdate installed under root's private home, gives a target that can
read the agent's own files but not the CLI's msgpack. The agent must load all
the same, so this module speaks the subset of msgpack the wire protocol uses —
nil, bool, int (64-bit), float, str, bin, array, map — byte for byte as
`msgpack.packb(obj, use_bin_type=True)` does (shortest integer forms, float64),
and reads anything msgpack writes for those types. Extension types are refused.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Tuple

MAX_DEPTH = 64  # nesting beyond this is refused: a hostile frame must not exhaust the stack (messages nest < 10)

_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_b = struct.Struct(">b")
_h = struct.Struct(">h")
_i = struct.Struct(">i")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")


class ExtraData(ValueError):
    """Bytes left after one complete object (msgpack.unpackb refuses them too)."""


def _pack_int(n: int, out: List[bytes]) -> None:
    if 0 <= n < 0x80:
        out.append(_B.pack(n))
    elif -32 <= n < 0:
        out.append(_b.pack(n))
    elif 0 <= n <= 0xFF:
        out.append(b"\xcc" + _B.pack(n))
    elif 0 <= n <= 0xFFFF:
        out.append(b"\xcd" + _H.pack(n))
    elif 0 <= n <= 0xFFFFFFFF:
        out.append(b"\xce" + _I.pack(n))
    elif 0 <= n <= 0xFFFFFFFFFFFFFFFF:
        out.append(b"\xcf" + _Q.pack(n))
    elif -0x80 <= n:
        out.append(b"\xd0" + _b.pack(n))
    elif -0x8000 <= n:
        out.append(b"\xd1" + _h.pack(n))
    elif -0x80000000 <= n:
        out.append(b"\xd2" + _i.pack(n))
    elif -0x8000000000000000 <= n:
        out.append(b"\xd3" + _q.pack(n))
    else:
        raise OverflowError("int too big to pack")


def _pack_len(n: int, fix: int, fix_limit: int, codes: Tuple[bytes, bytes, bytes], out: List[bytes]) -> None:
    if n < fix_limit and fix:
        out.append(_B.pack(fix | n))
    elif n <= 0xFF and codes[0]:
        out.append(codes[0] + _B.pack(n))
    elif n <= 0xFFFF:
        out.append(codes[1] + _H.pack(n))
    elif n <= 0xFFFFFFFF:
        out.append(codes[2] + _I.pack(n))
    else:
        raise ValueError("object too large to pack")


def _pack(obj: Any, out: List[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("object nested too deeply")
    if obj is None:
        out.append(b"\xc0")
    elif obj is True:
        out.append(b"\xc3")
    elif obj is False:
        out.append(b"\xc2")
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out.append(b"\xcb" + _d.pack(obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        _pack_len(len(data), 0xA0, 32, (b"\xd9", b"\xda", b"\xdb"), out)
        out.append(data)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        _pack_len(len(data), 0, 0, (b"\xc4", b"\xc5", b"\xc6"), out)
        out.append(data)
    elif isinstance(obj, (list, tuple)):
        _pack_len(len(obj), 0x90, 16, (b"", b"\xdc", b"\xdd"), out)
        for item in obj:
            _pack(item, out, depth + 1)
    elif isinstance(obj, dict):
        _pack_len(len(obj), 0x80, 16, (b"", b"\xde", b"\xdf"), out)
        for key, value in obj.items():
            _pack(key, out, depth + 1)
            _pack(value, out, depth + 1)
    else:
        raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def packb(obj: Any, use_bin_type: bool = True, **_: Any) -> bytes:
    out: List[bytes] = []
    _pack(obj, out, 0)
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("incomplete msgpack data")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def num(self, fmt: struct.Struct) -> Any:
        return fmt.unpack(self.take(fmt.size))[0]


def _str(r: _Reader, n: int) -> str:
    return r.take(n).decode("utf-8", "surrogatepass")


def _array(r: _Reader, n: int, depth: int) -> List[Any]:
    return [_unpack(r, depth + 1) for _ in range(n)]


def _map(r: _Reader, n: int, depth: int) -> Dict[Any, Any]:
    out: Dict[Any, Any] = {}
    for _ in range(n):
        key = _unpack(r, depth + 1)
        if isinstance(key, (list, dict)):
            raise ValueError("unhashable map key")
        out[key] = _unpack(r, depth + 1)
    return out


_FIXED: Dict[int, Callable[[_Reader, int], Any]] = {
    0xC0: lambda r, d: None, 0xC2: lambda r, d: False, 0xC3: lambda r, d: True,
    0xC4: lambda r, d: r.take(r.num(_B)), 0xC5: lambda r, d: r.take(r.num(_H)), 0xC6: lambda r, d: r.take(r.num(_I)),
    0xCA: lambda r, d: r.num(_f), 0xCB: lambda r, d: r.num(_d),
    0xCC: lambda r, d: r.num(_B), 0xCD: lambda r, d: r.num(_H), 0xCE: lambda r, d: r.num(_I),
    0xCF: lambda r, d: r.num(_Q),
    0xD0: lambda r, d: r.num(_b), 0xD1: lambda r, d: r.num(_h), 0xD2: lambda r, d: r.num(_i),
    0xD3: lambda r, d: r.num(_q),
    0xD9: lambda r, d: _str(r, r.num(_B)), 0xDA: lambda r, d: _str(r, r.num(_H)), 0xDB: lambda r, d: _str(r, r.num(_I)),
    0xDC: lambda r, d: _array(r, r.num(_H), d), 0xDD: lambda r, d: _array(r, r.num(_I), d),
    0xDE: lambda r, d: _map(r, r.num(_H), d), 0xDF: lambda r, d: _map(r, r.num(_I), d),
}


def _unpack(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("msgpack data nested too deeply")
    code = r.num(_B)
    if code <= 0x7F:
        return code
    if code >= 0xE0:
        return code - 0x100
    if 0xA0 <= code <= 0xBF:
        return _str(r, code & 0x1F)
    if 0x90 <= code <= 0x9F:
        return _array(r, code & 0x0F, depth)
    if 0x80 <= code <= 0x8F:
        return _map(r, code & 0x0F, depth)
    read = _FIXED.get(code)
    if read is None:
        raise ValueError(f"unsupported msgpack type 0x{code:02x} (extension types are not used by dynupdate)")
    return read(r, depth)


def unpackb(data: Any, raw: bool = False, **_: Any) -> Any:
    reader = _Reader(bytes(data))
    obj = _unpack(reader, 0)
    if reader.pos != len(reader.data):
        raise ExtraData(f"{len(reader.data) - reader.pos} byte(s) after the object")
    return obj
