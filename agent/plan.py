"""Reversible operations: the only way the engine changes live objects.

An update is prepared into a list of operations while the target runs; the
swap applies them in order and, if anything fails, undoes the applied ones in
reverse. Each operation records exactly what it replaced, so undo restores
the previous objects themselves (identity included), not copies.
"""
from __future__ import annotations

import types
from typing import Any, Dict, List, Optional

from .forward import FORWARD, forwarder_code

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()

_FN_FIELDS = ("__code__", "__defaults__", "__kwdefaults__", "__annotations__", "__doc__", "__name__",
              "__qualname__")


def function_state(fn: types.FunctionType, like: Optional[types.FunctionType] = None) -> Dict[str, Any]:
    """The replaceable parts of a function (everything but globals and closure)."""
    state = {f: getattr(fn, f) for f in _FN_FIELDS}
    extra = dict(fn.__dict__)
    if like is not None and "__wrapped__" in like.__dict__:
        extra["__wrapped__"] = like.__dict__["__wrapped__"]  # the live inner function stays
    else:
        extra.pop("__wrapped__", None)
    state["__dict__"] = extra
    return state


def restore_function(fn: types.FunctionType, state: Dict[str, Any]) -> None:
    for field in _FN_FIELDS:
        setattr(fn, field, state[field])
    fn.__dict__.clear()
    fn.__dict__.update(state["__dict__"])


class Op:
    """One reversible change. `code` ops are undone by a version rollback too."""

    code = True

    def apply(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError

    def inverse(self) -> "Op":
        """An op that, applied, does what undo() does (used by rollback)."""
        return _Inverse(self)


class _Inverse(Op):
    def __init__(self, op: Op) -> None:
        self.op = op
        self.code = op.code

    def apply(self) -> None:
        self.op.undo()

    def undo(self) -> None:
        self.op.apply()

    def inverse(self) -> Op:
        return self.op

    def __repr__(self) -> str:
        return f"undo({self.op!r})"


class UpdateFunction(Op):
    """Give a live function new code in place, so every reference runs it."""

    def __init__(self, fn: types.FunctionType, source: types.FunctionType) -> None:
        self.fn = fn
        self.before = function_state(fn, like=fn)
        self.after = function_state(source, like=fn)

    def apply(self) -> None:
        restore_function(self.fn, self.after)

    def undo(self) -> None:
        restore_function(self.fn, self.before)

    def __repr__(self) -> str:
        return f"update {self.fn.__qualname__}"


class ForwardFunction(Op):
    """Make a replaced function object run its replacement (see forward.py).

    The old object stays where references hold it (bound methods, tuples,
    callbacks, `__wrapped__`, calls parked by the mediator); its code becomes
    a forwarder of the same closure shape, so each of them runs the new code.
    """

    def __init__(self, fn: types.FunctionType, target: Any, *, back: bool = True) -> None:
        self.fn = fn
        self.target = target
        #: on rollback, make `target` forward back to `fn`; False when `target` is a live
        #: function updated in place by the same plan (its own undo restores it)
        self.back = back
        self.before = fn.__code__  # taken at prepare, before the mediator interposes
        self.before_target = fn.__dict__.get(FORWARD, MISSING)
        self.forwarder = forwarder_code(fn)
        #: the replacement's own code, also taken before any mediator: a rollback
        #: (after later updates were rolled back, LIFO) finds it running this again
        self.target_code: Optional[types.CodeType] = getattr(target, "__code__", None) \
            if isinstance(target, types.FunctionType) else None

    def apply(self) -> None:
        _forward(self.fn, self.target, self.forwarder)

    def undo(self) -> None:
        _unforward(self.fn, self.before, self.before_target)

    def inverse(self) -> Op:
        """Rolled back: the old function runs its own code again, and the replacement,
        wherever it is still referenced (a bound method taken since, a held call),
        forwards back to it."""
        if self.back and isinstance(self.target, types.FunctionType):
            return _ForwardBack(self)
        return super().inverse()

    def __repr__(self) -> str:
        return f"forward {self.fn.__qualname__} to its replacement"


class _ForwardBack(Op):
    def __init__(self, op: ForwardFunction) -> None:
        self.op = op
        target = op.target
        self.target_code = target.__code__ if op.target_code is None else op.target_code
        self.target_before = target.__dict__.get(FORWARD, MISSING)
        self.forwarder = forwarder_code(target)

    def apply(self) -> None:
        self.op.undo()
        _forward(self.op.target, self.op.fn, self.forwarder)

    def undo(self) -> None:
        _unforward(self.op.target, self.target_code, self.target_before)
        self.op.apply()

    def inverse(self) -> Op:
        return self.op

    def __repr__(self) -> str:
        return f"forward the replacement of {self.op.fn.__qualname__} back to it"


def _forward(fn: types.FunctionType, target: Any, forwarder: types.CodeType) -> None:
    fn.__dict__[FORWARD] = target
    fn.__code__ = forwarder


def _unforward(fn: types.FunctionType, code: types.CodeType, target: Any) -> None:
    fn.__code__ = code
    if target is MISSING:
        fn.__dict__.pop(FORWARD, None)
    else:
        fn.__dict__[FORWARD] = target


class ClearCache(Op):
    """Empty a memoizing wrapper's cache (`functools.lru_cache`): its results came from
    other code. Undo empties it again, for the same reason."""

    def __init__(self, wrapper: Any) -> None:
        self.wrapper = wrapper

    def apply(self) -> None:
        self.wrapper.cache_clear()

    def undo(self) -> None:
        self.wrapper.cache_clear()

    def __repr__(self) -> str:
        return f"clear the cache of {getattr(self.wrapper, '__qualname__', self.wrapper)!r}"


class SetAttr(Op):
    """Set (or, with MISSING, delete) an attribute of a module or class."""

    def __init__(self, obj: Any, name: str, value: Any, *, code: bool = True) -> None:
        self.obj = obj
        self.name = name
        self.value = value
        self.code = code
        self.before: Any = MISSING

    def _set(self, value: Any) -> None:
        if value is MISSING:
            if self.name in vars(self.obj):
                delattr(self.obj, self.name)
        else:
            setattr(self.obj, self.name, value)

    def apply(self) -> None:
        self.before = vars(self.obj).get(self.name, MISSING)
        self._set(self.value)

    def undo(self) -> None:
        self._set(self.before)

    def __repr__(self) -> str:
        owner = getattr(self.obj, "__qualname__", getattr(self.obj, "__name__", "?"))
        verb = "delete" if self.value is MISSING else "set"
        return f"{verb} {owner}.{self.name}"


class SetItem(Op):
    """Redirect one reference held in a dict or list to a replacement object."""

    def __init__(self, container: Any, key: Any, old: Any, new: Any) -> None:
        self.container, self.key, self.old, self.new = container, key, old, new
        self.applied = False

    def apply(self) -> None:
        try:
            if self.container[self.key] is self.old:
                self.container[self.key] = self.new
                self.applied = True
        except (KeyError, IndexError):
            pass

    def undo(self) -> None:
        if self.applied:
            try:
                if self.container[self.key] is self.new:
                    self.container[self.key] = self.old
            except (KeyError, IndexError):
                pass
            self.applied = False

    def __repr__(self) -> str:
        return f"redirect a reference to {getattr(self.old, '__qualname__', type(self.old).__name__)}"


class SetCell(Op):
    """Redirect a closure cell (e.g. a decorator's reference) to a replacement."""

    def __init__(self, cell: Any, old: Any, new: Any) -> None:
        self.cell, self.old, self.new = cell, old, new

    def apply(self) -> None:
        if self.cell.cell_contents is self.old:
            self.cell.cell_contents = self.new

    def undo(self) -> None:
        if self.cell.cell_contents is self.new:
            self.cell.cell_contents = self.old

    def __repr__(self) -> str:
        return f"set a closure cell holding {getattr(self.old, '__qualname__', type(self.old).__name__)}"


class HideSources(Op):
    """Part of a rollback: the rolled-back update's sources leave linecache (sources.py)."""

    def __init__(self, leases: List[Any]) -> None:
        self.leases = leases

    def apply(self) -> None:
        for lease in self.leases:
            lease.suspend()

    def undo(self) -> None:
        for lease in self.leases:
            lease.resume()

    def inverse(self) -> Op:  # pragma: no cover - a rollback's plan is never inverted again
        return _Inverse(self)

    def __repr__(self) -> str:
        return f"take {', '.join(lease.filename for lease in self.leases)} out of linecache"


class Plan:
    """An ordered list of operations applied all-or-nothing."""

    def __init__(self) -> None:
        self.ops: List[Op] = []
        self._applied = 0
        #: sources.SourceLease objects of the bundle files this plan's code came from
        self.sources: List[Any] = []

    def add(self, op: Op) -> None:
        self.ops.append(op)

    def extend(self, ops: List[Op]) -> None:
        self.ops.extend(ops)

    def apply(self) -> None:
        """Apply every op; on failure undo the applied ones and re-raise."""
        self._applied = 0
        try:
            for op in self.ops:
                op.apply()
                self._applied += 1
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        for op in reversed(self.ops[: self._applied]):
            op.undo()
        self._applied = 0

    def inverse(self) -> "Plan":
        inv = Plan()
        inv.ops = [op.inverse() for op in reversed(self.ops) if op.code]
        if self.sources:
            inv.ops.append(HideSources(self.sources))
        return inv
