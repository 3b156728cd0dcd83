"""Get a client connected to the agent of a pid: use the running agent, else inject one.

Success is confirmed only by a `hello` over the agent's socket, never by the
injector's exit status (gdb and pyrasite cannot tell whether the code ran).
"""
from __future__ import annotations

import os
import time
from typing import Callable

from . import errors
from .client import Client, agent_socket

Notify = Callable[[str], None]


def _agent_dir() -> str:
    import dynupdate_agent

    return os.path.dirname(os.path.abspath(dynupdate_agent.__file__))


def _msgpack_dir() -> str:
    import msgpack

    return os.path.dirname(os.path.dirname(os.path.abspath(msgpack.__file__)))


def bootstrap_command(key_file: str | None = None) -> str:
    """The one statement injected into the target: start a thread that runs bootstrap.py.

    It binds no names in the target's namespaces and touches neither sys.path
    nor sys.modules; the heavy lifting happens in the new thread.
    """
    path = os.path.join(_agent_dir(), "bootstrap.py")
    return (
        "__import__('_thread').start_new_thread(lambda p, m, k: exec(compile(open(p).read(), p, 'exec'), "
        "{'__name__': '__dynupdate_bootstrap__', '__file__': p, 'MSGPACK_DIR': m, 'KEY_FILE': k}), "
        f"({path!r}, {_msgpack_dir()!r}, {key_file!r}))"
    )


def check_process(pid: int) -> None:
    """Fail early, with a useful message, for pids that cannot host an agent."""
    import psutil

    try:
        proc = psutil.Process(pid)
        name = proc.name()
        try:
            exe = proc.exe()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            exe = ""
    except psutil.NoSuchProcess:
        raise errors.NoSuchProcess(f"no process with pid {pid}", hint="check the pid with `dynupdate ps`") from None
    except psutil.AccessDenied:
        raise errors.AccessDenied(f"not allowed to inspect pid {pid}",
                                  hint="run dynupdate as the target's user or as root") from None
    if not _looks_like_python(pid, name, exe):
        raise errors.NotPython(f"pid {pid} ({name}) is not a Python process",
                               hint="`dynupdate ps` lists the Python processes you can update")
    check_version(pid)


def check_version(pid: int) -> None:
    """Refuse a target on a CPython the agent cannot run on (< 3.9), from /proc only, before any injection."""
    from . import inject

    try:
        inject.check_target(pid)
    except inject.InjectionError as exc:
        if exc.reason == "unsupported-python":
            raise errors.UnsupportedPython(str(exc), hint="upgrade the target's interpreter, or restart it under "
                                           f"CPython >= {inject.MIN_PYTHON[0]}.{inject.MIN_PYTHON[1]}") from None
        if exc.reason != "permission":  # may still reach an agent it started itself; connect decides
            raise _map_injection_error(pid, exc) from None


def _looks_like_python(pid: int, name: str, exe: str) -> bool:
    if "python" in name.lower() or "python" in os.path.basename(exe).lower():
        return True
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return "libpython" in fh.read()
    except OSError:
        return False


def try_connect(pid: int) -> Client | None:
    """A connected client if an agent already listens for pid, else None."""
    if not os.path.exists(agent_socket(pid)):
        return None
    try:
        client = Client.connect(pid)
    except errors.TargetUnreachable:
        return None
    try:
        client.hello()
    except errors.DynupdateError:
        client.close()
        raise
    return client


def _wait_for_agent(pid: int, deadline: float, extra_hint: str = "") -> Client:
    while time.monotonic() < deadline:
        client = try_connect(pid)
        if client is not None:
            return client
        time.sleep(0.02)
    raise errors.InjectionFailed(
        f"the agent did not come up in pid {pid} after injection",
        hint=extra_hint + "check the target's log for 'dynupdate agent failed to start', or start it with "
        "`dynupdate run`")


def target_ids(pid: int) -> tuple[int, set[int]] | None:
    """(effective uid, every gid) of pid from /proc, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[1])
        gids = {int(fields["Gid"].split()[1])} | {int(g) for g in fields.get("Groups", "").split()}
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return uid, gids


def blocked_for(path: str, uid: int, gids: set[int]) -> str | None:
    """The first folder uid cannot enter, or the file itself if it cannot read it; None when readable.

    Judged by owner/group/other mode bits along the real path (ACLs aside): enough to tell a
    root CLI installed under a private home folder (0700) from one the target's user can load.
    """
    if uid == 0:
        return None
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for depth in range(1, len(parts) + 1):
        current = os.sep.join(parts[:depth]) or os.sep
        try:
            st = os.stat(current)
        except OSError:
            return current
        if st.st_uid == uid:
            bits = st.st_mode >> 6
        elif st.st_gid in gids:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        need = 4 if current == real else 1
        if not bits & need:
            return current
    return None


def _check_target_can_read_agent(pid: int) -> None:
    """Refuse before injecting when the target's user cannot read the agent.

    The CLI's msgpack need not be readable: the agent then uses its own
    standard-library codec (dynupdate_agent._minipack).
    """
    ids = target_ids(pid)
    if ids is None:
        return
    agent_dir = _agent_dir()
    for name in ("bootstrap.py", "__init__.py"):
        blocked = blocked_for(os.path.join(agent_dir, name), *ids)
        if blocked:
            raise errors.InjectionFailed(
                f"pid {pid} runs as uid {ids[0]}, which cannot read dynupdate's agent ({blocked})",
                hint="install dynupdate where that user can read it (not under a private home folder), "
                "or start the program with `dynupdate run`")


def inject_agent(pid: int, *, timeout: float = 20.0, key_file: str | None = None) -> Client:
    """Inject the agent with gdb at a safe point, then wait for its hello."""
    from . import inject

    deadline = time.monotonic() + timeout
    _check_target_can_read_agent(pid)
    try:
        inject.inject(pid, bootstrap_command(key_file), timeout=timeout)
    except inject.InjectionError as exc:
        raise _map_injection_error(pid, exc) from None
    return _wait_for_agent(pid, max(deadline, time.monotonic() + 5.0))


def _map_injection_error(pid: int, exc: Exception) -> errors.TargetUnreachable:
    reason = getattr(exc, "reason", "failed")
    cls = {
        "gdb-missing": errors.GdbMissing,
        "permission": errors.AccessDenied,
        "no-process": errors.NoSuchProcess,
        "not-python": errors.NotPython,
        "unsupported-python": errors.UnsupportedPython,
    }.get(reason, errors.InjectionFailed)
    return cls(f"could not inject the agent into pid {pid}: {exc}",
               hint="start the program with `dynupdate run` instead, or see README: Troubleshooting")


def connect(pid: int, *, inject: bool = True, notify: Notify | None = None,
            inject_timeout: float = 20.0) -> tuple[Client, bool]:
    """(client, injected): connect to the agent of pid, injecting it first if allowed.

    An agent that answers is the common case and is tried first: the process
    checks (psutil, the injector's /proc reading) are only needed, and only
    imported, when there is none.
    """
    client = try_connect(pid)
    if client is not None:
        return client, False
    check_process(pid)
    if not inject:
        raise errors.TargetUnreachable(f"no dynupdate agent runs in pid {pid}",
                                       hint=f"run `dynupdate attach --pid {pid}` first")
    if notify:
        notify(f"no agent in pid {pid}; injecting one with gdb")
    return inject_agent(pid, timeout=inject_timeout), True
