"""The process's version history: what was applied, when, and how to undo it.

Only the most recent `MAX_UNDO` updates keep the objects needed to roll them
back; older entries stay in the history as labels. This bounds the memory an
often-patched process spends on old code. A rolled-back update stays in the
history, marked with when it was rolled back (the last `MAX_ROLLED_BACK`), so
`status` can tell that a version was once live.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

MAX_UNDO = 32
#: rolled-back entries kept as records (labels and times only) beyond the active ones
MAX_ROLLED_BACK = 256
BASE_VERSION = "base"


@dataclass
class Entry:
    name: str
    version: str
    applied_at: float
    summary: Dict[str, Any] = field(default_factory=dict)
    undo: Any = None  # the engine's record of how to roll this update back
    rolled_back_at: Optional[float] = None


_lock = threading.Lock()
_entries: List[Entry] = []  # the active stack: what the process runs now is the last one
_log: List[Entry] = []  # every update ever applied, in order, rolled-back ones included


def current_version() -> str:
    """The version label of the code running now ("base" until an update lands)."""
    with _lock:
        return _entries[-1].version if _entries else BASE_VERSION


def push(entry: Entry) -> None:
    with _lock:
        _entries.append(entry)
        if any(e is entry for e in _log):  # re-applied after an undone rollback: active again
            entry.rolled_back_at = None
        else:
            _log.append(entry)
            for old in _log:  # a new update: rolled-back versions can never be rolled back again
                if old.rolled_back_at is not None:
                    old.undo = None
        rollbackable = [e for e in _entries if e.undo is not None]
        for old in rollbackable[:-MAX_UNDO]:
            old.undo = None
        rolled_back = [e for e in _log if e.rolled_back_at is not None]
        for old in rolled_back[:-MAX_ROLLED_BACK]:
            _log.remove(old)


def pop() -> Entry:
    """Take the newest update off the active stack; it stays in the history marked rolled back."""
    with _lock:
        entry = _entries.pop()
        entry.rolled_back_at = time.time()
        return entry


def entries() -> List[Entry]:
    """The active updates, oldest first (what rollback can undo)."""
    with _lock:
        return list(_entries)


def describe() -> List[Dict[str, Any]]:
    """The history as `status` reports it, oldest first, starting at base; rolled-back updates included."""
    rows: List[Dict[str, Any]] = [{"name": BASE_VERSION, "version": BASE_VERSION, "applied_at": None,
                                   "rolled_back_at": None}]
    with _lock:
        log = list(_log)
    for e in log:
        rows.append({"name": e.name, "version": e.version, "applied_at": e.applied_at,
                     "rollback": e.undo is not None and e.rolled_back_at is None,
                     "rolled_back_at": e.rolled_back_at})
    return rows


def now() -> float:
    return time.time()
