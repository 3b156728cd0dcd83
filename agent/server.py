"""The agent's socket server: accept, check the peer, read frames, dispatch.

One daemon thread (`dynupdate-agent`) accepts; each connection is served by its
own daemon thread so a long update never blocks `status`. Nothing here may
raise into the target: every failure becomes an error frame or a log record.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import traceback
from typing import Any, Callable, Dict, Optional

from . import wire

log = logging.getLogger("dynupdate.agent")


class Peer:
    """What a request handler may do with its client: stream events, check it is still there."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def send(self, event: Dict[str, Any]) -> None:
        """Stream one event; raises OSError once the client has gone."""
        wire.write_frame(self._conn, event)

    def alive(self) -> bool:
        """False once the client closed its end (a killed CLI must abort an update)."""
        try:
            data = self._conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return bool(data)


#: handler(request, peer) -> reply dict
Handler = Callable[[Dict[str, Any], Peer], Dict[str, Any]]

_UCRED = struct.Struct("3i")


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(creds)
    return uid


#: connections served at once; one more is told so and closed (a CLI needs one at a time)
MAX_CONNECTIONS = 64
#: bytes all connections together may hold in frames still arriving (two maximal bundles)
MAX_PENDING_BYTES = 2 * wire.MAX_FRAME
#: seconds a connection may stay idle between requests before the agent closes it
IDLE_TIMEOUT = 600.0
#: seconds a reply or progress event may take to be written (the client stopped reading)
SEND_TIMEOUT = 30
_SEND_TIMEOUT = struct.pack("ll", SEND_TIMEOUT, 0)
#: longest pause of the accept loop after a failure (no fd, no thread): it then tries again
MAX_BACKOFF = 1.0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Server:
    """Serve requests on a listening Unix socket until closed.

    Bounded by construction: at most MAX_CONNECTIONS connection threads, at
    most MAX_PENDING_BYTES held in partly received frames, every frame complete
    within wire.FRAME_DEADLINE, and an accept loop that outlives any failure
    (no thread or fd available: the connection is refused, the loop backs off
    and serves again when resources come back). It reports only via logging.
    """

    def __init__(self, path: str, dispatch: Handler) -> None:
        self.path = path
        self.dispatch = dispatch
        self.owner_pid = os.getpid()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.budget = wire.Budget(MAX_PENDING_BYTES)
        self._degraded = ""  # why the last connection was refused for lack of resources ("" when fine)

    def bind(self) -> None:
        """Bind under a temporary name, make it 0600, listen, then rename it into place.

        The process-wide umask is never touched: bind() releases the GIL, so an
        application thread creating a file meanwhile would get our umask. The
        folder is already private (0700, see paths.py), so nobody else can reach
        the socket before the chmod, and clients only ever see the final path
        once it is 0600 and listening (rename is atomic).
        """
        directory, name = os.path.split(self.path)
        staging = os.path.join(directory, f".{name}.{threading.get_ident()}.tmp")
        _unlink(staging)
        try:
            self._sock.bind(staging)
            os.chmod(staging, 0o600)
            self._sock.listen(16)
            os.replace(staging, self.path)
        except BaseException:
            _unlink(staging)
            raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="dynupdate-agent", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        backoff = 0.0
        while not self._closed.is_set():
            try:
                ok = self._accept_one()
            except BaseException:  # noqa: BLE001 - this loop must never die
                if self._closed.is_set():
                    return
                ok = False
                self._trouble("accept loop failed", exc_info=True)
            if ok:
                backoff = 0.0
                continue
            backoff = min(MAX_BACKOFF, backoff * 2 or 0.01)
            self._closed.wait(backoff)

    def _accept_one(self) -> bool:
        """Accept and hand off one connection; False when resources ran out (the caller backs off)."""
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:
            if self._closed.is_set():
                return True
            self._trouble(f"accept failed: {exc}")
            return False
        if not self._slots.acquire(blocking=False):
            self._refuse(conn, "TooManyConnections",
                         f"this agent already serves {MAX_CONNECTIONS} connections; close idle clients "
                         f"and try again")
            return True
        try:
            threading.Thread(target=self._serve, args=(conn,), name="dynupdate-agent-conn", daemon=True).start()
        except BaseException as exc:  # noqa: BLE001 - e.g. "can't start new thread" under a thread limit
            self._slots.release()
            self._refuse(conn, "ResourceExhausted",
                         f"the target could not start a thread for this connection ({exc}); "
                         f"try again when it has fewer threads")
            self._trouble(f"cannot start a connection thread: {exc}")
            return False
        if self._degraded:
            log.warning("dynupdate agent: serving connections again (after: %s)", self._degraded)
            self._degraded = ""
        return True

    def _trouble(self, what: str, exc_info: bool = False) -> None:
        """Log a resource problem once per episode, not once per refused connection."""
        if not self._degraded:
            log.error("dynupdate agent: %s; refusing connections until resources come back", what,
                      exc_info=exc_info)
        self._degraded = what

    @staticmethod
    def _refuse(conn: socket.socket, kind: str, message: str) -> None:
        """Tell one client why it is refused, without ever blocking the accept loop."""
        try:
            conn.setblocking(False)
            conn.send(wire.encode(wire.error_reply(kind, message)))
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                uid = peer_uid(conn)
                if uid not in (os.getuid(), 0):
                    wire.write_frame(conn, wire.error_reply(
                        "PermissionDenied",
                        f"uid {uid} may not control this process (owner uid {os.getuid()} or root only)"))
                    return
                self._serve_frames(conn)
        except (OSError, wire.ProtocolError):
            pass  # the client went away; nothing to tell anyone
        except BaseException:  # noqa: BLE001 - a connection thread never reaches the target's stderr
            log.exception("dynupdate agent: connection handler failed")
        finally:
            self._slots.release()

    def _serve_frames(self, conn: socket.socket) -> None:
        while True:
            conn.settimeout(IDLE_TIMEOUT)
            try:
                request = wire.read_frame(conn, self.budget, frame_timeout=wire.FRAME_DEADLINE)
            except socket.timeout:
                return  # idle for IDLE_TIMEOUT: free the slot
            except wire.ProtocolError as exc:
                wire.write_frame(conn, wire.error_reply("ProtocolError", str(exc)))
                return
            if request is None:
                return
            # blocking again (Peer.alive peeks without waiting), but a client that stops reading
            # cannot stall a reply or a progress event: the kernel send timeout ends the write
            conn.settimeout(None)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SEND_TIMEOUT)
            kind = request.get("type")
            if not isinstance(kind, str) or kind not in wire.REQUEST_TYPES:
                wire.write_frame(conn, wire.error_reply(
                    "ProtocolError", f"unknown request type {kind!r}; expected one of {sorted(wire.REQUEST_TYPES)}"))
                return
            wire.write_frame(conn, self._call(request, conn))

    def _call(self, request: Dict[str, Any], conn: socket.socket) -> Dict[str, Any]:
        try:
            reply = self.dispatch(request, Peer(conn))
        except Exception as exc:
            reply = wire.error_reply(type(exc).__name__, str(exc), traceback.format_exc())
        if "id" in request:
            reply.setdefault("id", request["id"])
        return reply

    def close(self) -> None:
        """Stop accepting and remove the socket file (only the owning process may)."""
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in our thread
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        if os.getpid() == self.owner_pid:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def abandon(self) -> None:
        """In a forked child: drop the parent's listening socket without unlinking it."""
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass
