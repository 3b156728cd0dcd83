"""Modules a bundle brings that the process has not imported yet.

They are not executed during the update; a finder placed first on
`sys.meta_path` serves the bundle's source when the program imports them
later. Rolling back removes the finder (a module already imported by then
stays loaded: Python cannot unload it).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any, Dict, Optional, Tuple

from .plan import Op


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
