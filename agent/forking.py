"""Fork safety: a child forked while an update runs gets one whole version, never half.

Pre-fork servers (gunicorn, uWSGI) fork workers at any moment, also while the
master is being updated. A child inherits a copy of memory but only the
forking thread, so whatever the update was doing is frozen mid-way in it:
mediator trampolines whose held calls would wait forever, a locked update
lock, half-swapped code. This module makes that impossible:

- The swap/transfer critical section (safe point reached -> update recorded
  and held calls released) holds `_critical`. `os.fork()` waits for it, for at
  most `FORK_WAIT` seconds, so a fork lands either before the swap (the child
  runs the complete old version) or after it (the complete new version).
- In the child, every trace of the running update is removed: trampolines of a
  safe-point wait are taken out (the old code comes back), the update lock and
  the history lock are fresh, and the child's own agent starts (runtime.py).
  If the wait for the critical section timed out (an update still swapping
  after FORK_WAIT), the child undoes that update's transaction itself and
  restores the history it had before: it runs the complete old version.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Any, List, Optional

log = logging.getLogger("dynupdate.agent")

#: how long a fork waits for an update's swap/transfer to finish (seconds)
FORK_WAIT = 2.0
#: how long an update waits for a fork in progress before its swap (seconds)
UPDATE_WAIT = 5.0


class _State:
    def __init__(self) -> None:
        self.critical = threading.Lock()
        self.owner: Optional[int] = None     # the updater thread holding `critical`
        self.mediator: Any = None            # the mediator of the running update, if any
        self.tx: Any = None                  # its transaction, once in the critical section
        self.history: Optional[List[Any]] = None  # history entries before the critical section
        self.fork_holds = False              # this fork acquired `critical` in its before hook


_state = _State()


class ForkInProgress(RuntimeError):
    """A fork did not complete within UPDATE_WAIT; the update is abandoned."""


def track(mediator: Any) -> None:
    """The running update interposed `mediator` (the safe-point wait begins)."""
    _state.mediator = mediator


def enter_critical(tx: Any) -> None:
    """The safe point is reached: block forks until `leave()` (swap, transfer, release)."""
    if not _state.critical.acquire(timeout=UPDATE_WAIT):
        raise ForkInProgress(f"a fork of this process did not complete within {UPDATE_WAIT:g}s")
    from . import history

    _state.owner = threading.get_ident()
    _state.tx = tx
    _state.history = history.entries()


def leave() -> None:
    """The update is over (done, failed or abandoned): forks proceed, nothing to clean up."""
    _state.mediator = _state.tx = _state.history = None
    if _state.owner == threading.get_ident():
        _state.owner = None
        _state.critical.release()


def _before_fork() -> None:
    _state.fork_holds = False
    if _state.owner == threading.get_ident():
        return  # the update itself forks (say in a transfer hook): waiting would deadlock
    _state.fork_holds = _state.critical.acquire(timeout=FORK_WAIT)
    if not _state.fork_holds:
        log.warning("dynupdate agent: fork while an update is still swapping after %ss; "
                    "the child will run the previous version", FORK_WAIT)


def _after_fork_in_parent() -> None:
    if _state.fork_holds:
        _state.fork_holds = False
        _state.critical.release()


def _after_fork_in_child() -> None:
    """Leave no trace of the parent's update in the child (only this thread survives)."""
    state = _state
    mediator, tx, saved = state.mediator, state.tx, state.history
    in_critical = state.owner is not None and not state.fork_holds
    globals()["_state"] = _State()
    package = __name__.rpartition(".")[0]
    history = sys.modules.get(package + ".history")
    if history is not None:
        history._lock = threading.Lock()
    updater = sys.modules.get(package + ".updater")
    if updater is not None and hasattr(updater, "_busy"):
        updater._busy = threading.Lock()
    try:
        if in_critical and tx is not None:
            tx.undo()  # never raises; back to the complete old version, as a failed update would
            if history is not None and saved is not None:
                history._entries[:] = saved
        if mediator is not None:
            mediator.remove()  # the trampolines go; no call can be held in the child
    except Exception:
        log.exception("dynupdate agent: could not clear the parent's update in the forked child")
