"""`dynupdate ps`: the Python processes this user can see, and which have an agent.

Other users' processes are untrusted: their argv is only data (the renderer
escapes it), and whatever listens on their socket may be hostile (a fake
socket that never answers or dribbles bytes). Every socket is probed in
parallel with a short deadline, so a whole `ps` takes seconds whatever the
sockets do; a probe that does not finish in time just shows no agent.
"""
from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from dynupdate_agent import wire

from . import errors, runner
from .attach import _looks_like_python
from .client import Client, agent_socket

#: seconds one probe may take: connect, then the whole `status` exchange
PROBE_TIMEOUT = 1.5
#: seconds the probes of one `ps` may take together (they run in parallel)
PS_DEADLINE = 4.0
PROBE_WORKERS = 16


def _probe(pid: int) -> Tuple[Optional[str], Optional[str]]:
    """(agent version, running code version) of pid's agent, or (None, None) if none answers in time."""
    try:
        if not os.path.exists(agent_socket(pid)):
            return None, None
    except errors.NoSuchProcess:
        return None, None  # it exited while we were listing
    try:
        with Client.connect(pid, timeout=PROBE_TIMEOUT) as client:
            data = client.status()
    except (errors.DynupdateError, OSError, ValueError):
        return None, None
    agent: Dict[str, Any] = data["agent"] if isinstance(data.get("agent"), dict) else {}
    version, code_version = agent.get("version"), data.get("version")
    return (None if version is None else str(version)), (None if code_version is None else str(code_version))


def _candidates() -> List[Dict[str, Any]]:
    import psutil

    rows = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "exe", "cmdline", "username"]):
        info = proc.info
        if info["pid"] == me:
            continue
        try:
            if not _looks_like_python(info["pid"], info["name"] or "", info["exe"] or ""):
                continue
        except Exception:  # noqa: BLE001 - a process that vanished or that we may not inspect
            continue
        cmdline = " ".join(info["cmdline"] or []) or info["name"] or ""
        rows.append({
            "pid": info["pid"],
            "user": info["username"],
            "cmdline": cmdline,
            "program": " ".join(runner.program_of(cmdline.split(" "))),  # the launcher of `dynupdate run` hidden
        })
    return rows


def python_processes() -> List[Dict[str, Any]]:
    """One row per Python process: pid, user, cmdline, program, agent, agent_version, version."""
    rows = _candidates()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="dynupdate-ps")
    try:
        futures = {pool.submit(_probe, row["pid"]): row for row in rows}
        deadline = time.monotonic() + PS_DEADLINE
        for future, row in futures.items():
            try:
                agent_version, version = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (concurrent.futures.TimeoutError, Exception):  # noqa: BLE001 - a probe never fails ps
                agent_version, version = None, None
            row.update(agent=agent_version is not None, agent_version=agent_version, version=version)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [{key: row[key] for key in wire.PS_KEYS} for row in rows]
