"""Finding the live instances of a class and carrying their state over eagerly.

Instances of `updatable` classes come from the factory's weak list; for any
other class the heap is scanned once, so patches also work on programs that
never imported the agent.
"""
from __future__ import annotations

import gc
from typing import Any, Callable, Dict, List, Tuple

from . import factories


def subclasses(cls: type) -> List[type]:
    found, todo = [], [cls]
    while todo:
        klass = todo.pop()
        found.append(klass)
        try:
            todo.extend(type.__subclasses__(klass))
        except TypeError:
            pass
    return found


def find(classes: List[type]) -> Dict[type, List[Any]]:
    """For each class, its live instances (subclass instances included)."""
    result: Dict[type, List[Any]] = {}
    scan = []
    for cls in classes:
        if factories.is_updatable(cls):
            result[cls] = factories.live_instances(cls)
        else:
            scan.append(cls)
    if scan:
        owners: Dict[type, List[type]] = {}
        for cls in scan:
            result[cls] = []
            for sub in subclasses(cls):
                owners.setdefault(sub, []).append(cls)
        for obj in gc.get_objects():
            hit = owners.get(type(obj))
            if hit:
                for cls in hit:
                    result[cls].append(obj)
    return result


_slot_cache: "Dict[type, Tuple[str, ...]]" = {}


def _slot_names(cls: type) -> Tuple[str, ...]:
    cached = _slot_cache.get(cls)
    if cached is None:
        cached = _slot_cache[cls] = _compute_slot_names(cls)
    return cached


def _compute_slot_names(cls: type) -> Tuple[str, ...]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.extend(s for s in slots if s not in ("__dict__", "__weakref__"))
    return tuple(names)


def state_of(obj: Any) -> Dict[str, Any]:
    """A shallow copy of the instance's attributes (its __dict__ and slot values)."""
    try:  # never through the class's own __getattribute__ (lazy transfer hooks live there)
        state = dict(object.__getattribute__(obj, "__dict__"))
    except AttributeError:
        state = {}
    slots = _slot_names(type(obj))
    if not slots:
        return state
    for name in slots:
        try:
            state[name] = object.__getattribute__(obj, name)
        except AttributeError:
            pass
    return state


def restore_state(obj: Any, state: Dict[str, Any]) -> None:
    """Put an instance's attributes back exactly as `state_of` saw them."""
    slots = _slot_names(type(obj))
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        d = None
    if d is not None:
        d.clear()
        d.update({k: v for k, v in state.items() if k not in slots})
    for name in slots:
        if name in state:
            object.__setattr__(obj, name, state[name])
        else:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass


class EagerTransfer:
    """Run a transfer hook on every instance, remembering how to undo it."""

    def __init__(self) -> None:
        self.saved: List[Tuple[Any, Dict[str, Any]]] = []

    def run(self, objs: List[Any], hook_of: Callable[[type], Callable[..., Any]],
            progress: Callable[[int, int], None]) -> int:
        """Call hook_of(type(obj))(obj, old) on each object; hooks are looked up once per type."""
        total = len(objs)
        hooks: Dict[type, Callable[..., Any]] = {}
        save = self.saved.append
        for i, obj in enumerate(objs):
            cls = type(obj)
            hook = hooks.get(cls)
            if hook is None:
                hook = hooks[cls] = hook_of(cls)
            state = state_of(obj)
            save((obj, state))
            hook(obj, dict(state))
            if i % 5000 == 4999:
                progress(i + 1, total)
        return total

    def undo(self) -> None:
        for obj, state in reversed(self.saved):
            restore_state(obj, state)
        self.saved.clear()
