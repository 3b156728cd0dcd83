"""asyncio as the update engine sees it: tasks, coroutine chains, and loop pauses.

In an asyncio service the unit of work is the task, and a request suspended in
`await` is not on any thread's stack: it is a chain of suspended coroutines
reachable only from its task (`cr_await` / `gi_yieldfrom` / `ag_await`). This
module finds every task of every loop from any thread, walks those chains
(bounded), and parks each running loop *between two task steps* for the
duration of a swap, so no task observes a half-swapped state and the loop
itself is never blocked while an update only waits.

Nothing here imports asyncio: a process that never imported it has no tasks,
and the agent must not pull the package into programs that do not use it.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

#: how deep a coroutine chain is followed (a chain longer than this is cut, never looped on)
MAX_CHAIN = 256
#: a lazy transfer's bookkeeping that may scan the heap runs on a thread of this name
OFF_LOOP_THREAD = "dynupdate-agent-offloop"


def _asyncio() -> Any:
    return sys.modules.get("asyncio")


def running_loop() -> Any:
    """The event loop running on the calling thread, or None (cheap; never imports asyncio)."""
    aio = _asyncio()
    if aio is None:
        return None
    return aio._get_running_loop()


def current_task() -> Any:
    """The task whose step is running on the calling thread, or None."""
    loop = running_loop()
    if loop is None:
        return None
    try:
        return _asyncio().current_task(loop)
    except RuntimeError:
        return None


def all_tasks() -> List[Any]:
    """Every pending task of every loop, read from any thread.

    asyncio keeps its registry in `asyncio.tasks`: a WeakSet `_all_tasks` on
    3.9-3.11; on 3.12-3.13 `_scheduled_tasks` (WeakSet) plus `_eager_tasks`
    (eager tasks not yet suspended). Python 3.14 keeps tasks per thread and is
    not covered: there no task is found (a documented limit).
    The registries change while we copy them (another thread's loop adds tasks),
    so the copy is retried like `asyncio.all_tasks` itself does.
    """
    aio = _asyncio()
    if aio is None:
        return []
    mod = getattr(aio, "tasks", None)
    sources = [getattr(mod, name, None) for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks")]
    found: List[Any] = []
    for source in sources:
        if source is None:
            continue
        for _ in range(100):
            try:
                found.extend(list(source))
                break
            except RuntimeError:  # "Set changed size during iteration"
                continue
    seen = set()
    out = []
    for task in found:
        if id(task) in seen:
            continue
        seen.add(id(task))
        try:
            if not task.done():
                out.append(task)
        except Exception:
            continue
    return out


def running_loops() -> List[Any]:
    """Loops that are running now and own at least one pending task."""
    loops = {}
    for task in all_tasks():
        try:
            loop = task.get_loop()
        except Exception:
            continue
        if id(loop) not in loops and loop.is_running() and not loop.is_closed():
            loops[id(loop)] = loop
    return list(loops.values())


def task_label(task: Any) -> str:
    """`task <name> (<coroutine>)`, for progress and errors."""
    try:
        name = task.get_name()
    except Exception:
        name = "?"
    coro = task.get_coro() if hasattr(task, "get_coro") else None
    qual = getattr(coro, "__qualname__", None) or type(coro).__name__
    return f"task {name} ({qual})"


def chain_frames(obj: Any) -> Iterator[Any]:
    """The frames of a suspended coroutine/generator/async generator and of
    everything it awaits (`cr_await`, `gi_yieldfrom`, `ag_await`), outermost first."""
    depth = 0
    while obj is not None and depth < MAX_CHAIN:
        depth += 1
        frame = None
        nxt = None
        for fattr, nattr in (("cr_frame", "cr_await"), ("gi_frame", "gi_yieldfrom"), ("ag_frame", "ag_await")):
            if hasattr(obj, fattr):
                frame = getattr(obj, fattr, None)
                nxt = getattr(obj, nattr, None)
                break
        else:
            return  # a Future, or anything else that is not a coroutine: the chain ends here
        if frame is not None:
            yield frame
        obj = nxt


class LoopPause:
    """Parks every given loop between two task steps, all at once, with deadlines.

    `engage()` schedules a callback on each loop with `call_soon_threadsafe`;
    a loop runs it between task steps and waits there (releasing the GIL) until
    `resume()`, or until its own hold limit passes, whichever comes first. A
    loop that left on its own deadline is recorded in `expired` so the update
    can be undone rather than recorded.
    """

    def __init__(self, loops: List[Any], hold_limit: float) -> None:
        self.loops = loops
        self.hold_limit = hold_limit
        self._cond = threading.Condition()
        self._parked = 0
        self._resumed = False
        self.expired: List[str] = []
        self.late: List[Any] = []

    def _park(self) -> None:
        with self._cond:
            if self._resumed:
                return  # the update gave up on this pause before the loop got here
            self._parked += 1
            self._cond.notify_all()
            deadline = time.monotonic() + self.hold_limit
            while not self._resumed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.expired.append(threading.current_thread().name)
                    break
                self._cond.wait(remaining)
            self._parked -= 1

    def engage(self, timeout: float) -> bool:
        """True once every loop is parked; False (and nothing left parked) after `timeout`."""
        scheduled = 0
        for loop in self.loops:
            try:
                loop.call_soon_threadsafe(self._park)
                scheduled += 1
            except RuntimeError:  # closed meanwhile: nothing to pause
                continue
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._parked < scheduled:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._resumed = True  # callbacks still queued return at once
                    self._cond.notify_all()
                    return False
                self._cond.wait(remaining)
        return True

    def resume(self) -> None:
        with self._cond:
            self._resumed = True
            self._cond.notify_all()


class LoopPauseExpired(RuntimeError):
    """An event loop stopped waiting for the swap to finish (its hold limit passed)."""


def off_loop(func: Callable[..., Any], *args: Any) -> None:
    """Run `func(*args)` now, unless the calling thread runs an event loop: then on
    a short-lived agent thread, so no unbounded work (such as a heap scan) runs there."""
    if running_loop() is None:
        func(*args)
        return
    threading.Thread(target=func, args=args, name=OFF_LOOP_THREAD, daemon=True).start()


def release_waiter(loop: Any, future: Any) -> None:
    """Wake a coroutine held by the mediator (thread-safe; a closed loop is ignored)."""
    def wake() -> None:
        if not future.done():
            future.set_result(None)

    try:
        loop.call_soon_threadsafe(wake)
    except RuntimeError:
        pass


def new_waiter() -> Optional[tuple]:
    """(loop, future) on the calling thread's running loop, or None when no loop runs here."""
    loop = running_loop()
    if loop is None:
        return None
    return loop, loop.create_future()
