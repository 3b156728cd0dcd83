"""Fork safety: a child forked while an update runs gets one whole version, never half.

Pre-fork servers (gunicorn, uWSGI) fork workers at any moment, also while the
master is being updated. A child inherits a copy of memory but only the
forking thread, so whatever the update was doing is frozen mid-way in it:
mediator trampolines whose held calls would wait forever, a locked update
lock, half-swapped code. This module makes that impossible:

- The swap/transfer critical section (safe point reached -> update recorded
  and held calls released) is marked in `_state.critical`. `os.fork()` waits
  for it to end, for at most `FORK_WAIT` seconds, and an update waits for forks
  in progress before entering it (at most `UPDATE_WAIT`), so a fork lands
  either before the swap (the child runs the complete old version) or after it
  (the complete new version). Forks from several threads do not wait for each other.
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
from typing import Any, Dict, Optional

log = logging.getLogger("dynupdate.agent")

#: how long a fork waits for an update's swap/transfer to finish (seconds)
FORK_WAIT = 2.0
#: how long an update waits for a fork in progress before its swap (seconds)
UPDATE_WAIT = 5.0


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.critical = False                # an update is between its safe point and its end
        self.forks = 0                       # forks between their before and after_in_parent hooks
        self.owner: Optional[int] = None     # the updater thread in the critical section
        self.mediator: Any = None            # the mediator of the running update, if any
        self.tx: Any = None                  # its transaction, once in the critical section
        self.history: Optional[Dict[str, Any]] = None  # the history before the critical section


_state = _State()
_this_fork = threading.local()  # per forking thread: whether its before hook counted it in `forks`


class ForkInProgress(RuntimeError):
    """A fork did not complete within UPDATE_WAIT; the update is abandoned."""


def track(mediator: Any) -> None:
    """The running update interposed `mediator` (the safe-point wait begins)."""
    _state.mediator = mediator


def enter_critical(tx: Any) -> None:
    """The safe point is reached: forks wait from now until `leave()` (swap, transfer, release)."""
    from . import history

    state = _state
    with state.cond:
        if not state.cond.wait_for(lambda: state.forks == 0, timeout=UPDATE_WAIT):
            raise ForkInProgress(f"a fork of this process did not complete within {UPDATE_WAIT:g}s")
        state.critical, state.owner = True, threading.get_ident()
    state.tx = tx
    state.history = _history_snapshot(history)


def _history_snapshot(history: Any) -> Dict[str, Any]:
    """The history's lists and each entry's fields (a rollback marks entries in place)."""
    entries = history.entries()
    logged = list(getattr(history, "_log", []))
    return {"entries": entries, "log": logged,
            "fields": [(e, dict(vars(e))) for e in {id(e): e for e in entries + logged}.values()]}


def _history_restore(history: Any, saved: Dict[str, Any]) -> None:
    for entry, fields in saved["fields"]:
        vars(entry).update(fields)
    getattr(history, "_entries")[:] = saved["entries"]  # noqa: B009
    if hasattr(history, "_log"):
        getattr(history, "_log")[:] = saved["log"]  # noqa: B009


def leave() -> None:
    """The update is over (done, failed or abandoned): forks proceed, nothing to clean up."""
    state = _state
    state.mediator = state.tx = state.history = None
    with state.cond:
        if state.owner == threading.get_ident():
            state.critical, state.owner = False, None
            state.cond.notify_all()


def _before_fork() -> None:
    state = _state
    _this_fork.counted = False
    if state.owner == threading.get_ident():
        return  # the update itself forks (say in a transfer hook): waiting would deadlock
    with state.cond:
        if not state.cond.wait_for(lambda: not state.critical, timeout=FORK_WAIT):
            log.warning("dynupdate agent: fork while an update is still swapping after %ss; "
                        "the child will run the previous version", FORK_WAIT)
        state.forks += 1
        _this_fork.counted = True


def _after_fork_in_parent() -> None:
    if getattr(_this_fork, "counted", False):
        _this_fork.counted = False
        with _state.cond:
            _state.forks -= 1
            _state.cond.notify_all()


def _after_fork_in_child() -> None:
    """Leave no trace of the parent's update in the child (only this thread survives)."""
    state = _state
    mediator, tx, saved = state.mediator, state.tx, state.history
    in_critical = state.critical  # only if this fork's wait gave up (or the update itself forked)
    globals()["_state"] = _State()
    _this_fork.counted = False
    package = __name__.rpartition(".")[0]
    history = sys.modules.get(package + ".history")
    if history is not None:
        setattr(history, "_lock", threading.Lock())  # noqa: B010 - the parent's holder does not exist here
    updater = sys.modules.get(package + ".updater")
    if updater is not None and hasattr(updater, "_busy"):
        setattr(updater, "_busy", threading.Lock())  # noqa: B010 - "busy" forever otherwise
    try:
        if in_critical and tx is not None:
            tx.undo()  # never raises; back to the complete old version, as a failed update would
            if history is not None and saved is not None:
                _history_restore(history, saved)
        if mediator is not None:
            mediator.remove()  # the trampolines go; no call can be held in the child
    except Exception:
        log.exception("dynupdate agent: could not clear the parent's update in the forked child")


# --- the agent's own fork: a throwaway copy for a rehearsal ----------------------------------------

#: set around the agent's own fork; the child sees it set, so runtime starts no agent there
_copying = False


def fork_copy() -> int:
    """Fork a throwaway copy of this process (for a rehearsal): the child gets no agent, no socket."""
    global _copying
    import os

    _copying = True
    try:
        return os.fork()
    finally:
        _copying = False


def is_copy() -> bool:
    """True in the child of `fork_copy` (the flag was set when the process was copied)."""
    return _copying

