"""One update (apply or rollback) as a transaction: the only way the engine changes a process.

A `Transaction` holds what the update has changed (the undo log), its
deadlines, the mediator's lifetime and the phase timings and progress. Its
guarantees are in its structure rather than in the callers' habits:

- `swap_window(mediator)` is the one place changes are made while calls are
  held: whatever happens inside (an exception, a hook past its deadline, the
  client gone), the changes are undone *before* the held calls are released,
  and the held calls are always released.
- `run_user_code()` runs hooks and new module bodies on a worker thread
  bounded by the hook deadline (`watchdog`); code that does not finish fails
  the update with `HookTimeout`, naming the hook and the instance, and what
  it changes after it finally returns is undone too.
- `undo()` reverses every recorded change, newest first, name by name (a live
  module's globals are never cleared, so no thread sees a missing name), and
  reports each step that failed: the reply then says `UndoFailed` and lists
  them instead of claiming everything was undone.

Deadlines (see README, "Safe point and mediator"): `timeout` bounds the wait
for a safe point (exit 4); `hook_timeout` bounds the new module bodies during
prepare and, separately, the swap and state transfer while calls are held. A
call is therefore never held longer than `timeout + hook_timeout` (plus a
grace second, after which the mediator lets it run the old code anyway).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import traceback
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import instances, lazy, watchdog, wire
from .mediator import Mediator
from .plan import MISSING, Op, Plan
from .server import Peer

log = logging.getLogger("dynupdate.agent")

DEFAULT_HOOK_TIMEOUT = 10.0
#: the mediator's own deadline comes this long after the update's, so the update always ends first
MEDIATOR_GRACE = 1.0
#: progress and client checks while user code runs (time-based, whatever the number of instances)
POLL_INTERVAL = 0.1

_SPECIAL = ("__dict__", "__weakref__")


class UpdateError(Exception):
    """A failure reported to the client as error type `kind`."""

    def __init__(self, kind: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.tb = kind, message, tb


def fail(kind: str, message: str, exc: Optional[BaseException] = None) -> UpdateError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if exc else ""
    return UpdateError(kind, message, tb)


# --- restoring state name by name ----------------------------------------------------

def restore_namespace(obj: Any, saved: Dict[str, Any]) -> None:
    """Put a module's or class's namespace back as `saved`, one name at a time.

    Never clears the live dict: other threads keep finding every name that
    exists in both versions while this runs.
    """
    current = vars(obj)
    module = isinstance(obj, types.ModuleType)
    for name in [n for n in list(current) if n not in saved and n not in _SPECIAL]:
        if module:
            current.pop(name, None)
        else:
            delattr(obj, name)
    for name, value in saved.items():
        if name in _SPECIAL or current.get(name, MISSING) is value:
            continue
        if module:
            current[name] = value
        else:
            setattr(obj, name, value)


def restore_instance(obj: Any, state: Dict[str, Any]) -> None:
    """Put an instance's attributes back as `instances.state_of` saw them, name by name."""
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        instances.restore_state(obj, state)  # slots only: nothing to clear
        return
    if not isinstance(d, dict) or instances._slot_names(type(obj)):
        instances.restore_state(obj, state)
        return
    for name in [n for n in list(d) if n not in state]:
        d.pop(name, None)
    for name, value in state.items():
        if d.get(name, MISSING) is not value:
            d[name] = value


# --- the transaction ----------------------------------------------------------------

class Transaction:
    """Everything one update changes, its deadlines, its held calls and its progress."""

    def __init__(self, peer: Peer, phases: Dict[str, float], *, action: str = "apply", label: str = "",
                 previous: str = "", hook_timeout: float = DEFAULT_HOOK_TIMEOUT) -> None:
        self.peer = peer
        self.phases = phases
        self.action = action
        self.label = label
        self.previous = previous
        self.hook_timeout = hook_timeout
        self.plans: List[Plan] = []
        self.extra_ops: List[Op] = []
        self.transfers = instances.EagerTransfer()
        self.snapshots: List[Tuple[Any, Dict[str, Any]]] = []
        self.lazy_started: List[lazy.LazyClass] = []
        self.lazy_detached: List[lazy.LazyClass] = []
        self.mediator: Optional[Mediator] = None
        self.changing = False  # inside swap_window: changes may have been made
        self._phase_start = time.monotonic()
        self.started = self._phase_start
        self._phase = "prepare"
        self._send_lock = threading.Lock()
        self._jobs: List[watchdog.Job] = []
        self._job: Optional[watchdog.Job] = None
        #: what the running user code works on, for descriptions and late undo:
        #: ("instances", class, total, hook name, index of its first entry in transfers.saved),
        #: ("module", module, hook name) or ("text", description)
        self.working_on: Tuple[Any, ...] = ("text", "")

    # -- progress -----------------------------------------------------------------
    def phase(self, name: str, message: str = "") -> None:
        now = time.monotonic()
        self.phases[self._phase] = self.phases.get(self._phase, 0.0) + (now - self._phase_start)
        self.send(wire.progress(name, message=message or name, done_phase=self._phase))
        self._phase, self._phase_start = name, now

    def finish_phase(self) -> None:
        now = time.monotonic()
        self.phases[self._phase] = self.phases.get(self._phase, 0.0) + (now - self._phase_start)
        self._phase_start = now

    def send(self, event: Dict[str, Any]) -> None:
        with self._send_lock:  # the update's thread and hook workers may both report
            try:
                self.peer.send(event)
            except OSError:
                pass  # checked explicitly with alive() at the points that matter

    def require_client(self, where: str) -> None:
        if not self.peer.alive():
            outcome = "" if self.changing else " and nothing was changed"
            raise UpdateError("ClientDisconnected", f"the client disconnected during {where}; "
                              f"the {self.action} was abandoned{outcome}")

    # -- the undo log --------------------------------------------------------------
    def snapshot(self, obj: Any) -> None:
        """Remember a module's or class's namespace to undo what hooks do to it."""
        self.snapshots.append((obj, dict(vars(obj))))

    def undo(self) -> List[str]:
        """Reverse everything, newest first; returns what could not be undone (never raises)."""
        steps: List[Tuple[str, Callable[[], None]]] = []
        for obj, state in reversed(self.transfers.saved):
            steps.append((f"the state of a {type(obj).__qualname__} instance",
                          functools.partial(restore_instance, obj, state)))
        self.transfers.saved.clear()
        steps += [(f"the lazy transfer wrappers of {lz.cls.__qualname__}", lz.uninstall)
                  for lz in reversed(self.lazy_started)]
        steps += [(f"the lazy transfer wrappers of {lz.cls.__qualname__}", lz.install)
                  for lz in reversed(self.lazy_detached)]
        steps += [(repr(op), op.undo) for op in reversed(self.extra_ops)]
        for plan in reversed(self.plans):
            applied = plan.ops[: getattr(plan, "_applied", len(plan.ops))]
            steps += [(repr(op), op.undo) for op in reversed(applied)]
            plan._applied = 0
        steps += [(f"the namespace of {getattr(o, '__qualname__', getattr(o, '__name__', o))}",
                   functools.partial(restore_namespace, o, s)) for o, s in reversed(self.snapshots)]
        self.lazy_started.clear()
        self.lazy_detached.clear()
        failed = []
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                log.exception("dynupdate agent: an undo step failed (%s)", what)
                failed.append(f"{what}: {type(exc).__name__}: {exc}")
        return failed

    # -- deadlines ------------------------------------------------------------------
    def mediator_deadline(self, timeout: float) -> float:
        """When held calls stop being held, whatever the update is doing (see mediator.py)."""
        return time.monotonic() + timeout + self.hook_timeout + MEDIATOR_GRACE

    def run_user_code(self, fn: Callable[[], Any], where: str) -> Any:
        """Run hooks or module bodies on a worker thread, bounded by the hook deadline.

        Raises HookTimeout naming what was running if it does not finish in
        time; its exceptions propagate as they are.
        """
        mediator = self.mediator

        def work() -> Any:
            ident = threading.get_ident()
            if mediator is not None:
                mediator.allow(ident)
            try:
                return fn()
            finally:  # thread idents are reused: a request thread must never inherit the pass
                if mediator is not None:
                    mediator.disallow(ident)

        job = watchdog.Job(work, lambda: self.describe_work(where))
        self._jobs.append(job)
        self._job = job
        try:
            return watchdog.run(job, time.monotonic() + self.hook_timeout, lambda: self._poll(where),
                                POLL_INTERVAL)
        except watchdog.Expired:
            stopped = ("it was stopped" if job.ended.is_set() else
                       "it is blocked outside Python and was abandoned; what it changes when it returns is reverted"
                       if job.stopped else "it could not be interrupted and was abandoned")
            outcome = ""
            if not self.changing:  # before the swap: nothing to undo, the stuck code may end on its own
                outcome = f"; nothing was changed and the process runs {self.previous!r} as before"
            raise UpdateError("HookTimeout", f"{job.what} did not finish within the hook timeout of "
                              f"{self.hook_timeout:g}s ({stopped}){outcome}") from None
        finally:
            self._job = None
            if not self.changing:  # outside the swap window there is nothing to undo: let the worker finish
                job.after_undo()
            self._jobs = [j for j in self._jobs if not j.done.is_set()]  # only those a failure must still tell

    def _poll(self, where: str) -> None:
        self.require_client(where)
        if self.working_on[0] == "instances":
            _, _, total, _, base = self.working_on
            self.send(wire.progress(self._phase, done=len(self.transfers.saved) - base, total=total))

    def describe_work(self, where: str = "") -> str:
        kind = self.working_on[0]
        if kind == "instances":
            _, cls, total, hook, base = self.working_on
            return (f"{cls.__module__}.{cls.__qualname__}.{hook} on instance {len(self.transfers.saved) - base} "
                    f"of {total}")
        if kind == "module":
            _, module, hook = self.working_on
            return f"module {module.__name__!r}: {hook}"
        return self.working_on[1] or where

    def _late_undo(self) -> Callable[[], None]:
        """What abandoned user code may still change, restored again when it ends."""
        kind = self.working_on[0]
        current = self.transfers.saved[-1] if kind == "instances" and self.transfers.saved else None
        namespaces = [(o, s) for o, s in self.snapshots if kind == "module" and o is self.working_on[1]]
        later = self.transfers  # the hook loop may go on after its deadline if a hook swallows Abandoned

        def undo() -> None:
            for obj, state in reversed(later.saved):
                restore_instance(obj, state)
            later.saved.clear()
            if current is not None:
                restore_instance(*current)
            for obj, saved in namespaces:
                restore_namespace(obj, saved)
        return undo

    # -- the swap window ------------------------------------------------------------
    @contextlib.contextmanager
    def swap_window(self, mediator: Mediator) -> Iterator[Mediator]:
        """Changes happen inside; any failure undoes them, then the held calls are released."""
        self.mediator = mediator
        self.changing = True
        try:
            yield mediator
        except BaseException as exc:
            raise self._abort(exc) from None
        finally:
            self.changing = False
            mediator.release()

    def ready_to_commit(self, where: str) -> None:
        """Last checks before the new version is recorded (inside swap_window)."""
        self.require_client(where)
        if self.mediator is not None and self.mediator.expired:
            raise UpdateError("HookTimeout", f"the {self.action} ran past its deadline (held calls had to continue "
                              f"on the old code); raise --hook-timeout")

    def _abort(self, exc: BaseException) -> UpdateError:
        previous = self.previous
        late = self._late_undo() if self._jobs and not self._jobs[-1].ended.is_set() else None
        failed = self.undo()
        for job in self._jobs:
            job.after_undo(late if job is self._jobs[-1] else None)
        if isinstance(exc, UpdateError):
            err = exc
        else:
            err = fail(type(exc).__name__, f"{type(exc).__name__}: {exc} (during {self._phase} of the "
                       f"{self.action})", exc)
        if failed:
            shown = "; ".join(failed[:10]) + (f"; and {len(failed) - 10} more" if len(failed) > 10 else "")
            return UpdateError("UndoFailed", f"the {self.action} failed ({err.kind}: {err.message}) and undoing it "
                               f"failed for {len(failed)} change(s): {shown}. The process may now run a mix of "
                               f"{previous!r} and the new code; restart it or apply a fix", err.tb)
        if "every change was undone" not in err.message and "nothing was changed" not in err.message:
            err.message += f"; every change was undone and the process runs {previous!r} as before"
        return err

    # -- what status shows ----------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        job = self._job
        return {"action": self.action, "bundle": self.label, "phase": self._phase,
                "seconds": round(time.monotonic() - self.started, 3),
                "running": job.describe() if job is not None else None,
                "held": self.mediator.held if self.mediator is not None else 0}


_current: List[Transaction] = []


def _after_fork_in_child() -> None:
    """The parent's running update is not the child's (forking.py undoes it there)."""
    _current.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def current(tx: Transaction) -> Iterator[Transaction]:
    """Make `tx` the update `status` reports while it runs."""
    _current.append(tx)
    try:
        yield tx
    finally:
        _current.remove(tx)


def status() -> Dict[str, Any]:
    """The running update (or None) and abandoned hooks that have not ended, for `status`."""
    running = list(_current)
    return {"running": running[-1].describe() if running else None, "stuck": watchdog.stuck()}
