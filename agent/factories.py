"""K42 factories: every `updatable` class keeps a weak list of its live instances.

The bookkeeping happens once, at creation, through a `__new__` installed on
the class; methods get no wrapper, so calls cost exactly what they cost
without dynupdate. Instances are held by weak references, so the registry
never keeps an object alive.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Dict, Iterator, List, TypeVar

T = TypeVar("T", bound=type)

_registry: Dict[type, "weakref.WeakSet"] = {}
_lock = threading.Lock()


class NotUpdatableError(TypeError):
    """The class cannot be tracked (its instances cannot be weakly referenced)."""


def _make_new(cls: type, instances: "weakref.WeakSet", original_new):
    add = instances.add
    if original_new is object.__new__:
        def __new__(klass, *args, **kwargs):
            self = object.__new__(klass)
            add(self)
            return self
    else:
        def __new__(klass, *args, **kwargs):
            self = original_new(klass, *args, **kwargs)
            add(self)
            return self
    __new__.__qualname__ = f"{cls.__qualname__}.__new__"
    __new__._dynupdate_factory = True
    return staticmethod(__new__)


_deferring = threading.local()


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
    """Make `cls` a factory whose live instances the agent can find on update."""
    if not isinstance(cls, type):
        raise TypeError("@updatable decorates classes")
    noted = getattr(_deferring, "noted", None)
    if noted is not None:
        noted.append(cls)
        return cls
    if "__slots__" in cls.__dict__ and "__weakref__" not in cls.__slots__ and not hasattr(cls, "__weakref__"):
        raise NotUpdatableError(f"{cls.__qualname__} uses __slots__ without '__weakref__'; add it to track instances")
    with _lock:
        if cls in _registry:
            return cls
        instances: weakref.WeakSet = weakref.WeakSet()
        original_new = cls.__new__
        if getattr(original_new, "_dynupdate_factory", False):
            # A subclass of an updatable class: let the inherited hook record it
            # in the base's list, and also keep a list of its own.
            original_new = object.__new__
        cls.__new__ = _make_new(cls, instances, original_new)
        _registry[cls] = instances
    return cls


def factories() -> Dict[type, "weakref.WeakSet"]:
    with _lock:
        return dict(_registry)


def live_instances(cls: type) -> List[object]:
    """Strong snapshot of the instances of `cls` (subclasses included)."""
    result = []
    seen = set()
    for klass, instances in factories().items():
        if issubclass(klass, cls) or issubclass(cls, klass):
            for obj in list(instances):
                if isinstance(obj, cls) and id(obj) not in seen:
                    seen.add(id(obj))
                    result.append(obj)
    return result


def count(cls: type) -> int:
    """Cheap count of tracked instances related to `cls` (no iteration)."""
    return sum(len(instances) for klass, instances in factories().items()
               if issubclass(klass, cls) or issubclass(cls, klass))


def is_updatable(cls: type) -> bool:
    return any(issubclass(cls, klass) for klass in factories())
