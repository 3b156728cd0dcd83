"""What an update will do, and what it will leave as it is, in words the user can act on.

The engine updates code and keeps state; two consequences surprise users
unless the result says so:
- a bundle module the process has not imported changes nothing now (it is
  installed for a later import), and one that cannot be found at all is most
  likely a typo: it is refused unless the bundle lists it in `new_modules`;
- a module-level constant (or a table the new source fills, such as a dict
  of prices) whose value changed in the new source keeps its live value
  (module data is state), unless a module `__dynupdate_transfer__` migrates it.
`annotate()` adds these warnings and a readable plan (`plan_summary`) to the
apply result. It runs after prepare and before the safe point, so a refusal
here changes nothing in the process.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, List, Optional

from .plan import MISSING, SetAttr, SetCell, SetItem, UpdateFunction

#: values compared old vs new: constants, whose divergence is a likely surprise
_CONSTANT = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset)
#: containers are compared only when the new source fills them (a table the author edited); an empty one
#: in the new source is a state initializer (`_cache = {}`) whose live contents are meant to differ
_TABLE = (list, dict, set)
_TABLE_LIMIT = 10000
_LIST_LIMIT = 200


def _find_spec(name: str) -> Optional[Any]:
    """The spec the import system would use for `name`, without importing anything."""
    parts = name.split(".")
    path = None
    spec = None
    for i in range(len(parts)):
        fullname = ".".join(parts[:i + 1])
        module = sys.modules.get(fullname)
        if module is not None:
            spec = getattr(module, "__spec__", None) or spec
            path = getattr(module, "__path__", None)
        else:
            spec = None
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                try:
                    spec = find(fullname, path)
                except Exception:
                    spec = None
                if spec is not None:
                    break
            if spec is None:
                return None
            path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:
            return None  # a parent that is not a package
    return spec


def _not_imported(bundle: Dict[str, Any], modules: List[Any]) -> List[str]:
    marked_new = set(bundle.get("new_modules") or [])
    warnings = []
    for mp in modules:
        if not mp.installed_new:
            continue
        if mp.name in marked_new:
            warnings.append(f"module {mp.name!r} is new (not imported by the process): it was installed for a "
                            f"later import; nothing runs it until the program imports it")
        elif _find_spec(mp.name) is not None:
            warnings.append(f"module {mp.name!r} is not imported by the process: it was installed for a later "
                            f"import; nothing changes until the program imports it")
        else:
            from .updater import UpdateError

            raise UpdateError("ModuleNotFound", f"module {mp.name!r} is neither imported by the process nor "
                              f"importable from its sys.path (a typo in [modules]?); if it is a new module, list "
                              f"it in patch.toml: new_modules = [{mp.name!r}]. Nothing was changed")
    return warnings


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kept_warning(module: str, name: str, old: Any, new: Any) -> Optional[str]:
    """The warning for one module-level name whose new-source value differs from the live value it keeps.

    Called by the differ while it still holds both values (it then drops the
    new one, see diff.py), so big new literals are not kept just to compare.
    """
    table = isinstance(new, _TABLE) and 0 < len(new) and (not isinstance(old, _TABLE) or len(old) <= _TABLE_LIMIT)
    if not table and not isinstance(new, _CONSTANT) and not isinstance(old, _CONSTANT):
        return None
    try:
        same = type(old) is type(new) and bool(old == new)
    except Exception:
        return None
    if same:
        return None
    return (f"{module}.{name}: the new source sets {_short(new)} but the process keeps its "
            f"live value {_short(old)} (module data is state); to change it, migrate it in a "
            f"module-level __dynupdate_transfer__(old)")


def _kept_constants(modules: List[Any]) -> List[str]:
    """Warnings the differ collected, except for modules whose own hook migrates their state."""
    return [w for mp in modules if mp.module is not None and mp.module_hook is None
            for w in getattr(mp, "kept", [])]


def _owner_name(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return type(obj).__name__


def plan_summary(modules: List[Any]) -> Dict[str, Any]:
    """What the update changes and keeps, by name: updated, replaced, added, removed, kept, new modules."""
    out: Dict[str, List[str]] = {"updated": [], "replaced": [], "added": [], "removed": [], "kept": [],
                                 "new_modules": []}
    redirected = 0
    for mp in modules:
        if mp.installed_new:
            out["new_modules"].append(mp.name)
            continue
        for op in mp.plan.ops:
            if isinstance(op, UpdateFunction):
                out["updated"].append(f"{op.fn.__module__}.{op.fn.__qualname__}")
            elif isinstance(op, SetAttr):
                if op.name.startswith("__") and op.name.endswith("__"):
                    continue
                label = f"{_owner_name(op.obj)}.{op.name}"
                if op.value is MISSING:
                    out["removed"].append(label)
                elif op.name in vars(op.obj):
                    out["replaced"].append(label)
                else:
                    out["added"].append(label)
            elif isinstance(op, (SetItem, SetCell)):
                redirected += 1
        live = vars(mp.module) if mp.module is not None else {}
        for name, value in mp.namespace.items():
            if name in live and not (name.startswith("__") and name.endswith("__")) and \
                    not isinstance(value, (types.FunctionType, type, staticmethod, classmethod, property,
                                           types.ModuleType)):
                out["kept"].append(f"{mp.name}.{name}")
    summary: Dict[str, Any] = {k: v[:_LIST_LIMIT] for k, v in out.items()}
    summary["references_redirected"] = redirected
    return summary


def annotate(result: Dict[str, Any], bundle: Dict[str, Any], modules: List[Any]) -> None:
    """Add the warnings and the plan summary to an apply result; refuse unfindable modules (nothing changed yet)."""
    result.setdefault("warnings", []).extend(_not_imported(bundle, modules) + _kept_constants(modules))
    result["plan_summary"] = plan_summary(modules)
