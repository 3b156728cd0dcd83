"""The wire protocol shared by the agent and the client, and its schema, defined once.

A frame is a 4-byte big-endian length followed by one msgpack map. The client
imports this module too, so both sides agree on limits, message kinds and
fields by construction rather than by convention: the agent validates
requests against `REQUESTS`/`BUNDLE`/`MODULE`, `dynupdate.bundle` builds
bundles from the same tables, `signing` signs exactly the fields marked
`signed`, and the CLI's JSON output uses `RESULT_KEYS`/`STATUS_KEYS`.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

from ._msgpack import msgpack

PROTOCOL_VERSION = 1

# --- limits (agreed between bundle loading, signing and framing) ---------------

#: largest module source file, in bytes (the CLI refuses bigger files with exit 2)
MAX_FILE_BYTES = 16 * 1024 * 1024
#: largest bundle: the manifest plus every source file, in bytes
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
#: largest frame: a maximal bundle plus room for the digests, names and msgpack overhead
MAX_FRAME = MAX_BUNDLE_BYTES + 1024 * 1024
#: seconds a peer may take to send the rest of a frame once it began (agent side)
FRAME_DEADLINE = 60.0
_HEADER = struct.Struct(">I")


class Field(NamedTuple):
    """One field of a message: its accepted types, whether it must be present, whether it is signed.

    `signed`: the field changes what the target does, so a process that
    requires signatures accepts it only if the bundle's signature covers its
    value. Decide it for every new field; a process that requires signatures
    refuses fields that are not declared here at all.
    """

    name: str
    types: Tuple[type, ...]
    required: bool = True
    signed: bool = False


_STR = (str,)
_OPT_STR = (str, type(None))
_BOOL = (bool,)
_OPT_BOOL = (bool, type(None))
_NUMBER = (int, float)

#: the fields of a bundle as sent in an `apply` request. Every field the agent acts on
#: is signed; `source` is covered through the signed `sha256`, `manifest` through its digest.
BUNDLE = (
    Field("name", _STR, signed=True),
    Field("version", _STR, signed=True),
    Field("description", _STR, required=False, signed=True),
    Field("requires", _OPT_STR, required=False, signed=True),
    Field("lazy", _BOOL, required=False, signed=True),
    Field("modules", (list,), signed=True),
    Field("new_modules", (list,), required=False, signed=True),
    # [interpose]: {"target", "file", "function", "source", "sha256"} each; signed whole
    Field("interpose", (list,), required=False, signed=True),
    Field("manifest", _STR, signed=True),
    Field("signature", _OPT_STR, required=False),
)
#: the fields of each entry of `bundle.modules`
MODULE = (
    Field("name", _STR, signed=True),
    Field("file", _STR, required=False, signed=True),
    Field("source", _STR),
    Field("sha256", _STR, signed=True),
)
#: the fields of each entry of `bundle.interpose` (see agent/interposers.py)
INTERPOSER = (
    Field("target", _STR, signed=True),
    Field("file", _STR, signed=True),
    Field("function", _STR, signed=True),
    Field("source", _STR),
    Field("sha256", _STR, signed=True),
)
#: request kind -> its fields besides `type` and `id`. `signed` request fields are
#: options that alter the outcome: a target that requires signatures only accepts them
#: when the bundle's signature covers their value (see agent/signing.py).
REQUESTS: Dict[str, Tuple[Field, ...]] = {
    "hello": (),
    "ping": (),
    "status": (),
    "apply": (
        Field("bundle", (dict,)),
        Field("lazy", _OPT_BOOL, required=False, signed=True),
        Field("timeout", _NUMBER, required=False),
        # bounds user code (module bodies; swap + transfer hooks); not signed: it only makes an update fail sooner
        Field("hook_timeout", _NUMBER, required=False),
        Field("dry_run", _BOOL, required=False),
        Field("allow_stdlib", _OPT_BOOL, required=False, signed=True),
        # a rehearsal can only refuse more, never change what lands: not signed
        Field("rehearse", _OPT_STR, required=False),
    ),
    "rollback": (
        Field("to", _OPT_STR, required=False),
        Field("timeout", _NUMBER, required=False),
        Field("hook_timeout", _NUMBER, required=False),
    ),
    # live probes; a target that requires signed bundles requires `signature` on add (see agent/probes.py)
    "probe": (
        Field("action", _STR),
        Field("probe", (dict,), required=False),
        Field("signature", _OPT_STR, required=False),
        Field("probe_id", _STR, required=False),
        Field("since", (int,), required=False),
        Field("ids", (list, str), required=False),
    ),
}
#: Request types the agent understands. Anything else gets an error reply.
REQUEST_TYPES = frozenset(REQUESTS)
SIGNED_BUNDLE_FIELDS = tuple(f.name for f in BUNDLE if f.signed)
SIGNED_MODULE_FIELDS = tuple(f.name for f in MODULE if f.signed)
SIGNED_OPTIONS = tuple(f.name for f in REQUESTS["apply"] if f.signed)

#: keys of every apply/rollback reply as published (`apply --json`), failure included
RESULT_KEYS = ("ok", "pid", "version", "previous_version", "phases", "updated", "warnings", "error")
#: keys of `updated` in a result
UPDATED_KEYS = ("functions", "classes", "instances", "modules")
#: keys of every error object: `{"type", "message", "traceback"}`
ERROR_KEYS = ("type", "message", "traceback")
#: keys of `status --json` and of its nested rows
STATUS_KEYS = ("pid", "version", "generation", "history", "update", "threads", "tasks", "factories", "probes",
               "agent")
#: `status --json` "update": the running update (or None) and abandoned hooks that have not returned
UPDATE_KEYS = ("running", "stuck")
#: `update.running` while an update runs (`running`: the hook and instance being run, or None)
RUNNING_UPDATE_KEYS = ("action", "bundle", "phase", "seconds", "running", "held")
HISTORY_KEYS = ("name", "version", "applied_at", "rolled_back_at")
THREAD_KEYS = ("id", "name", "generation", "in_activity")
FACTORY_KEYS = ("class", "instances", "pending")
#: active live probes (`status --json` "probes")
PROBE_KEYS = ("id", "target", "state")
#: asyncio tasks and activities per generation (`status --json` "tasks")
TASK_KEYS = ("generation", "tasks", "activities")
STATUS_AGENT_KEYS = ("version", "python", "started_at", "socket")
#: keys of each `ps --json` row (`version`: the running code's version label, None without an agent)
PS_KEYS = ("pid", "user", "cmdline", "program", "agent", "agent_version", "version")


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the connection ends."""


class FrameTimeout(ProtocolError):
    """A frame did not arrive completely within its deadline (a stalled or dribbling peer)."""


class RequestError(Exception):
    """A well-formed frame whose content breaks the schema; reported as error type `kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def is_module_name(name: object) -> bool:
    """A dotted Python identifier (`pkg.mod`), nothing else: no newline, no `=`, no empty part."""
    return isinstance(name, str) and bool(name) and all(part.isidentifier() for part in name.split("."))


def _type_names(types: Tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def check_fields(message: Dict[str, Any], fields: Tuple[Field, ...], where: str) -> None:
    """Raise RequestError("BadRequest") unless every declared field has an accepted type."""
    for field in fields:
        if field.name not in message:
            if field.required:
                raise RequestError("BadRequest", f"{where}{field.name} is missing")
            continue
        value = message[field.name]
        ok = isinstance(value, field.types) and (bool in field.types or not isinstance(value, bool))
        if not ok:
            raise RequestError("BadRequest", f"{where}{field.name} must be {_type_names(field.types)}, "
                                             f"got {type(value).__name__}")


def check_bundle(bundle: Any) -> Dict[str, Any]:
    """Validate a bundle's shape, module names and sizes (not its digests or signature)."""
    if not isinstance(bundle, dict):
        raise RequestError("BadRequest", f"bundle must be dict, got {type(bundle).__name__}")
    check_fields(bundle, BUNDLE, "bundle.")
    modules = bundle["modules"]
    if not modules:
        raise RequestError("BadRequest", "bundle.modules is empty")
    seen = set()
    total = len(bundle["manifest"].encode("utf-8", "surrogatepass"))
    for i, mod in enumerate(modules):
        if not isinstance(mod, dict):
            raise RequestError("BadRequest", f"bundle.modules[{i}] must be dict, got {type(mod).__name__}")
        check_fields(mod, MODULE, f"bundle.modules[{i}].")
        if not is_module_name(mod["name"]):
            raise RequestError("BadRequest", f"bundle.modules[{i}].name {mod['name']!r} is not a dotted "
                                             f"Python module name")
        if mod["name"] in seen:
            raise RequestError("BadRequest", f"bundle.modules names a module twice ({mod['name']!r})")
        seen.add(mod["name"])
        size = len(mod["source"].encode("utf-8", "surrogatepass"))
        if size > MAX_FILE_BYTES:
            raise RequestError("BadRequest", f"bundle.modules[{i}] ({mod['name']!r}) holds {size} bytes of "
                                             f"source; the limit is {MAX_FILE_BYTES}")
        total += size
    for i, item in enumerate(bundle.get("interpose") or []):
        if not isinstance(item, dict):
            raise RequestError("BadRequest", f"bundle.interpose[{i}] must be dict, got {type(item).__name__}")
        check_fields(item, INTERPOSER, f"bundle.interpose[{i}].")
        module, _, qualname = item["target"].partition(":")
        if not is_module_name(module) or not qualname:
            raise RequestError("BadRequest", f"bundle.interpose[{i}].target {item['target']!r} is not MODULE:QUALNAME")
        total += len(item["source"].encode("utf-8", "surrogatepass"))
    if total > MAX_BUNDLE_BYTES:
        raise RequestError("BadRequest", f"the bundle holds {total} bytes; the limit is {MAX_BUNDLE_BYTES}")
    return bundle


def check_request(request: Dict[str, Any]) -> None:
    """Validate the fields of a request of a known kind (the bundle is checked by check_bundle)."""
    check_fields(request, REQUESTS[request["type"]], "")


# --- framing ---------------------------------------------------------------------


def encode(message: Dict[str, Any]) -> bytes:
    """Serialise one message into a complete frame (header included)."""
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


def decode(payload: Any) -> Dict[str, Any]:
    """Parse one frame payload; anything but a msgpack map is a protocol error."""
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not valid msgpack: {exc.__class__.__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame must hold a map, got {type(message).__name__}")
    return message


class Budget:
    """Bytes that partly received frames may hold, shared by every connection of one reader.

    `reserve(n)` either takes n bytes from the budget or refuses at once: a peer
    never waits for another peer's frame, and the total memory held in frame
    bodies that are still arriving never exceeds `limit`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            self.peak = max(self.peak, self.used)
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


def _recv_into(sock: socket.socket, view: memoryview, deadline: Optional[float]) -> int:
    """Fill `view`; returns the bytes received (less than asked only when the peer closed).

    With a `deadline` (time.monotonic()) the whole read must finish by then,
    however slowly the peer dribbles; without one the socket's timeout applies
    to each recv (and socket.timeout propagates).
    """
    got = 0
    while got < len(view):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout(f"frame not complete in time ({got} of {len(view)} bytes)")
            sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:], min(len(view) - got, 1 << 20))
        except socket.timeout:
            if deadline is None:
                raise
            raise FrameTimeout(f"frame not complete in time ({got} of {len(view)} bytes)") from None
        if not n:
            return got
        got += n
    return got


def read_frame(sock: socket.socket, budget: Optional[Budget] = None,
               frame_timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """Read one message; None means the peer closed cleanly between frames.

    The socket's timeout bounds the wait for a frame to begin. Once its first
    byte is in, `frame_timeout` (if given) bounds the whole rest of the frame,
    so a peer that dribbles one byte at a time cannot hold the reader. With a
    `budget` (the agent's side) the body must fit into it or is refused.
    """
    timeout = sock.gettimeout()
    header = bytearray(_HEADER.size)
    view = memoryview(header)
    first = sock.recv_into(view, _HEADER.size)
    if first == 0:
        return None
    deadline = time.monotonic() + frame_timeout if frame_timeout is not None else None
    try:
        got = first + _recv_into(sock, view[first:], deadline)
        if got < _HEADER.size:
            raise ProtocolError(f"connection closed mid-frame ({got} of {_HEADER.size} bytes)")
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame length {length} exceeds the {MAX_FRAME}-byte limit")
        if budget is not None and not budget.reserve(length):
            raise ProtocolError(f"frame of {length} bytes refused: frames being received already hold "
                                f"{budget.used} of {budget.limit} bytes; retry when other transfers finish")
        try:
            body = bytearray(length)
            got = _recv_into(sock, memoryview(body), deadline)
            if got < length:
                raise ProtocolError(f"connection closed mid-frame ({got} of {length} bytes)")
            return decode(body)
        finally:
            if budget is not None:
                budget.release(length)
    finally:
        sock.settimeout(timeout)


def write_frame(sock: socket.socket, message: Dict[str, Any]) -> None:
    sock.sendall(encode(message))


def error_reply(kind: str, message: str, traceback: str = "", **extra: Any) -> Dict[str, Any]:
    """Build the failure reply every request type shares."""
    reply: Dict[str, Any] = {"ok": False, "error": {"type": kind, "message": message, "traceback": traceback}}
    reply.update(extra)
    return reply


def progress(phase: str, **fields: Any) -> Dict[str, Any]:
    """A progress event streamed before a long request's final reply."""
    event = {"event": "progress", "phase": phase}
    event.update(fields)
    return event
