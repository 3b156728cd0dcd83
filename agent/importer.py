"""Modules a bundle brings that the process has not imported yet, and `__main__`.

Such modules are not executed during the update; a finder placed first on
`sys.meta_path` serves the bundle's source when the program imports them
later (typically in a worker that a pre-fork server forks after the update).
Rolling back removes the finder, so later imports load the original source,
and restores the original code in place in a module that was imported from
the finder meanwhile (same identity rules as any rollback: functions and
classes keep their identity, data keeps its live value).

`live_module` decides which live module a bundle module updates: a program
started with `python -m pkg.app` runs `pkg.app` as `sys.modules["__main__"]`
and has no `pkg.app` module at all, so a bundle naming `pkg.app` (or naming
`"__main__"` explicitly, for `python app.py`) updates `__main__`.
"""
from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

from . import instances
from .plan import MISSING, Op, Plan

MAIN = "__main__"
#: the name a new `__main__` source runs under in its throwaway namespace (as multiprocessing does),
#: so that its `if __name__ == "__main__":` block does not start the program a second time
MAIN_RUN_AS = "__mp_main__"
_ORIGIN_FIELDS = ("__spec__", "__loader__", "__file__", "__cached__")


def live_module(name: str) -> Tuple[Optional[types.ModuleType], str]:
    """(the live module a bundle module `name` updates, the name to run its new source under)."""
    main = sys.modules.get(MAIN)
    if name == MAIN:
        return main, MAIN_RUN_AS
    live = sys.modules.get(name)
    if live is None and main is not None:
        spec = getattr(main, "__spec__", None)
        if spec is not None and getattr(spec, "name", None) == name:
            return main, name
    return live, name


def is_main(module: Optional[types.ModuleType]) -> bool:
    """Whether `module` is the program's `__main__` (whatever name the bundle gave it)."""
    return module is not None and module is sys.modules.get(MAIN)


def adopt_into_main(namespace: Dict[str, Any], run_as: str) -> str:
    """New-source classes ran as module `run_as`; they replace classes of `__main__`. Returns "__main__"."""
    seen = set()

    def rename(cls: type) -> None:
        if id(cls) in seen or cls.__module__ != run_as:
            return
        seen.add(id(cls))
        cls.__module__ = MAIN
        for value in list(vars(cls).values()):
            if isinstance(value, type):
                rename(value)

    for value in list(namespace.values()):
        if isinstance(value, type):
            rename(value)
    return MAIN


class BundleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, sources: Dict[str, Tuple[str, str]]) -> None:
        self.sources = sources  # module name -> (source, filename)
        self.prepared: Optional[List[_Restoration]] = None  # set by prepare_restore for the next rollback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if fullname not in self.sources:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.sources[fullname][1])

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        source, filename = self.sources[module.__name__]
        module.__file__ = filename
        exec(compile(source, filename, "exec", dont_inherit=True), vars(module))


class InstallFinder(Op):
    def __init__(self, finder: BundleFinder) -> None:
        self.finder = finder

    def apply(self) -> None:
        sys.meta_path.insert(0, self.finder)

    def undo(self) -> None:
        try:
            sys.meta_path.remove(self.finder)
        except ValueError:
            pass

    def inverse(self) -> Op:
        return RestoreImports(self.finder)


def _original_spec(name: str, finder: BundleFinder) -> Optional[Any]:
    """The spec the import system finds for `name` without our finder (sys.modules aside)."""
    parent = name.rpartition(".")[0]
    path = getattr(sys.modules.get(parent), "__path__", None) if parent else None
    for other in sys.meta_path:
        if other is finder or not hasattr(other, "find_spec"):
            continue
        try:
            spec = other.find_spec(name, path)
        except Exception:  # noqa: BLE001, S112 - a failing third-party finder must not fail the rollback
            continue
        if spec is not None:
            return spec
    return None


def _standalone(fn: Any) -> Optional[types.FunctionType]:
    """A copy of a hook function that the swap cannot change under us."""
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return None
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    return clone


def _revert_hooks(module: types.ModuleType) -> List[Tuple[Any, types.FunctionType]]:
    """The bundle version's `__dynupdate_revert__` hooks: (class or None for the module, hook)."""
    from .diff import REVERT

    hooks: List[Tuple[Any, types.FunctionType]] = []
    for value in list(vars(module).values()):
        if isinstance(value, type) and value.__module__ == module.__name__:
            hook = _standalone(vars(value).get(REVERT))
            if hook is not None:
                hooks.append((value, hook))
    module_hook = _standalone(vars(module).get(REVERT))
    if module_hook is not None:
        hooks.append((None, module_hook))
    return hooks


def _same_hook(hook: types.FunctionType, klass: type) -> types.FunctionType:
    return hook


def _run_reverts(module: types.ModuleType, hooks: List[Tuple[Any, types.FunctionType]],
                 transfer: instances.EagerTransfer) -> None:
    """Bring state created by the bundle's code back to the original layout, as any rollback does."""
    def no_progress(done: int, total: int) -> None:
        pass

    for cls, hook in hooks:
        if cls is None:
            hook(dict(vars(module)))
        else:
            transfer.run(instances.find([cls])[cls], functools.partial(_same_hook, hook), no_progress)


class _Restoration:
    """One module a finder served, prepared to go back to its original code (plan None: no original)."""

    def __init__(self, module: types.ModuleType, spec: Any, plan: Optional[Plan]) -> None:
        self.module, self.spec, self.plan = module, spec, plan


def _served(finder: BundleFinder) -> List[types.ModuleType]:
    """Modules the program imported from `finder` since the update."""
    out = []
    for name in finder.sources:
        module = sys.modules.get(name)
        if module is not None and getattr(getattr(module, "__spec__", None), "loader", None) is finder:
            out.append(module)
    return out


def _prepare(finder: BundleFinder) -> List[_Restoration]:
    from . import diff

    out = []
    for module in _served(finder):
        spec = _original_spec(module.__name__, finder)
        loader: Any = getattr(spec, "loader", None)
        source = loader.get_source(module.__name__) if hasattr(loader, "get_source") else None
        if spec is None or source is None:
            out.append(_Restoration(module, None, None))
            continue
        out.append(_Restoration(module, spec, diff.plan_module(module.__name__, source,
                                                               spec.origin or module.__name__).plan))
    return out


def prepare_restore(finders: List[Optional[BundleFinder]]) -> List[Any]:
    """Before a rollback's safe-point wait: plan the return to the original code of every module
    imported from these finders meanwhile (the original source runs now, like any prepare).
    Returns those modules and their classes, for the safe point to wait on and the mediator to hold."""
    namespaces: List[Any] = []
    for finder in finders:
        if finder is None:
            continue
        finder.prepared = _prepare(finder)
        for r in finder.prepared:
            namespaces.append(r.module)
            namespaces.extend(v for v in list(vars(r.module).values())
                              if isinstance(v, type) and v.__module__ == r.module.__name__)
    return namespaces


class RestoreImports(Op):
    """Rollback of InstallFinder: remove the finder, and bring modules it served back to their original
    code in place, running the bundle version's `__dynupdate_revert__` hooks on their state."""

    def __init__(self, finder: BundleFinder) -> None:
        self.finder = finder
        #: (module, plan back to the original, its origin fields, its namespace, the reverts run)
        self.done: List[Tuple[types.ModuleType, Plan, Dict[str, Any], Dict[str, Any], Any]] = []
        self.dropped: List[Tuple[str, types.ModuleType]] = []

    def apply(self) -> None:
        restorations = self.finder.prepared
        if restorations is None:  # not prepared before the safe point (a caller other than rollback)
            restorations = _prepare(self.finder)
        self.finder.prepared = None
        InstallFinder(self.finder).undo()
        try:
            for r in restorations:
                module = r.module
                if r.plan is None:  # nothing to go back to: later imports fail as they would have
                    self.dropped.append((module.__name__, module))
                    sys.modules.pop(module.__name__, None)
                    continue
                origin = {f: vars(module).get(f, MISSING) for f in _ORIGIN_FIELDS}
                reverts = _revert_hooks(module)  # the bundle's, taken before its code goes
                transfer = instances.EagerTransfer()
                self.done.append((module, r.plan, origin, dict(vars(module)), transfer))
                r.plan.apply()
                _run_reverts(module, reverts, transfer)
                module.__spec__, module.__loader__, module.__file__ = r.spec, r.spec.loader, r.spec.origin
                module.__dict__.pop("__cached__", None)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        for module, plan, origin, namespace, transfer in reversed(self.done):
            transfer.undo()
            plan.undo()
            vars(module).clear()
            vars(module).update(namespace)
            for field, value in origin.items():
                if value is MISSING:
                    module.__dict__.pop(field, None)
                else:
                    module.__dict__[field] = value
        for name, module in reversed(self.dropped):
            sys.modules[name] = module
        self.done, self.dropped = [], []
        if self.finder not in sys.meta_path:
            sys.meta_path.insert(0, self.finder)

    def __repr__(self) -> str:
        return f"RestoreImports({sorted(self.finder.sources)})"
