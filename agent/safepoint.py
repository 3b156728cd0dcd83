"""Finding a safe point: no older work is inside the code being replaced.

Like Linux livepatch checking each task's stack, we look at every thread's
Python frames: a thread with a frame running a function the update replaces
blocks the swap until that frame returns. K42's generations add one rule: an
`activity()` begun before the update that is inside an affected module blocks
it until the activity ends, so a request finishes on the code it started on.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from . import generations, lazy

AGENT_THREAD_PREFIX = "dynupdate-agent"
#: a thread running a lazy state transfer is doing old-generation work: the swap waits for it,
#: and the mediator lets its calls through instead of holding them (which deadlocked the wait)
_LAZY_TRANSFER = lazy.LazyClass._transfer.__code__
_MEDIATOR_FILE = "<dynupdate mediator>"


class SafePoint:
    def __init__(self, codes: Iterable[Any], module_dicts: Iterable[dict], generation: int) -> None:
        self.codes: Set[Any] = set(codes)
        self.module_dicts = {id(d): d for d in module_dicts}
        self.generation = generation
        self.exclude: Set[int] = {threading.get_ident()}

    def _activity_generation(self, ident: int) -> Optional[int]:
        stack = generations._activities.get(ident)
        return min(stack) if stack else None

    def stack_blockers(self, frame: Any, ident: int) -> List[str]:
        """Why the thread whose innermost frame is `frame` keeps the swap waiting."""
        reasons = []
        act_gen = self._activity_generation(ident)
        old_activity = act_gen is not None and act_gen < self.generation
        while frame is not None:
            code = frame.f_code
            if code.co_filename == _MEDIATOR_FILE:
                pass  # parked at the mediator's entry (its globals are the module's): held, not running old code
            elif code in self.codes:
                reasons.append(f"{getattr(code, 'co_qualname', code.co_name)} "
                               f"({code.co_filename}:{frame.f_lineno})")
            elif code is _LAZY_TRANSFER:
                reasons.append("a lazy state transfer in progress")
            elif old_activity and id(frame.f_globals) in self.module_dicts:
                reasons.append(f"activity of generation {act_gen} in {frame.f_globals.get('__name__')}")
            frame = frame.f_back
        return reasons

    def in_flight(self, frame: Any) -> bool:
        """Called by the mediator: is the calling thread work we are waiting for?"""
        return bool(self.stack_blockers(frame, threading.get_ident()))

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
        return result

    def wait(self, timeout: float, tick: Callable[[Dict[str, List[str]], float], None],
             interval: float = 0.002, tick_every: float = 0.25) -> Optional[Dict[str, List[str]]]:
        """Wait until quiescent; None on success, else the blockers at the deadline.

        `tick(blockers, elapsed)` runs every `tick_every` seconds while waiting
        (progress for the client; it may raise to abort the wait).
        """
        start = time.monotonic()
        next_tick = start
        while True:
            blocking = self.blockers()
            if not blocking:
                return None
            now = time.monotonic()
            if now - start >= timeout:
                return blocking
            if now >= next_tick:
                tick(blocking, now - start)
                next_tick = now + tick_every
            time.sleep(min(interval * 2 if now - start > 0.05 else interval, 0.02))
            interval = min(interval * 1.5, 0.01)
