"""Finding a safe point: no older work is inside the code being replaced.

Like Linux livepatch checking each task's stack, we look at every thread's
Python frames: a thread with a frame running a function the update replaces
blocks the swap until that frame returns. K42's generations add one rule: an
`activity()` begun before the update that is inside an affected module blocks
it until the activity ends, so a request finishes on the code it started on.

asyncio adds work that is on no stack: a task suspended in `await` inside a
replaced coroutine. Every pending task of every loop is followed down its
chain of suspended coroutines (see `loops.chain_frames`) and counts exactly
like a thread running that code. Once nothing blocks, every running loop is
parked between two task steps (`loops.LoopPause`) and the check is repeated
with the loops still: the swap then lands at the same instant for every task.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from . import generations, lazy, loops

AGENT_THREAD_PREFIX = "dynupdate-agent"
#: a thread running a lazy state transfer is doing old-generation work: the swap waits for it,
#: and the mediator lets its calls through instead of holding them (which deadlocked the wait)
_LAZY_TRANSFER = lazy.LazyClass._transfer.__code__
_MEDIATOR_FILE = "<dynupdate mediator>"
#: tasks named one by one in progress and errors; the rest are counted (a service may have thousands)
MAX_NAMED_TASKS = 20


class SafePoint:
    def __init__(self, codes: Iterable[Any], module_dicts: Iterable[dict], generation: int) -> None:
        self.codes: Set[Any] = set(codes)
        self.module_dicts = {id(d): d for d in module_dicts}
        self.generation = generation
        self.exclude: Set[int] = {threading.get_ident()}
        #: every running loop, parked between task steps once the safe point is reached
        self.pause: Optional[loops.LoopPause] = None
        self.hold_limit = 10.0

    def _activity_generation(self, ident: int) -> Optional[int]:
        stack = generations._activities.get(ident)
        return min(stack) if stack else None

    def _frame_blocker(self, frame: Any, act_gen: Optional[int]) -> Optional[str]:
        """Why this one frame (running or suspended) is old work the swap waits for."""
        code = frame.f_code
        if code.co_filename == _MEDIATOR_FILE:
            return None  # parked at the mediator's entry (its globals are the module's): held, not running
        if code in self.codes:
            return f"{getattr(code, 'co_qualname', code.co_name)} ({code.co_filename}:{frame.f_lineno})"
        if code is _LAZY_TRANSFER:
            return "a lazy state transfer in progress"
        if act_gen is not None and act_gen < self.generation and id(frame.f_globals) in self.module_dicts:
            return f"activity of generation {act_gen} in {frame.f_globals.get('__name__')}"
        return None

    def task_blockers(self) -> Dict[str, List[str]]:
        """task label -> reasons, for every task suspended inside old work."""
        result: Dict[str, List[str]] = {}
        more = 0
        for task in loops.all_tasks():
            act_gen = generations.task_activity_generation(task)
            reasons = []
            try:
                for frame in loops.chain_frames(task.get_coro()):
                    reason = self._frame_blocker(frame, act_gen)
                    if reason is not None:
                        reasons.append(reason)
            except Exception:  # a task finishing under us: it is not old work any more
                continue
            if reasons:
                if len(result) < MAX_NAMED_TASKS:
                    result[loops.task_label(task)] = reasons
                else:
                    more += 1
        if more:
            result[f"{more} more task(s)"] = ["suspended in the code being replaced"]
        return result

    def stack_blockers(self, frame: Any, ident: int, act_gen: Optional[int] = None) -> List[str]:
        """Why the thread whose innermost frame is `frame` keeps the swap waiting."""
        reasons = []
        if act_gen is None:
            act_gen = self._activity_generation(ident)
        while frame is not None:
            reason = self._frame_blocker(frame, act_gen)
            if reason is not None:
                reasons.append(reason)
            frame = frame.f_back
        return reasons

    def in_flight(self, frame: Any) -> bool:
        """Called by the mediator: is the calling thread (or task) work we are waiting for?"""
        return bool(self.stack_blockers(frame, threading.get_ident(), generations.current_activity_generation()))

    def blockers(self) -> Dict[str, List[str]]:
        """thread name -> reasons, for every thread that is not yet safe."""
        names = {t.ident: t.name for t in threading.enumerate()}
        result: Dict[str, List[str]] = {}
        for ident, frame in sys._current_frames().items():
            name = names.get(ident, f"thread-{ident}")
            if ident in self.exclude or name.startswith(AGENT_THREAD_PREFIX):
                continue
            reasons = self.stack_blockers(frame, ident)
            if reasons:
                result[f"{name} ({ident})"] = reasons
        result.update(self.task_blockers())
        return result

    def _pause_loops(self, timeout: float) -> Optional[Dict[str, List[str]]]:
        """Park every running loop between task steps and re-check with them parked.

        None: quiescent with every loop parked (`self.pause` holds them until
        `resume_loops`). Otherwise the blockers found (nothing left parked).
        """
        running = [lp for lp in loops.running_loops() if lp is not loops.running_loop()]
        if not running:
            return None
        pause = loops.LoopPause(running, hold_limit=max(self.hold_limit, 1.0))
        if not pause.engage(max(timeout, 0.001)):
            return {"event loop": [f"{len(running)} running loop(s) did not reach a point between task steps "
                                   f"within {timeout * 1000:.0f} ms (a long synchronous step?)"]}
        blocking = self.blockers()
        if blocking:
            pause.resume()
            return blocking
        self.pause = pause
        return None

    def resume_loops(self) -> None:
        """Let parked loops run again (the swap is over, or was given up)."""
        if self.pause is not None:
            self.pause.resume()

    def check_loops(self) -> None:
        """Raise if a parked loop stopped waiting before the update ended (it must be undone)."""
        if self.pause is not None and self.pause.expired:
            raise loops.LoopPauseExpired(
                f"event loop thread(s) {', '.join(self.pause.expired)} stopped waiting after "
                f"{self.pause.hold_limit:g}s while the code was being swapped")

    def wait(self, timeout: float, tick: Callable[[Dict[str, List[str]], float], None],
             interval: float = 0.002, tick_every: float = 0.25) -> Optional[Dict[str, List[str]]]:
        """Wait until quiescent; None on success, else the blockers at the deadline.

        `tick(blockers, elapsed)` runs every `tick_every` seconds while waiting
        (progress for the client; it may raise to abort the wait).
        """
        start = time.monotonic()
        next_tick = start
        self.hold_limit = timeout
        while True:
            blocking = self.blockers()
            if not blocking:
                remaining = timeout - (time.monotonic() - start)
                paused = self._pause_loops(min(max(remaining, 0.05), 0.5))
                if paused is None:
                    return None
                blocking = paused
            now = time.monotonic()
            if now - start >= timeout:
                return blocking
            if now >= next_tick:
                tick(blocking, now - start)
                next_tick = now + tick_every
            time.sleep(min(interval * 2 if now - start > 0.05 else interval, 0.02))
            interval = min(interval * 1.5, 0.01)
