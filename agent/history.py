"""The process's version history: what was applied, when, and how to undo it.

Only the most recent `MAX_UNDO` updates keep the objects needed to roll them
back; older entries stay in the history as labels. This bounds the memory an
often-patched process spends on old code.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

MAX_UNDO = 32
BASE_VERSION = "base"


@dataclass
class Entry:
    name: str
    version: str
    applied_at: float
    summary: Dict[str, Any] = field(default_factory=dict)
    undo: Any = None  # the engine's record of how to roll this update back


_lock = threading.Lock()
_entries: List[Entry] = []


def current_version() -> str:
    """The version label of the code running now ("base" until an update lands)."""
    with _lock:
        return _entries[-1].version if _entries else BASE_VERSION


def push(entry: Entry) -> None:
    with _lock:
        _entries.append(entry)
        rollbackable = [e for e in _entries if e.undo is not None]
        for old in rollbackable[:-MAX_UNDO]:
            old.undo = None


def pop() -> Entry:
    with _lock:
        return _entries.pop()


def entries() -> List[Entry]:
    with _lock:
        return list(_entries)


def describe() -> List[Dict[str, Any]]:
    """The history as `status` reports it, oldest first, starting at base."""
    rows = [{"name": BASE_VERSION, "version": BASE_VERSION, "applied_at": None}]
    for e in entries():
        rows.append({"name": e.name, "version": e.version, "applied_at": e.applied_at,
                     "rollback": e.undo is not None})
    return rows


def now() -> float:
    return time.time()
