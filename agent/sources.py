"""Bundle sources in `linecache`, for exactly as long as their code may run.

A bundle's modules have no file on disk, so their lines are put into
`linecache` for tracebacks and `inspect.getsource`. Kept forever, every
update would leave its sources behind (30 apply/rollback cycles of a 2 MB
module: +67 MB). A `SourceLease` holds one file's lines:

- an update that fails, or a dry run, releases its leases when the request
  ends (`settle(keep=False)`);
- an update that lands keeps them with its plan: when the plan is dropped
  (rolled back, or out of the undo window, history.MAX_UNDO) the lease is
  released by a finalizer.

Two updates may use the same file name (the same bundle applied again): the
entry then shows the newest live lease's lines and goes only with the last.
"""
from __future__ import annotations

import linecache
import threading
import weakref
from typing import Dict, List

_lock = threading.Lock()
_live: Dict[str, List["SourceLease"]] = {}  # filename -> live leases, oldest first
_pending: List["SourceLease"] = []          # created by the running request, not yet settled


class SourceLease:
    """One bundle file's lines in linecache until `release()`."""

    __slots__ = ("filename", "entry", "released", "__weakref__")

    def __init__(self, filename: str, source: str) -> None:
        self.filename = filename
        self.entry = (len(source), None, source.splitlines(True), filename)  # mtime None: checkcache keeps it
        self.released = False
        with _lock:
            _live.setdefault(filename, []).append(self)
            _pending.append(self)
            linecache.cache[filename] = self.entry

    def keep_with(self, owner: object) -> None:
        """Release when `owner` (the update's plan) is garbage."""
        finalizer = weakref.finalize(owner, self.release)
        finalizer.atexit = False

    def release(self) -> None:
        with _lock:
            if self.released:
                return
            self.released = True
            leases = _live.get(self.filename, [])
            if self in leases:
                leases.remove(self)
            if self in _pending:
                _pending.remove(self)
            current = linecache.cache.get(self.filename)
            if leases:
                if current is self.entry:
                    linecache.cache[self.filename] = leases[-1].entry
            else:
                _live.pop(self.filename, None)
                if current is self.entry or current is None:
                    linecache.cache.pop(self.filename, None)


def settle(keep: bool) -> None:
    """End of a request: keep the new leases (the update landed) or release them."""
    with _lock:
        leases = list(_pending)
        _pending.clear()
    if not keep:
        for lease in leases:
            lease.release()

