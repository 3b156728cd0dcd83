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

import importlib.abc
import importlib.util
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

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
        except Exception:
            continue
        if spec is not None:
            return spec
    return None


class RestoreImports(Op):
    """Rollback of InstallFinder: remove the finder, and bring modules it served back to their original code."""

    def __init__(self, finder: BundleFinder) -> None:
        self.finder = finder
        self.done: List[Tuple[types.ModuleType, Plan, Dict[str, Any]]] = []
        self.dropped: List[Tuple[str, types.ModuleType]] = []

    def _served(self) -> List[types.ModuleType]:
        out = []
        for name in self.finder.sources:
            module = sys.modules.get(name)
            spec = getattr(module, "__spec__", None)
            if module is not None and getattr(spec, "loader", None) is self.finder:
                out.append(module)
        return out

    def apply(self) -> None:
        from . import diff

        InstallFinder(self.finder).undo()
        try:
            for module in self._served():
                spec = _original_spec(module.__name__, self.finder)
                loader = getattr(spec, "loader", None)
                source = loader.get_source(module.__name__) if hasattr(loader, "get_source") else None
                if source is None:  # nothing to go back to: later imports fail as they would have
                    self.dropped.append((module.__name__, module))
                    del sys.modules[module.__name__]
                    continue
                mp = diff.plan_module(module.__name__, source, spec.origin or module.__name__)
                origin = {f: vars(module).get(f, MISSING) for f in _ORIGIN_FIELDS}
                mp.plan.apply()
                self.done.append((module, mp.plan, origin))
                module.__spec__, module.__loader__, module.__file__ = spec, loader, spec.origin
                module.__dict__.pop("__cached__", None)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        for module, plan, origin in reversed(self.done):
            plan.undo()
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
