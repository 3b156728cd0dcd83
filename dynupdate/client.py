"""Talk to a running agent: connect, send one request, stream its progress.

Scripts can use this directly:

    from dynupdate import Client
    with Client.connect(pid) as c:
        print(c.status()["version"])
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Any, Callable, Dict, Optional

from dynupdate_agent import paths, wire

from . import errors

ProgressCallback = Callable[[Dict[str, Any]], None]
_UCRED = struct.Struct("3i")


def agent_socket(pid: int, uid: Optional[int] = None) -> str:
    """Where the agent of `pid` listens (the target's uid decides the folder)."""
    if uid is None:
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            raise errors.NoSuchProcess(f"no process with pid {pid}") from None
    return paths.socket_path(pid, uid)


class Client:
    """One connection to one agent. Requests are sequential on a connection."""

    def __init__(self, sock: socket.socket, pid: int, path: str) -> None:
        self._sock = sock
        self.pid = pid
        self.path = path
        self._next_id = 1

    @classmethod
    def connect(cls, pid: int, *, timeout: Optional[float] = 10.0) -> "Client":
        """Connect to the agent of `pid`; raises TargetUnreachable if none listens."""
        path = agent_socket(pid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise errors.TargetUnreachable(
                f"no dynupdate agent listens for pid {pid} (expected {path})",
                hint=f"run `dynupdate attach --pid {pid}`, or start the program with `dynupdate run`") from None
        except PermissionError:
            sock.close()
            raise errors.AccessDenied(f"permission denied on {path}",
                                      hint="run dynupdate as the target's user or as root") from None
        except OSError as exc:
            sock.close()
            raise errors.TargetUnreachable(f"cannot connect to {path}: {exc}") from None
        # Whoever could create that folder could also listen there: talk only to the target itself
        # (the agent listens from inside it), never to an impostor that would receive our bundles.
        peer_pid, peer_uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if peer_pid != pid:
            sock.close()
            raise errors.TargetUnreachable(
                f"{path} is served by pid {peer_pid} (uid {peer_uid}), not by pid {pid}; refusing to talk to it",
                hint=f"another user may have created {os.path.dirname(path)}; remove it (as root)")
        return cls(sock, pid, path)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, kind: str, *, on_progress: Optional[ProgressCallback] = None,
                io_timeout: Optional[float] = None, **fields: Any) -> Dict[str, Any]:
        """Send a request and return the final reply; raises on an error reply.

        Progress events streamed before the reply go to `on_progress`;
        `io_timeout` bounds the wait for each frame, not the whole request.
        """
        message = dict(fields, type=kind, id=self._next_id)
        self._next_id += 1
        if io_timeout is not None:
            self._sock.settimeout(io_timeout)
        try:
            wire.write_frame(self._sock, message)
            while True:
                reply = wire.read_frame(self._sock)
                if reply is None:
                    raise errors.TargetUnreachable(f"the agent of pid {self.pid} closed the connection",
                                                   hint="the target may have exited; check it is still running")
                if reply.get("event") == "progress":
                    if on_progress is not None:
                        on_progress(reply)
                    continue
                break
        except socket.timeout:
            raise errors.TargetUnreachable(f"the agent of pid {self.pid} did not answer in time") from None
        except wire.ProtocolError as exc:
            raise errors.ProtocolMismatch(f"unreadable reply from the agent of pid {self.pid}: {exc}") from None
        except OSError as exc:
            raise errors.TargetUnreachable(f"lost the connection to the agent of pid {self.pid}: {exc}") from None
        if not reply.get("ok"):
            raise errors.from_remote(reply.get("error") or {}, reply)
        return reply

    def hello(self) -> Dict[str, Any]:
        reply = self.request("hello")
        if reply.get("protocol_version") != wire.PROTOCOL_VERSION:
            raise errors.ProtocolMismatch(
                f"the agent of pid {self.pid} speaks protocol {reply.get('protocol_version')}, "
                f"this client {wire.PROTOCOL_VERSION}", hint="use the same dynupdate version on both sides")
        return reply

    def status(self) -> Dict[str, Any]:
        return self.request("status")

    def apply(self, bundle: Dict[str, Any], *, lazy: Optional[bool] = None, timeout: float = 10.0,
              dry_run: bool = False, on_progress: Optional[ProgressCallback] = None,
              hook_timeout: Optional[float] = None) -> Dict[str, Any]:
        """Apply a loaded bundle (see dynupdate.bundle.load_bundle)."""
        extra = {} if hook_timeout is None else {"hook_timeout": float(hook_timeout)}
        return self.request("apply", bundle=bundle, lazy=lazy, timeout=float(timeout), dry_run=dry_run,
                            on_progress=on_progress, io_timeout=timeout + 2 * (hook_timeout or 10.0) + 60, **extra)

    def rollback(self, *, to: Optional[str] = None, timeout: float = 10.0,
                 on_progress: Optional[ProgressCallback] = None,
                 hook_timeout: Optional[float] = None) -> Dict[str, Any]:
        extra = {} if hook_timeout is None else {"hook_timeout": float(hook_timeout)}
        return self.request("rollback", to=to, timeout=float(timeout), on_progress=on_progress,
                            io_timeout=timeout + 2 * (hook_timeout or 10.0) + 60, **extra)
