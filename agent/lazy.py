"""Lazy update: instances are only marked during the swap; each one's state
is transferred on its first attribute access afterwards, exactly once.

While a class has instances pending, `__getattribute__`, `__setattr__`,
`__delattr__` and `__new__` on it are wrapped (new instances are born on the
new layout and are never transferred). The wrappers are removed as soon as no
instance is pending, so the steady state pays nothing. The swap itself only
installs the wrappers: its pause does not grow with the number of instances.

If a transfer hook raises, that instance's attributes are restored to what
they were before the hook ran, it stays pending (the next access retries),
and the access raises `LazyTransferError` chained to the hook's exception.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List, Optional, Tuple

from . import factories, instances, loops, typeslots
from .plan import MISSING

HOOK = "__dynupdate_transfer__"


class LazyTransferError(RuntimeError):
    """A lazy state transfer failed; the instance kept its previous state."""


class _IdSet:
    """Fallback for objects that cannot be weakly referenced."""

    def __init__(self) -> None:
        self._ids: set = set()

    def add(self, obj: Any) -> None:
        self._ids.add(id(obj))

    def __contains__(self, obj: Any) -> bool:
        return id(obj) in self._ids


class _Marks:
    def __init__(self) -> None:
        self._weak: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._ids = _IdSet()

    def add(self, obj: Any) -> None:
        try:
            self._weak.add(obj)
        except TypeError:
            self._ids.add(obj)

    def __contains__(self, obj: Any) -> bool:
        try:
            return obj in self._weak
        except TypeError:
            return obj in self._ids


class LazyClass:
    """The lazy-transfer state of one updated class."""

    def __init__(self, cls: type, expected: int) -> None:
        self.cls = cls
        self.done = _Marks()
        self.fresh = _Marks()
        self.lock = threading.RLock()
        self.transferring: set = set()
        self.remaining = expected
        self.transferred = 0
        self.failures = 0
        self.last_error: Optional[str] = None
        self._saved: Dict[str, Any] = {}
        self._new_hook: Optional[typeslots.NewHook] = None

    def is_pending(self, obj: Any) -> bool:
        return obj not in self.done and obj not in self.fresh

    def ensure(self, obj: Any) -> None:
        """Transfer `obj` if it is still pending (exactly once across threads)."""
        with self.lock:
            if id(obj) in self.transferring or not self.is_pending(obj):
                return
            if _active.get(self.cls) is not self:
                return  # detached by a rollback while this thread waited: nothing to transfer
            self._transfer(obj)
        if self.remaining <= 0:  # the exact check may scan the heap: never on an event-loop thread
            loops.off_loop(maybe_close, self)

    def _transfer(self, obj: Any) -> None:
        state = instances.state_of(obj)
        self.transferring.add(id(obj))
        try:
            getattr(type(obj), HOOK)(obj, dict(state))
        except BaseException as exc:
            instances.restore_state(obj, state)
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise LazyTransferError(
                f"lazy state transfer of a {type(obj).__qualname__} instance failed ({self.last_error}); "
                f"the instance keeps its previous state and the transfer is retried on its next use") from exc
        finally:
            self.transferring.discard(id(obj))
        self.done.add(obj)
        self.transferred += 1
        self.remaining -= 1

    # -- the wrappers -----------------------------------------------------
    def install(self) -> None:
        cls, lz = self.cls, self
        get_orig: Any = cls.__getattribute__
        set_orig: Any = cls.__setattr__
        del_orig: Any = cls.__delattr__
        new_orig, watch = instances.see_through(cls)  # past an update's watch, which goes away

        def __getattribute__(self: Any, name: str) -> Any:
            if lz.is_pending(self):
                lz.ensure(self)
            return get_orig(self, name)

        def __setattr__(self: Any, name: str, value: Any) -> None:
            if lz.is_pending(self):
                lz.ensure(self)
            set_orig(self, name, value)

        def __delattr__(self: Any, name: str) -> None:
            if lz.is_pending(self):
                lz.ensure(self)
            del_orig(self, name)

        def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
            obj = object.__new__(klass) if new_orig is object.__new__ else new_orig(klass, *args, **kwargs)
            lz.fresh.add(obj)
            return obj

        for name, value in (("__getattribute__", __getattribute__), ("__setattr__", __setattr__),
                            ("__delattr__", __delattr__)):
            self._saved[name] = cls.__dict__.get(name, MISSING)
            setattr(cls, name, value)
        self._new_hook = typeslots.NewHook(cls, __new__, replaces=watch)
        _active[cls] = self

    def uninstall(self) -> None:
        if self._new_hook is not None:
            self._new_hook.remove()
            self._new_hook = None
        for name, value in reversed(list(self._saved.items())):
            if value is MISSING:
                if name in self.cls.__dict__:
                    delattr(self.cls, name)
            else:
                setattr(self.cls, name, value)
        self._saved.clear()
        if _active.get(self.cls) is self:
            del _active[self.cls]

    def live(self) -> List[Any]:
        return instances.find([self.cls])[self.cls]

    def pending(self) -> List[Any]:
        return [obj for obj in self.live() if self.is_pending(obj)]


_active: Dict[type, LazyClass] = {}
_close_lock = threading.Lock()


def active() -> List[LazyClass]:
    return list(_active.values())


def maybe_close(lz: LazyClass) -> None:
    """Remove the wrappers once nothing is pending (an exact check, O(instances))."""
    with _close_lock:
        if _active.get(lz.cls) is not lz:
            return
        if lz.pending():
            lz.remaining = max(1, lz.remaining)
            return
        lz.uninstall()


def pending_count(cls: type) -> int:
    """Instances of `cls` still waiting for their lazy transfer (for `status`)."""
    total = 0
    for lz in active():
        if issubclass(lz.cls, cls) or issubclass(cls, lz.cls):
            count = len(lz.pending())
            total += count
            if count == 0:
                maybe_close(lz)
    return total


def finalize_all() -> int:
    """Complete every pending transfer now (before another update touches the class)."""
    done = 0
    for lz in active():
        for obj in lz.pending():
            lz.ensure(obj)
            done += 1
        maybe_close(lz)
    return done


def start(cls: type, expected: int) -> LazyClass:
    lz = LazyClass(cls, expected)
    lz.install()
    return lz


def start_decided(cls: type, census: instances.Census) -> Tuple[LazyClass, int]:
    """Mark the instances of a class that is no factory, as the census decides at the safe
    point, without walking them. Objects under construction and those created after the
    decision are fresh (they belong to the new version)."""
    count, building = census.decide_lazy(cls)
    lz = LazyClass(cls, count)
    for obj in building:
        lz.fresh.add(obj)
    lz.install()
    for obj in census.created_since_decided(cls):  # the watch saw them until the wrappers went in
        lz.fresh.add(obj)
    return lz, count


__all__ = ["LazyTransferError", "start", "active", "pending_count", "finalize_all", "factories"]
