"""Putting a class's `__new__` back exactly as it was, after the agent removes its own.

The agent installs a `__new__` on a class for the length of an update (the
instance watch, lazy transfer) or for good (a factory). Deleting it again is
not enough in CPython: once `__new__` has been assigned on a class, deleting
it leaves the type's allocation slot (`tp_new`) on the generic path that calls
`__new__` with the constructor's arguments, and `object.__new__` refuses them
("object.__new__() takes exactly one argument"), so every later `Cls(x)` would
fail, for the class and its subclasses. No Python-level operation restores the
slot, so `NewHook.remove` writes it: a class (or subclass) left without a
Python-level `__new__` in its MRO gets its base's allocator, which is what
CPython gives such a class when it is created.

The slot is written through `ctypes` at the offset every CPython 3 release
uses (the `PyTypeObject` layout); the layout is checked on a probe class
first, field by field against what Python reports. Where the check fails
(another build or implementation) or `ctypes` is missing, the hook is not
deleted: it stays as a pass-through to the original allocator, which is
correct and costs one Python call per creation.
"""
from __future__ import annotations

import types
from typing import Any, Callable, List, Optional

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "<absent>"})()  #: "the class dict had no entry"

_TP_BASICSIZE, _TP_ITEMSIZE, _TP_FLAGS, _TP_BASE, _TP_DICTOFFSET, _TP_NEW = 1, 2, 18, 29, 33, 36
_slot: Optional[Callable[[type, Optional[int]], int]] = None
_checked = False


def _make_slot_access() -> Optional[Callable[[type, Optional[int]], int]]:
    try:
        import ctypes
    except ImportError:
        return None
    size = ctypes.sizeof(ctypes.c_void_p)
    head = 3 * size  # ob_refcnt, ob_type, ob_size

    def word(cls: type, index: int) -> int:
        return ctypes.c_ssize_t.from_address(id(cls) + head + index * size).value

    class Probe:
        def __init__(self, n: int) -> None:
            self.n = n

    class DictProbe(dict):
        pass

    mask = 0xFFFFFFFF
    try:
        layout_ok = (word(Probe, _TP_BASICSIZE) == Probe.__basicsize__ and word(Probe, _TP_ITEMSIZE) == 0
                     and word(Probe, _TP_FLAGS) & mask == Probe.__flags__ & mask
                     and word(Probe, _TP_BASE) == id(object) and word(DictProbe, _TP_BASE) == id(dict)
                     and word(Probe, _TP_DICTOFFSET) == Probe.__dictoffset__
                     and word(Probe, _TP_NEW) == word(object, _TP_NEW)
                     and word(DictProbe, _TP_NEW) == word(dict, _TP_NEW) != word(object, _TP_NEW))
    except Exception:
        return None
    if not layout_ok:
        return None

    def slot(cls: type, value: Optional[int] = None) -> int:
        cell = ctypes.c_void_p.from_address(id(cls) + head + _TP_NEW * size)
        if value is not None:
            cell.value = value
        return cell.value or 0

    # the proof: install, delete, restore on the probe, then construct with an argument
    saved = slot(Probe)
    type.__setattr__(Probe, "__new__", staticmethod(lambda klass, *a, **k: object.__new__(klass)))
    type.__delattr__(Probe, "__new__")
    slot(Probe, saved)
    try:
        if Probe(1).n != 1:
            return None
    except TypeError:
        return None
    return slot


def _access() -> Optional[Callable[[type, Optional[int]], int]]:
    global _slot, _checked
    if not _checked:
        _slot = _make_slot_access()
        _checked = True
    return _slot


def subclasses(cls: type) -> List[type]:
    """`cls` and every subclass, bases before their subclasses (`type.__subclasses__`, walked)."""
    found, todo = [], [cls]
    while todo:
        klass = todo.pop()
        found.append(klass)
        try:
            todo.extend(type.__subclasses__(klass))
        except TypeError:
            pass
    return found


class NewHook:
    """A `__new__` installed on one class, removable without a trace."""

    def __init__(self, cls: type, function: Callable[..., Any], replaces: "Optional[NewHook]" = None) -> None:
        """Install `function` as `cls.__new__`. `replaces`: a hook of ours that is current on
        `cls` and is superseded (what it would have restored is what this one restores)."""
        self.cls = cls
        self.installed = staticmethod(function)
        self.before: Any
        if replaces is not None and replaces.cls is cls and replaces.is_current():
            self.before = replaces.before
        else:
            self.before = vars(cls).get("__new__", ABSENT)
        if self.before is ABSENT:
            _access()  # check the layout (and import ctypes) now, not when removing: that runs at the safe point
        type.__setattr__(cls, "__new__", self.installed)

    def is_current(self) -> bool:
        return vars(self.cls).get("__new__") is self.installed

    def remove(self) -> bool:
        """Put back what the class dict held; False if the hook had to stay (a pass-through)."""
        if not self.is_current():
            return True  # replaced since (whoever did restores it on their own removal)
        if self.before is not ABSENT:
            type.__setattr__(self.cls, "__new__", self.before)
            return True
        slot = _access()
        if slot is None:
            return False
        type.__delattr__(self.cls, "__new__")
        # what CPython gives a class without a Python-level __new__ in its MRO: its base's allocator
        for klass in subclasses(self.cls):  # bases before their subclasses
            if not isinstance(klass.__new__, types.FunctionType) and klass.__base__ is not None:
                slot(klass, slot(klass.__base__, None))
        return True
