"""Bundle sources in `linecache`, for exactly as long as their code may run.

A bundle's modules have no file on disk, so their lines are put into
`linecache` for tracebacks and `inspect.getsource`. Kept forever, every
update would leave its sources behind (30 apply/rollback cycles of a 2 MB
module: +67 MB). A `SourceLease` holds one file's lines:

- an update that fails, or a dry run, releases its leases when the request
  ends (`settle(keep=False)`);
- an update that lands keeps them with its plan: a rollback takes them out of
  linecache (`suspend`, undone with the rollback if that fails), and when the
  plan is dropped (rolled back, or out of the undo window, history.MAX_UNDO)
  a finalizer releases the lease and its lines.

Two updates may use the same file name (the same bundle applied again): the
entry then shows the newest live lease's lines and goes only with the last.
"""
from __future__ import annotations

import linecache
import threading
import weakref
from typing import Any, Dict, List

#: re-entrant: a finalizer (release) can run inside any allocation, also one made
#: while this thread holds the lock, when the cyclic GC frees an old plan
_lock = threading.RLock()
_live: Dict[str, List["SourceLease"]] = {}  # filename -> live leases, oldest first
_pending: List["SourceLease"] = []          # created by the running request, not yet settled


class SourceLease:
    """One bundle file's lines in linecache until `release()` (or while not suspended)."""

    __slots__ = ("filename", "entry", "state", "__weakref__")
    entry: Any

    def __init__(self, filename: str, source: str) -> None:
        self.filename = filename
        self.entry = (len(source), None, source.splitlines(True), filename)  # mtime None: checkcache keeps it
        self.state = "shown"  # shown -> suspended (rolled back) -> shown (rollback undone); -> released
        with _lock:
            _pending.append(self)
            self._show()

    def keep_with(self, owner: object) -> None:
        """Release when `owner` (the update's plan) is garbage."""
        finalizer = weakref.finalize(owner, self.release)
        finalizer.atexit = False

    def suspend(self) -> None:
        """The update was rolled back: its code no longer runs, its lines leave linecache
        (they stay in this lease in case the rollback itself is undone)."""
        with _lock:
            if self.state == "shown":
                self._hide()
                self.state = "suspended"

    def resume(self) -> None:
        with _lock:
            if self.state == "suspended":
                self._show()

    def release(self) -> None:
        with _lock:
            if self.state == "shown":
                self._hide()
            self.state = "released"
            self.entry = None
            if self in _pending:
                _pending.remove(self)

    def _show(self) -> None:
        _live.setdefault(self.filename, []).append(self)
        linecache.cache[self.filename] = self.entry
        self.state = "shown"

    def _hide(self) -> None:
        leases = _live.get(self.filename, [])
        if self in leases:
            leases.remove(self)
        current = linecache.cache.get(self.filename)
        if leases:
            if current is self.entry:
                linecache.cache[self.filename] = leases[-1].entry
        else:
            _live.pop(self.filename, None)
            if current is self.entry:
                linecache.cache.pop(self.filename, None)


def settle(keep: bool) -> None:
    """End of a request: keep the new leases (the update landed) or release them."""
    with _lock:
        leases = list(_pending)
        _pending.clear()
    if not keep:
        for lease in leases:
            lease.release()

