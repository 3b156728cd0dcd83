"""Running the target's own code for an update (hooks, new module bodies) under a deadline.

User code that an update runs -- a new module body, `__dynupdate_transfer__` /
`__dynupdate_revert__` on each instance, a module-level hook, a pending lazy
transfer -- runs on a worker thread while the update's own thread watches the
clock and the client. When the deadline passes the update stops waiting at once
(its transaction undoes everything and releases the held calls) and the worker
is *abandoned*:

- Code spinning in pure Python is stopped: `Abandoned` is raised in the worker
  with `PyThreadState_SetAsyncExc`, which CPython delivers at its next check
  between bytecodes (every loop iteration and call). Chosen over a trace
  function or `sys.monitoring` because it costs nothing until it is used (a
  trace function slows every hook of a 200,000-instance transfer several
  times) and works on every Python the agent supports.
- Code blocked in C (a lock, a sleep, a socket) cannot be interrupted; the
  exception fires as soon as it returns to Python. Until then `stuck()` names
  it (shown by `status`, and the reason new updates are refused), and when it
  finally ends the callbacks given to `after_undo()` undo whatever it did late.

`Abandoned` derives from BaseException so `except Exception` in a hook does
not swallow it. Worker threads are named `dynupdate-agent-hook`: the safe-point
check and `status` skip agent threads.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, List, Optional, Set

log = logging.getLogger("dynupdate.agent")

THREAD_NAME = "dynupdate-agent-hook"
#: after the deadline, how long the update waits for abandoned code to stop (pure Python stops in microseconds)
STOP_GRACE = 0.2
#: how long finished abandoned code waits for the transaction's undo before undoing its own late work
LATE_UNDO_WAIT = 30.0


class Abandoned(BaseException):
    """Raised inside user code whose update gave up on it; stops it at the next bytecode."""


class Expired(Exception):
    """User code did not finish before the deadline; `job` says what it was doing."""

    def __init__(self, job: "Job") -> None:
        super().__init__(job.what)
        self.job = job


def _async_raise(ident: int) -> bool:
    """Schedule `Abandoned` in thread `ident`; False where ctypes is unavailable."""
    try:
        import ctypes
    except ImportError:  # an interpreter built without _ctypes: the work cannot be stopped, only abandoned
        return False
    set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    found = set_exc(ctypes.c_ulong(ident), ctypes.py_object(Abandoned))
    if found > 1:  # never expected: undo rather than hit unknown threads
        set_exc(ctypes.c_ulong(ident), None)
        return False
    return found == 1


class Job:
    """One piece of user code running on its own worker thread."""

    def __init__(self, fn: Callable[[], Any], describe: Callable[[], str]) -> None:
        self._fn = fn
        self._describe = describe
        self.started = time.monotonic()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.ended = threading.Event()  # the user code returned or raised
        self.done = threading.Event()  # ... and its late work, if any, was undone
        #: what it was doing when abandoned (frozen then: the transaction's records are undone after)
        self.what = ""
        self.abandoned_at: Optional[float] = None
        self.stopped = False  # the async exception could be scheduled
        self._finished = False
        self._lock = threading.Lock()
        self._undone = threading.Event()
        self._late: List[Callable[[], None]] = []
        self.thread = threading.Thread(target=self._main, name=THREAD_NAME, daemon=True)

    def describe(self) -> str:
        if self.what:
            return self.what
        try:
            return self._describe()
        except Exception as exc:  # a description must never break the update or status
            return f"<undescribable: {type(exc).__name__}>"

    # -- the worker thread ----------------------------------------------------
    def _main(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        self._fn = _ended  # drop the work's references now: no cycle keeps an update's objects alive
        self.ended.set()
        while True:  # `Abandoned` may still arrive here (scheduled just as the work ended): at most once
            try:
                self._finish()
                return
            except Abandoned:
                continue

    def _finish(self) -> None:
        with self._lock:
            self._finished = True
            abandoned = self.abandoned_at is not None
        if abandoned:
            self._undone.wait(LATE_UNDO_WAIT)
            for undo in self._late:  # idempotent: they restore recorded states
                try:
                    undo()
                except Exception:
                    log.exception("dynupdate agent: undoing the late work of abandoned code failed (%s)", self.what)
            took = time.monotonic() - (self.abandoned_at or 0.0)
            log.warning("dynupdate agent: abandoned %s ended %.1fs after its deadline; its late changes "
                        "were undone", self.what, took)
            with _registry_lock:
                _stuck.discard(self)
        self.done.set()

    # -- the update's thread --------------------------------------------------
    def abandon(self) -> bool:
        """Give up on the work: stop it if it runs Python. True if it is still running."""
        with self._lock:
            if self._finished:
                return False
            self.what = self.describe()
            self.abandoned_at = time.monotonic()
            with _registry_lock:
                _stuck.add(self)
            ident = self.thread.ident
            self.stopped = ident is not None and _async_raise(ident)
        return True

    def after_undo(self, undo: Optional[Callable[[], None]] = None) -> None:
        """The transaction has undone everything; `undo` restores what this work may still change."""
        if undo is not None:
            self._late.append(undo)
        self._undone.set()


_registry_lock = threading.Lock()
_stuck: Set[Job] = set()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's worker threads: nothing of theirs can run late there."""
    global _registry_lock
    _registry_lock = threading.Lock()
    _stuck.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def stuck() -> List[str]:
    """Abandoned user code that has not ended yet, described for `status` and refusals."""
    with _registry_lock:
        jobs = sorted((j for j in _stuck if not j.done.is_set()), key=lambda j: j.abandoned_at or 0.0)
    now = time.monotonic()
    return [f"{job.what} (deadline passed {now - (job.abandoned_at or now):.1f}s ago; "
            f"{'blocked outside Python' if job.stopped else 'cannot be interrupted'}, still running)"
            for job in jobs]


def run(job: Job, deadline: float, poll: Callable[[], None], interval: float = 0.1) -> Any:
    """Run the job on its worker thread until `deadline` (time.monotonic()); return its result.

    Re-raises the job's exception. `poll()` runs on this thread every
    `interval` seconds meanwhile (progress, client checks); if it raises, the
    work is abandoned and the exception propagates. At the deadline the work is
    abandoned and `Expired` is raised. After a failure the caller undoes its
    changes and then calls `job.after_undo(...)`.
    """
    job.thread.start()
    while not job.ended.wait(max(0.0, min(interval, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            if job.abandon():
                job.ended.wait(STOP_GRACE)  # pure Python stops at once; a C call keeps it stuck
                raise Expired(job)
            break
        try:
            poll()
        except BaseException:
            job.abandon()
            job.ended.wait(STOP_GRACE)
            raise
    job.thread.join()
    error, result = job.error, job.result
    job.error = job.result = None  # the caller owns them now (a traceback holds the update's frames)
    job._describe = _ended
    if error is not None:
        raise error
    return result


def _ended() -> Any:
    return "(ended)"

