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
import time
from typing import Any, Callable, Dict, Optional

from dynupdate_agent import paths, wire

from . import errors

#: seconds for connecting and for each frame of a quick request (hello, status)
DEFAULT_TIMEOUT = 10.0
ProgressCallback = Callable[[Dict[str, Any]], None]
_UCRED = struct.Struct("3i")


def agent_socket(pid: int, uid: Optional[int] = None) -> str:
    """Where the agent of `pid` listens (the target's uid decides the folder)."""
    if uid is None:
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            raise errors.NoSuchProcess(f"no process with pid {pid}", hint="check the pid with `dynupdate ps`") from None
    return paths.socket_path(pid, uid)


class Client:
    """One connection to one agent. Requests are sequential on a connection."""

    def __init__(self, sock: socket.socket, pid: int, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._sock = sock
        #: the deadline for connecting, for each frame, and for a whole quick request
        self.timeout = timeout
        self.pid = pid
        self.path = path
        self._next_id = 1

    @classmethod
    def connect(cls, pid: int, *, timeout: float = DEFAULT_TIMEOUT) -> "Client":
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
        return cls(sock, pid, path, timeout)

    def close(self) -> None:
        self._sock.close()

    def abandon(self) -> None:
        """Tell the agent we are gone (half-close) while still reading its final reply.

        The agent abandons an update it has not recorded yet, then answers with
        the outcome: so a Ctrl-C can report what really happened in the target.
        """
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, kind: str, *, on_progress: Optional[ProgressCallback] = None,
                io_timeout: Optional[float] = None, total_timeout: Optional[float] = None,
                **fields: Any) -> Dict[str, Any]:
        """Send a request and return the final reply; raises on an error reply.

        Progress events streamed before the reply go to `on_progress`. Every
        wait has a deadline, whatever the other end does: `io_timeout` (default:
        the connect timeout) bounds each frame from its first byte to its last,
        so an agent that dribbles bytes cannot hold the CLI, and `total_timeout`
        (if given) bounds the whole exchange.
        """
        message = dict(fields, type=kind, id=self._next_id)
        self._next_id += 1
        per_frame = io_timeout if io_timeout is not None else self.timeout
        deadline = time.monotonic() + total_timeout if total_timeout is not None else None
        try:
            self._sock.settimeout(per_frame)
            wire.write_frame(self._sock, message)
            while True:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout()
                    self._sock.settimeout(min(per_frame, remaining))
                reply = wire.read_frame(self._sock, frame_timeout=min(per_frame, remaining)
                                        if deadline is not None else per_frame)
                if reply is None:
                    raise errors.TargetUnreachable(f"the agent of pid {self.pid} closed the connection",
                                                   hint="the target may have exited; check it is still running")
                if reply.get("event") == "progress":
                    if on_progress is not None:
                        on_progress(reply)
                    continue
                break
        except (socket.timeout, wire.FrameTimeout):
            raise errors.TargetUnreachable(f"the agent of pid {self.pid} did not answer in time") from None
        except wire.ProtocolError as exc:
            raise errors.ProtocolMismatch(f"unreadable reply from the agent of pid {self.pid}: {exc}") from None
        except OSError as exc:
            raise errors.TargetUnreachable(f"lost the connection to the agent of pid {self.pid}: {exc}") from None
        if not reply.get("ok"):
            raise errors.from_remote(reply.get("error") or {}, reply)
        return reply

    def hello(self) -> Dict[str, Any]:
        reply = self.request("hello", total_timeout=self.timeout)
        if reply.get("protocol_version") != wire.PROTOCOL_VERSION:
            raise errors.ProtocolMismatch(
                f"the agent of pid {self.pid} speaks protocol {reply.get('protocol_version')}, "
                f"this client {wire.PROTOCOL_VERSION}", hint="use the same dynupdate version on both sides")
        return reply

    def status(self) -> Dict[str, Any]:
        return self.request("status", total_timeout=self.timeout)

    def apply(self, bundle: Dict[str, Any], *, lazy: Optional[bool] = None, timeout: float = 10.0,
              dry_run: bool = False, on_progress: Optional[ProgressCallback] = None,
              allow_stdlib: bool = False, rehearse: Optional[str] = None,
              hook_timeout: Optional[float] = None) -> Dict[str, Any]:
        """Apply a loaded bundle (see dynupdate.bundle.load_bundle).

        `rehearse`: "first" runs the update on a forked copy before the real one,
        "only" stops after the rehearsal. `hook_timeout` bounds the new module
        bodies and, separately, the swap with its state transfer (agent default 10 s).
        """
        extra: Dict[str, Any] = {"allow_stdlib": True} if allow_stdlib else {}  # sent only when asked for
        if rehearse:
            extra["rehearse"] = rehearse
        if hook_timeout is not None:
            extra["hook_timeout"] = float(hook_timeout)
        hooks = 2 * (hook_timeout or 10.0)
        return self.request("apply", bundle=bundle, lazy=lazy, timeout=float(timeout), dry_run=dry_run,
                            on_progress=on_progress,
                            io_timeout=timeout + hooks + 60 + (timeout + hooks + 30 if rehearse else 0), **extra)

    def rollback(self, *, to: Optional[str] = None, timeout: float = 10.0,
                 on_progress: Optional[ProgressCallback] = None,
                 hook_timeout: Optional[float] = None) -> Dict[str, Any]:
        extra = {} if hook_timeout is None else {"hook_timeout": float(hook_timeout)}
        return self.request("rollback", to=to, timeout=float(timeout), on_progress=on_progress,
                            io_timeout=timeout + 2 * (hook_timeout or 10.0) + 60, **extra)

    def probe(self, action: str, **fields: Any) -> Dict[str, Any]:
        """A live-probe request: action add (probe=spec, signature), list, show (probe_id, since), remove (ids)."""
        return self.request("probe", action=action, **fields)
