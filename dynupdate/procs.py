"""`dynupdate ps`: the Python processes this user can see, and which have an agent."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from . import errors
from .attach import _looks_like_python
from .client import Client, agent_socket


def _agent_version(pid: int) -> Any:
    try:
        if not os.path.exists(agent_socket(pid)):
            return None
    except errors.NoSuchProcess:
        return None  # it exited while we were listing
    try:
        with Client.connect(pid, timeout=1.0) as client:
            return client.hello().get("agent_version")
    except errors.DynupdateError:
        return None


def python_processes() -> List[Dict[str, Any]]:
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
        except Exception:
            continue
        version = _agent_version(info["pid"])
        rows.append({
            "pid": info["pid"],
            "user": info["username"],
            "cmdline": " ".join(info["cmdline"] or []) or info["name"],
            "agent": version is not None,
            "agent_version": version,
        })
    return rows
