"""The agent's lifetime in this process: start once, survive fork, clean up at exit."""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, Optional

from . import forking, generations, paths, wire
from .server import Peer, Server

log = logging.getLogger("dynupdate.agent")

AGENT_VERSION = "0.1.0"


class AgentStartError(RuntimeError):
    """The agent could not start (for example, an unsafe socket folder)."""


class _Agent:
    def __init__(self, server: Server, key: Optional[bytes]) -> None:
        self.server = server
        self.key = key
        self.pid = os.getpid()
        self.started_at = time.time()


_agent: Optional[_Agent] = None
_lock = threading.RLock()
_fork_hook_installed = False


def _read_key(key_file: Optional[str]) -> Optional[bytes]:
    key_file = key_file or os.environ.get("DYNUPDATE_KEY_FILE")
    if not key_file:
        return None
    from . import signing

    try:
        return signing.read_key(key_file)
    except signing.KeyFileError as exc:
        raise AgentStartError(str(exc)) from None


def start(key_file: Optional[str] = None) -> str:
    """Start the agent if it is not running; returns the socket path.

    Idempotent and cheap to call again. With `key_file` (or DYNUPDATE_KEY_FILE
    in the environment) only bundles signed with that key are accepted.
    """
    global _agent
    with _lock:
        if _agent is not None and _agent.pid == os.getpid():
            return _agent.server.path
        try:
            key = _read_key(key_file)
            directory = paths.ensure_dir()
        except (paths.SocketDirError, OSError) as exc:
            raise AgentStartError(str(exc)) from None
        server = Server(os.path.join(directory, f"{os.getpid()}.sock"), dispatch)
        try:
            server.bind()
        except OSError as exc:
            server.close()
            raise AgentStartError(f"cannot listen on {server.path}: {exc.strerror or exc}") from None
        generations.install()
        _agent = _Agent(server, key)
        server.start()
        _install_process_hooks()
        log.debug("dynupdate agent listening on %s", server.path)
        return server.path


def running() -> bool:
    return _agent is not None and _agent.pid == os.getpid()


def signing_key() -> Optional[bytes]:
    return _agent.key if _agent is not None else None


def stop() -> None:
    """Stop serving and remove the socket (also runs at interpreter exit)."""
    global _agent
    with _lock:
        if _agent is not None:
            _agent.server.close()
            _agent = None


def _after_fork_in_child() -> None:
    """A forked child gets its own agent under its own pid; the parent's is untouched.

    First the parent's update in progress, if any, is cleared from the child
    (forking.py): the child's agent starts free, on one whole version.
    """
    global _agent, _lock
    forking._after_fork_in_child()
    _lock = threading.RLock()
    old = _agent
    _agent = None
    generations.reset_after_fork()
    if old is None:
        return
    old.server.abandon()
    if forking.is_copy():  # a rehearsal's throwaway copy: no agent, no socket
        return
    try:
        start()
    except Exception:
        log.exception("dynupdate agent: could not start in the forked child")


def _install_process_hooks() -> None:
    global _fork_hook_installed
    if _fork_hook_installed:
        return
    atexit.register(stop)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=forking._before_fork, after_in_parent=forking._after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
    _fork_hook_installed = True


# --- request dispatch -------------------------------------------------------

def hello() -> Dict[str, Any]:
    agent = _agent
    return {
        "ok": True,
        "agent_version": AGENT_VERSION,
        "protocol_version": wire.PROTOCOL_VERSION,
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "pid": os.getpid(),
        "executable": sys.executable,
        "started_at": agent.started_at if agent else None,
        "socket": agent.server.path if agent else None,
        "signed_bundles_required": bool(agent and agent.key),
    }


def dispatch(request: Dict[str, Any], peer: Peer) -> Dict[str, Any]:
    kind = request["type"]
    if kind in ("hello", "ping"):
        return hello()
    if kind == "status":
        from .status import status

        return status(hello())
    if kind == "probe":
        from . import probes

        try:
            wire.check_request(request)
            return probes.handle(request, signing_key())
        except (probes.ProbeError, wire.RequestError) as exc:
            return wire.error_reply(exc.kind, exc.message)
    from . import updater

    if kind == "apply":
        return updater.handle_apply(request, peer, signing_key())
    if kind == "rollback":
        return updater.handle_rollback(request, peer, signing_key())
    return wire.error_reply("ProtocolError", f"unknown request type {kind!r}")
