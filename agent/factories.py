"""K42 factories: every `updatable` class keeps a weak list of its live instances.

The bookkeeping happens once, at creation, through a `__new__` installed on
the class that appends a weak reference to the class's list; methods get no
wrapper, so calls cost exactly what they cost without dynupdate. Weak
references without callbacks are the cheapest to create; the dead ones are
swept after a garbage collection once the list has doubled since the last
sweep, which keeps the list within twice the live count without adding any
work to object creation or destruction.
"""
from __future__ import annotations

import contextlib
import gc
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, TypeVar

from . import typeslots
from .plan import Op

T = TypeVar("T", bound=type)


class NotUpdatableError(TypeError):
    """The class cannot be tracked (its instances cannot be weakly referenced)."""


class Factory:
    """The instance list of one updatable class."""

    __slots__ = ("cls", "refs", "swept_at", "_sweeping")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        #: never replaced, only mutated in place: the installed `__new__` holds its bound `append`
        self.refs: List[Any] = []
        self.swept_at = 64
        self._sweeping = threading.Lock()

    def live(self) -> List[Any]:
        return [obj for obj in [r() for r in list(self.refs)] if obj is not None]

    def sweep(self) -> None:
        """Drop dead references without ever losing one appended meanwhile.

        Other threads keep appending while the survivors are computed (the
        comprehension runs Python code, so the GIL is handed over). Only the
        prefix that existed when the sweep began is rewritten, in one slice
        assignment (a single C call, atomic under the GIL); everything appended
        after that point lies beyond the prefix and is kept. One sweep at a
        time: a second sweep interleaved with the first would rewrite a prefix
        that the first has already shortened.
        """
        if not self._sweeping.acquire(blocking=False):
            return
        try:
            refs = self.refs
            end = len(refs)
            kept = [r for r in refs[:end] if r() is not None]
            refs[:end] = kept
            self.swept_at = max(64, 2 * len(refs))
        finally:
            self._sweeping.release()

    def seed(self, objs: List[Any]) -> None:
        """Add instances that existed before the class became a factory (found by the engine)."""
        ref = weakref.ref
        self.refs.extend(ref(obj) for obj in objs)

    def __len__(self) -> int:
        return sum(1 for r in list(self.refs) if r() is not None)


_registry: Dict[type, Factory] = {}
_hooks: Dict[type, typeslots.NewHook] = {}  #: each factory's `__new__` (for `unregister`)
_lock = threading.Lock()
_deferring = threading.local()


def _after_gc(phase: str, info: Dict[str, Any]) -> None:
    if phase != "stop":
        return
    for factory in list(_registry.values()):
        if len(factory.refs) > factory.swept_at:
            factory.sweep()


def _see_through(cls: type) -> Any:
    from .instances import see_through  # instances builds on this module

    return see_through(cls)


def _make_new(cls: type, factory: Factory, original_new: Any) -> Any:
    append = factory.refs.append
    ref = weakref.ref
    if original_new is object.__new__:
        new_object = object.__new__

        def __new__(klass, *args, **kwargs):
            self = new_object(klass)
            append(ref(self))
            return self
    else:
        def __new__(klass, *args, **kwargs):
            self = original_new(klass, *args, **kwargs)
            append(ref(self))
            return self
    __new__.__qualname__ = f"{cls.__qualname__}.__new__"
    __new__._dynupdate_factory = True  # type: ignore[attr-defined]
    return __new__


@contextlib.contextmanager
def deferred_registration() -> Iterator[List[type]]:
    """While the engine runs a bundle's new source, `@updatable` only notes the class.

    The new source's classes are templates for the live ones; registering them
    as factories would show phantom classes in `status`.
    """
    noted: List[type] = []
    _deferring.noted = noted
    try:
        yield noted
    finally:
        _deferring.noted = None


def updatable(cls: T) -> T:
    """Make `cls` a factory whose live instances the agent can find on update.

    Instances created before the decoration are not in the list; a class that
    becomes updatable through a patch is seeded by the engine at the safe
    point (`register`).
    """
    if not isinstance(cls, type):
        raise TypeError("@updatable decorates classes")
    noted = getattr(_deferring, "noted", None)
    if noted is not None:
        noted.append(cls)
        return cls
    if not hasattr(cls, "__weakref__") and "__slots__" in vars(cls):
        raise NotUpdatableError(f"{cls.__qualname__} uses __slots__ without '__weakref__'; add it to track instances")
    with _lock:
        if cls in _registry:
            return cls
        if not _registry:
            gc.callbacks.append(_after_gc)
        factory = Factory(cls)
        original_new, watch = _see_through(cls)
        if getattr(original_new, "_dynupdate_factory", False):
            original_new = object.__new__  # a subclass of an updatable class gets a list of its own
        _hooks[cls] = typeslots.NewHook(cls, _make_new(cls, factory, original_new), replaces=watch)
        _registry[cls] = factory
    return cls


def register(cls: type, existing: List[Any]) -> Factory:
    """Make `cls` a factory during an update, its list seeded with the instances the
    engine decided on at the safe point (those created before it became a factory)."""
    updatable(cls)
    factory = _registry[cls]
    factory.seed([obj for obj in existing if type(obj) is cls or not _own_factory(type(obj))])
    return factory


class Register(Op):
    """Make a plain class a factory during an update (undone by `unregister`).

    `existing()` lists the instances created before: called once the factory's
    `__new__` is in place, so an instance created meanwhile is in the list
    either way.
    """

    def __init__(self, cls: type, existing: Callable[[], List[Any]]) -> None:
        self.cls, self.existing = cls, existing

    def apply(self) -> None:
        factory = register(self.cls, [])
        factory.seed([obj for obj in self.existing() if type(obj) is self.cls or not _own_factory(type(obj))])

    def undo(self) -> None:
        unregister(self.cls)


def _own_factory(klass: type) -> bool:
    return klass in _registry


def unregister(cls: type) -> None:
    """Undo `register`: the class is plain again (its `__new__` as before, no list)."""
    with _lock:
        factory = _registry.pop(cls, None)
        if factory is None:
            return
        hook = _hooks.pop(cls, None)
        if hook is not None:
            hook.remove()
        if not _registry and _after_gc in gc.callbacks:
            gc.callbacks.remove(_after_gc)


def factories() -> Dict[type, Factory]:
    with _lock:
        return dict(_registry)


def live_instances(cls: type) -> List[object]:
    """Strong snapshot of the instances of `cls` (subclasses included)."""
    related = [f for klass, f in factories().items() if issubclass(klass, cls) or issubclass(cls, klass)]
    if len(related) == 1 and related[0].cls is cls:  # the common case: one list, nothing to merge
        return related[0].live()
    result = []
    seen = set()
    for factory in related:
        for obj in factory.live():
            if isinstance(obj, cls) and id(obj) not in seen:
                seen.add(id(obj))
                result.append(obj)
    return result


def count(cls: type) -> int:
    """Cheap change detector for the instances related to `cls` (counts dead refs too)."""
    return sum(len(f.refs) for klass, f in factories().items()
               if issubclass(klass, cls) or issubclass(cls, klass))


def is_updatable(cls: type) -> bool:
    return any(issubclass(cls, klass) for klass in factories())
