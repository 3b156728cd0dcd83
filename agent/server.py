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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Server:
    """Serve requests on a listening Unix socket until closed."""

    def __init__(self, path: str, dispatch: Handler) -> None:
        self.path = path
        self.dispatch = dispatch
        self.owner_pid = os.getpid()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None

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
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                log.exception("dynupdate agent: accept failed")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="dynupdate-agent-conn", daemon=True).start()

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
        except Exception:
            log.exception("dynupdate agent: connection handler failed")

    def _serve_frames(self, conn: socket.socket) -> None:
        while True:
            try:
                request = wire.read_frame(conn)
            except wire.ProtocolError as exc:
                wire.write_frame(conn, wire.error_reply("ProtocolError", str(exc)))
                return
            if request is None:
                return
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
