"""Thread generations, K42's way of finding a safe point.

A process-wide generation counter is advanced by every update. Each thread
started after the agent is recorded with the generation current at its
start, and each `activity()` (a request, a job) with the generation current
when it began. An update opens a new generation and then only has to wait for
work of older generations, never for work that started after it.
"""
from __future__ import annotations

import functools
import sys
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional

_get_ident = threading.get_ident


class _State:
    generation = 0


_state = _State()
#: thread ident -> stack of generations of the activities it is inside
_activities: Dict[int, List[int]] = {}
#: Thread object -> generation current when it was started
_thread_generations: "weakref.WeakKeyDictionary[threading.Thread, int]" = weakref.WeakKeyDictionary()
_installed = False
_original_start: Optional[Callable[..., Any]] = None


def current() -> int:
    return _state.generation


def advance() -> int:
    """Open a new generation; work that starts from now on belongs to it."""
    _state.generation += 1
    return _state.generation


def _recording_start(self: threading.Thread, *args: Any, **kwargs: Any) -> Any:
    _thread_generations[self] = _state.generation
    return _original_start(self, *args, **kwargs)  # type: ignore[misc]


def install() -> None:
    """Record the generation of every thread started from now on (idempotent)."""
    global _installed, _original_start
    if _installed:
        return
    _original_start = threading.Thread.start
    functools.update_wrapper(_recording_start, _original_start)
    threading.Thread.start = _recording_start  # type: ignore[assignment]
    _installed = True


class activity:
    """Mark one unit of work (a request, a job); usable with `with` or as a decorator.

    The update engine waits for activities of older generations that are inside
    the code being replaced, so a request that began on the old code finishes on it.
    """

    __slots__ = ("name",)

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = name

    def __enter__(self) -> "activity":
        stack = _activities.get(_get_ident())
        if stack is None:
            stack = _activities[_get_ident()] = []
        stack.append(_state.generation)
        return self

    def __exit__(self, *exc: Any) -> None:
        stack = _activities.get(_get_ident())
        if stack:
            stack.pop()

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper


def activity_generations() -> Dict[int, List[int]]:
    """Per thread ident, the generations of the activities it is inside now."""
    # list() copies in one step under the GIL; iterating the dict itself could meet a
    # thread entering its first activity ("dictionary changed size during iteration").
    idents = list(_activities)
    # Taken after the keys, and from the interpreter's own thread states, so a thread that
    # was already registered is seen alive, raw `_thread` threads included.
    alive = set(sys._current_frames())
    for ident in idents:
        if ident not in alive:
            _activities.pop(ident, None)
    return {ident: list(stack) for ident, stack in list(_activities.items()) if stack}


def thread_generation(thread: threading.Thread) -> int:
    """Generation a thread was started in; threads that predate the agent are 0."""
    return _thread_generations.get(thread, 0)


def snapshot(exclude_prefix: str = "dynupdate-agent") -> List[Dict[str, Any]]:
    """Describe every live thread for `status`: id, name, generation, activity."""
    acts = activity_generations()
    frames = sys._current_frames()
    rows = []
    for thread in threading.enumerate():
        if thread.name.startswith(exclude_prefix) or thread.ident not in frames:
            continue
        stack = acts.get(thread.ident, [])
        rows.append({
            "id": thread.ident,
            "name": thread.name,
            "generation": thread_generation(thread),
            "in_activity": bool(stack),
            "activity_generation": min(stack) if stack else None,
        })
    return rows


def reset_after_fork() -> None:
    """In a forked child only the forking thread survives; forget the others."""
    me = _get_ident()
    for ident in [i for i in list(_activities) if i != me]:
        _activities.pop(ident, None)
