"""Thread and task generations, K42's way of finding a safe point.

A process-wide generation counter is advanced by every update. Each thread
started after the agent is recorded with the generation current at its
start, each asyncio task with the generation current when it was created,
and each `activity()` (a request, a job) with the generation current when it
began. An update opens a new generation and then only has to wait for work of
older generations, never for work that started after it.

Inside asyncio many tasks share one thread, so an activity entered by a task
is kept in a context variable (each task runs in its own context) and mirrored
in a weak per-task record the update engine reads from its own thread.
Task generations cost nothing on task creation: when a generation opens, the
tasks alive at that moment are stamped with the closing generation, so a task
without a stamp was created in the current one.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import sys
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import loops

_get_ident = threading.get_ident


class _State:
    generation = 0


_state = _State()
#: thread ident -> stack of generations of the activities it is inside
_activities: Dict[int, List[int]] = {}
#: Thread object -> generation current when it was started
_thread_generations: "weakref.WeakKeyDictionary[threading.Thread, int]" = weakref.WeakKeyDictionary()
#: Task -> generation it was created in (stamped when the next generation opens)
_task_generations: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
#: Task -> generations of the activities it is inside now (mirror of `_task_activities`)
_task_records: "weakref.WeakKeyDictionary[Any, Tuple[int, ...]]" = weakref.WeakKeyDictionary()
#: the activities the running task (or thread context) is inside, innermost last
_task_activities: "contextvars.ContextVar[Tuple[int, ...]]" = contextvars.ContextVar(
    "dynupdate_activities", default=())
_installed = False
_original_start: Optional[Callable[..., Any]] = None


def current() -> int:
    return _state.generation


def advance() -> int:
    """Open a new generation; work that starts from now on belongs to it."""
    closing = _state.generation
    for task in loops.all_tasks():
        if task not in _task_generations:
            try:
                _task_generations[task] = closing
            except TypeError:  # a task type without weak references: counted as current
                pass
    _state.generation += 1
    return _state.generation


def task_generation(task: Any) -> int:
    """Generation a task was created in (unstamped tasks belong to the current one)."""
    return _task_generations.get(task, _state.generation)


def task_activity_generation(task: Any) -> Optional[int]:
    """Oldest generation of the activities `task` is inside, or None."""
    record = _task_records.get(task)
    return min(record) if record else None


def current_activity_generation() -> Optional[int]:
    """Oldest activity generation of the calling work: its task's, else its thread's."""
    acts = _task_activities.get()
    if acts:
        return min(acts)
    stack = _activities.get(_get_ident())
    return min(stack) if stack else None


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
        task = loops.current_task()
        if task is not None:  # one record per task: tasks sharing a loop thread never mix
            acts = _task_activities.get() + (_state.generation,)
            _task_activities.set(acts)
            _mirror(task, acts)
            return self
        stack = _activities.get(_get_ident())
        if stack is None:
            stack = _activities[_get_ident()] = []
        stack.append(_state.generation)
        return self

    def __exit__(self, *exc: Any) -> None:
        task = loops.current_task()
        if task is not None:
            acts = _task_activities.get()[:-1]
            _task_activities.set(acts)
            _mirror(task, acts)
            return
        stack = _activities.get(_get_ident())
        if stack:
            stack.pop()

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:  # spans the whole coroutine, every await included
                    return await func(*args, **kwargs)

            return coroutine_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper


def _mirror(task: Any, acts: Tuple[int, ...]) -> None:
    """Keep the engine's cross-thread view of a task's activities."""
    try:
        if acts:
            _task_records[task] = acts
        else:
            _task_records.pop(task, None)
    except TypeError:
        pass


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


def task_summary() -> List[Dict[str, Any]]:
    """Per generation: live tasks and the tasks inside an activity begun in it (for `status`)."""
    rows: Dict[int, Dict[str, Any]] = {}
    for task in loops.all_tasks():
        gen = task_generation(task)
        row = rows.setdefault(gen, {"generation": gen, "tasks": 0, "activities": 0})
        row["tasks"] += 1
        act = task_activity_generation(task)
        if act is not None:
            rows.setdefault(act, {"generation": act, "tasks": 0, "activities": 0})["activities"] += 1
    return [rows[g] for g in sorted(rows)]


def reset_after_fork() -> None:
    """In a forked child only the forking thread survives; forget the others."""
    me = _get_ident()
    for ident in [i for i in list(_activities) if i != me]:
        _activities.pop(ident, None)
