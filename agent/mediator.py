"""K42's mediator, interposed only while an update runs.

For the duration of an update each affected function's `__code__` is swapped
for a small trampoline that parks the call until the update ends, then runs
whatever the function is by then (the new code after a swap, the old code if
the update gave up). Calls from threads that are themselves part of the work
being waited for pass straight through on the old code, so the mediator can
never deadlock the safe point. When the update ends the original code objects
come back (or the new ones stay): the steady state carries no indirection.

An event-loop thread is never parked (that would stop every request the loop
serves, patched or not): a call to a coroutine function is held by returning
a coroutine that *awaits* the end of the update before it starts, and any
other call made on a loop thread passes through on the code the function has
(the loop is parked between task steps for the swap itself, see safepoint.py).

No call is held past the update's deadline (`Mediator(deadline=...)`, set by
the transaction to the safe-point timeout plus the hook timeout, plus a grace
second): a held call that reaches it runs the old code, the mediator stops
holding anything (`expired`), and the update, which checks `expired` before it
commits, fails and is undone. The update's own deadlines normally end it
first; this is the backstop that keeps the target serving whatever happens.
"""
from __future__ import annotations

import inspect
import sys
import threading
import time
import types
import warnings
import weakref
from typing import Any, Callable, Dict, List, Optional, Set

from . import loops

_templates: Dict[int, types.CodeType] = {}


def _template(nfree: int) -> types.CodeType:
    """A trampoline code object with `nfree` free variables (to fit any closure)."""
    code = _templates.get(nfree)
    if code is not None:
        return code
    names = [f"_f{i}" for i in range(nfree)]
    lines = ["def _outer():"]
    if names:
        lines.append(f"    {' = '.join(names)} = None")
    lines.append("    def trampoline(*args, **kwargs):")
    if names:
        lines.append(f"        nonlocal {', '.join(names)}")
    lines.append("        return '__HELD__'('__KEY__', args, kwargs)")
    lines.append("    return trampoline")
    namespace: Dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile("\n".join(lines), "<dynupdate mediator>", "exec"), namespace)
    code = namespace["_outer"]().__code__
    _templates[nfree] = code
    return code


class _Entry:
    __slots__ = ("fn", "original", "trampoline", "after")

    def __init__(self, fn: types.FunctionType, original: types.CodeType, trampoline: types.CodeType) -> None:
        self.fn, self.original, self.trampoline = fn, original, trampoline
        self.after: Optional[types.CodeType] = None  # the code the swap installed, once it has

    def current(self) -> types.CodeType:
        return self.after if self.after is not None else self.original


class _Dispatch:
    """What a trampoline calls. It refers to its mediator weakly: a strong reference
    from the trampoline's co_consts would close a cycle (mediator -> entry ->
    trampoline code -> consts -> mediator) that the cyclic GC cannot break, since
    code objects are not GC-tracked; every update then leaked its mediator, safe
    point and both versions' code (seen in the soak as steady RSS growth)."""

    __slots__ = ("mediator", "fns")

    def __init__(self, mediator: "Mediator") -> None:
        self.mediator = weakref.ref(mediator)
        self.fns: List[types.FunctionType] = []  # key -> function, for a call that outlives the mediator

    def __call__(self, key: int, args: tuple, kwargs: dict) -> Any:
        mediator = self.mediator()
        if mediator is None:  # the update is long over: run whatever the function is now
            return self.fns[key](*args, **kwargs)
        return mediator._call(key, args, kwargs)


class Mediator:
    """Holds calls into a set of functions while an update waits and swaps."""

    def __init__(self, in_flight: Callable[[Any], bool], on_release: Optional[Callable[[], None]] = None,
                 confirm: Optional[Callable[[], None]] = None, deadline: Optional[float] = None) -> None:
        #: in_flight(frame) -> True if the calling thread is work the update waits for
        self._in_flight = in_flight
        #: run when the update ends, after the held calls are let go (resumes parked loops)
        self._on_release = on_release
        #: run before the update is recorded; raises if what it held did not stay held (undo then)
        self._confirm = confirm
        #: (loop, future) per coroutine awaiting the end of the update
        self._waiters: List[tuple] = []
        self.awaited = 0
        self._entries: List[_Entry] = []
        self._dispatch = _Dispatch(self)
        #: the updater's own thread and its hook workers are never held
        self._owners: Set[int] = {threading.get_ident()}
        self._released = threading.Event()
        self._lock = threading.Lock()
        #: time.monotonic() after which no call is held any more
        self.deadline = deadline if deadline is not None else float("inf")
        self.expired = False
        self.held = 0
        self.passed = 0

    def allow(self, ident: int) -> None:
        """Never hold calls from thread `ident` (a worker running the update's hooks)."""
        self._owners.add(ident)

    def disallow(self, ident: int) -> None:
        """The worker `ident` has ended; a new thread may get its ident and must be held like any other."""
        self._owners.discard(ident)

    @property
    def original_codes(self) -> Set[types.CodeType]:
        return {e.original for e in self._entries}

    def install(self, functions: List[types.FunctionType]) -> None:
        known = {id(e.fn) for e in self._entries}
        added = []
        for fn in functions:
            if id(fn) in known:
                continue
            known.add(id(fn))
            original = fn.__code__
            entry = _Entry(fn, original, self._trampoline_for(original, len(self._entries)))
            self._dispatch.fns.append(fn)
            self._entries.append(entry)
            added.append(entry)
        for entry in added:
            entry.fn.__code__ = entry.trampoline

    def rearm(self, functions: List[types.FunctionType]) -> None:
        """After the swap: keep holding new calls until the update ends.

        The swap gave the functions their new code; until the state transfer is
        done, a call must not run it on an instance that is not transferred yet.
        Functions the swap added are interposed too.
        """
        for entry in self._entries:
            if entry.fn.__code__ is not entry.trampoline:
                entry.after = entry.fn.__code__
                entry.fn.__code__ = entry.trampoline
        self.install([fn for fn in functions if len(fn.__code__.co_freevars) == len(fn.__closure__ or ())])


    def _trampoline_for(self, original: types.CodeType, key: int) -> types.CodeType:
        template = _template(len(original.co_freevars))
        consts = tuple(self._dispatch if c == "__HELD__" else key if c == "__KEY__" else c for c in template.co_consts)
        fields: Dict[str, Any] = {"co_consts": consts, "co_name": original.co_name}
        if sys.version_info >= (3, 11):
            fields["co_qualname"] = original.co_qualname
        return template.replace(**fields)

    def _call(self, key: int, args: tuple, kwargs: dict) -> Any:
        entry = self._entries[key]
        if not self._released.is_set() and threading.get_ident() not in self._owners:
            if self.expired:
                return self._run_original(entry, args, kwargs)
            if self._in_flight(sys._getframe(3)):  # 0 _call, 1 _Dispatch, 2 trampoline, 3 its caller
                self.passed += 1
                return self._run_original(entry, args, kwargs)
            if entry.original.co_flags & inspect.CO_COROUTINE:
                return self._held_coroutine(entry, args, kwargs)
            if loops.running_loop() is not None:
                return self._loop_pass_through(entry, args, kwargs)
            with self._lock:
                self.held += 1
            wait = None if self.deadline == float("inf") else max(0.0, self.deadline - time.monotonic())
            if not self._released.wait(wait):
                self.expired = True  # the update sees this before it commits, and fails
                return self._run_original(entry, args, kwargs)
        if entry.fn.__code__ is entry.trampoline:
            return self._run_code(entry, entry.current(), args, kwargs)
        return entry.fn(*args, **kwargs)

    def _finish(self, entry: _Entry, args: tuple, kwargs: dict) -> Any:
        if entry.fn.__code__ is entry.trampoline:
            return self._run_code(entry, entry.current(), args, kwargs)
        return entry.fn(*args, **kwargs)

    async def _held_coroutine(self, entry: _Entry, args: tuple, kwargs: dict) -> Any:
        """A held call to a coroutine function: the calling task awaits the end of the update."""
        waiter = None
        with self._lock:
            if not self._released.is_set():
                waiter = loops.new_waiter()
                if waiter is not None:
                    self._waiters.append(waiter)
                    self.awaited += 1
        if waiter is not None:  # else no asyncio loop drives it (rare): run the code it has, never park
            await waiter[1]
        return await self._finish(entry, args, kwargs)

    def _loop_pass_through(self, entry: _Entry, args: tuple, kwargs: dict) -> Any:
        """A plain call on an event-loop thread: never park the loop; run the code it has now."""
        self.passed += 1
        return self._run_code(entry, entry.current(), args, kwargs)

    def _run_original(self, entry: _Entry, args: tuple, kwargs: dict) -> Any:
        return self._run_code(entry, entry.original, args, kwargs)

    @staticmethod
    def _run_code(entry: _Entry, code: types.CodeType, args: tuple, kwargs: dict) -> Any:
        fn = entry.fn
        clone = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__kwdefaults__ = fn.__kwdefaults__
        return clone(*args, **kwargs)

    def real_code(self, fn: types.FunctionType) -> types.CodeType:
        """The code `fn` runs when no update is in progress (not our trampoline)."""
        for entry in self._entries:
            if entry.fn is fn and fn.__code__ is entry.trampoline:
                return entry.current()
        return fn.__code__

    def remove(self) -> None:
        """Put back original code where the swap did not install new code."""
        for entry in self._entries:
            if entry.fn.__code__ is entry.trampoline:
                entry.fn.__code__ = entry.current()

    def confirm(self) -> None:
        """Raise if the update must be undone because a paused loop did not stay paused."""
        if self._confirm is not None:
            self._confirm()

    def release(self) -> None:
        """Let held calls continue (on whatever code the functions now have)."""
        self.remove()
        with self._lock:
            self._released.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loops.release_waiter(loop, future)
        if self._on_release is not None:
            self._on_release()
