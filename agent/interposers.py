"""Interposers from bundles: user code in front of a live function, installed and removed with an update.

K42 interposed objects to add prologues and epilogues, present a changed
interface to old callers, or provide new implementations. A bundle declares

    [interpose]
    "shop.cart:Cart.checkout" = "audit.py:around"

and `around(call, *args, **kwargs)`, defined in a file of the bundle, decides
whether and how to call the original (`call(*args, **kwargs)`; for a method
`args` starts with `self`). The interposers are reversible operations of the
update itself: installed after the swap at the same safe point (so they wrap
the new code), undone with everything else if the update fails, and removed
by rolling the update back.

A target that the new version no longer has (a removed function or method)
is kept as an **adapter**: a function of that name calling ``around(None,
*args, **kwargs)``, so old callers keep working while the implementation moves.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from . import interpose, sources
from .plan import MISSING, Op, Plan, SetAttr


class InterposeError(Exception):
    """An `[interpose]` entry that cannot be prepared or installed; the update changes nothing."""


class _Dispatch:
    """What the forwarders call: key -> (the original's clone, around)."""

    def __init__(self) -> None:
        self.entries: Dict[int, Tuple[types.FunctionType, Any]] = {}
        self._next = 0

    def add(self, call: types.FunctionType, around: Any) -> int:
        self._next += 1
        self.entries[self._next] = (call, around)
        return self._next

    def __call__(self, key: int, args: tuple, kwargs: dict) -> Any:
        call, around = self.entries[key]
        return around(call, *args, **kwargs)


_dispatch = _Dispatch()


class InterposeFunction(Op):
    """The live function's code becomes a forwarder to `around`; undo puts the exact code back."""

    def __init__(self, fn: types.FunctionType, around: Any, label: str) -> None:
        self.fn, self.around, self.label = fn, around, label
        self.before: Optional[types.CodeType] = None

    def apply(self) -> None:
        self.before = self.fn.__code__
        key = _dispatch.add(interpose.original_clone(self.fn, self.before), self.around)
        self.fn.__code__ = interpose.forwarder(self.before, _dispatch, key)

    def undo(self) -> None:
        # unconditional: in a transaction nothing but the mediator's trampoline can sit on top of us,
        # and that trampoline must not bring the forwarder back when it is released
        if self.before is not None:
            self.fn.__code__ = self.before
        # the entry stays: a call that entered the forwarder just before still finds its `around`

    def __repr__(self) -> str:
        return f"interpose {self.label}"


def _adapter(name: str, around: Any) -> types.FunctionType:
    """A stand-in for a removed function: calls around(None, *args, **kwargs)."""
    def adapter(*args: Any, **kwargs: Any) -> Any:
        return around(None, *args, **kwargs)
    adapter.__name__ = adapter.__qualname__ = name
    adapter.__doc__ = f"dynupdate adapter: {name} was removed; calls go to the bundle's interposer"
    return adapter


class Prepared:
    """The bundle's interposers, compiled at prepare time, installed by `install` after the swap."""

    def __init__(self, entries: List[Tuple[str, Any]]) -> None:
        self.entries = entries  # (target, around)
        self.targets = [target for target, _ in entries]

    def install(self) -> Plan:
        """Resolve each target against the swapped code and apply; the plan is undone like any other."""
        plan = Plan()
        for target, around in self.entries:
            plan.add(_op_for(target, around))
        plan.apply()
        return plan


def _op_for(target: str, around: Any) -> Op:
    module_name, _, qualname = target.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        main = sys.modules.get("__main__")
        if getattr(getattr(main, "__spec__", None), "name", None) == module_name:
            module = main
    if module is None:
        raise InterposeError(f"[interpose] {target}: module {module_name!r} is not imported in this process")
    *path, name = qualname.split(".")
    owner: Any = module
    for part in path:
        owner = vars(owner).get(part, MISSING) if hasattr(owner, "__dict__") else MISSING
        if owner is MISSING:
            raise InterposeError(f"[interpose] {target}: {module_name}:{'.'.join(path)} does not exist")
    value = vars(owner).get(name, MISSING)
    if value is MISSING:
        return SetAttr(owner, name, _adapter(name, around))
    fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else \
        value.fget if isinstance(value, property) else value
    if not isinstance(fn, types.FunctionType):
        raise InterposeError(f"[interpose] {target} is a {type(value).__name__}, not a Python function")
    try:
        interpose.kind_of(fn.__code__)
    except interpose.NotInterposable as exc:
        raise InterposeError(f"[interpose] {target}: {exc}") from None
    return InterposeFunction(fn, around, target)


def prepare(bundle: Dict[str, Any]) -> Prepared:
    """Run each interposer file once in a private namespace and pick its function."""
    namespaces: Dict[str, Dict[str, Any]] = {}
    entries: List[Tuple[str, Any]] = []
    for item in bundle.get("interpose") or []:
        target, file, function = item["target"], item["file"], item["function"]
        if ":" not in target:
            raise InterposeError(f"[interpose] {target!r} must be MODULE:QUALNAME")
        ns = namespaces.get(file)
        if ns is None:
            filename = f"<dynupdate {bundle['name']}>/{file}"
            stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            ns = {"__name__": f"dynupdate_interpose.{stem}", "__file__": filename, "__builtins__": __builtins__}
            lease = sources.SourceLease(filename, item["source"])
            try:
                exec(compile(item["source"], filename, "exec", dont_inherit=True), ns)
            except BaseException as exc:
                raise InterposeError(f"[interpose] {file} raised while executing: {type(exc).__name__}: {exc}") \
                    from exc
            ns["__dynupdate_lease__"] = lease  # lives as long as the functions defined there
            namespaces[file] = ns
        around = ns.get(function)
        if not callable(around):
            raise InterposeError(f"[interpose] {target}: {file} defines no function {function!r}")
        entries.append((target, around))
    return Prepared(entries)
