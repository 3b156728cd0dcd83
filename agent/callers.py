"""The caller's view of an interface change: what a bundle removes or makes incompatible, and who still uses it.

K42's interposition could present a changed interface to old callers; before
we can do that, the user must know who the old callers are. For every
function, method or class that the bundle removes, and every function whose
signature becomes incompatible (a parameter removed or renamed, a new required
parameter, fewer positional parameters), this lists the places *outside the
bundle* that still refer to it: other modules' globals that hold the object
(`from m import f`), and functions whose code names it (`m.f(...)`,
`obj.method(...)` — by name, so a method name may match unrelated calls; the
report says "names").

`incompatibility` is pure logic over normalized parameter lists; the CLI's
`dynupdate build` uses it on parsed source, the agent on live signatures.
"""
from __future__ import annotations

import inspect
import sys
import types
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

#: (name, kind, has_default); kind is one of POSONLY, POS, VARARGS, KWONLY, VARKW
Param = Tuple[str, str, bool]
POSONLY, POS, VARARGS, KWONLY, VARKW = "posonly", "pos", "varargs", "kwonly", "varkw"
_KINDS = {inspect.Parameter.POSITIONAL_ONLY: POSONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD: POS,
          inspect.Parameter.VAR_POSITIONAL: VARARGS, inspect.Parameter.KEYWORD_ONLY: KWONLY,
          inspect.Parameter.VAR_KEYWORD: VARKW}
MAX_PLACES = 20


def params_of(fn: Any) -> Optional[List[Param]]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return [(p.name, _KINDS[p.kind], p.default is not inspect.Parameter.empty) for p in sig.parameters.values()]


def incompatibility(old: Sequence[Param], new: Sequence[Param]) -> Optional[str]:
    """Why a call written for `old` may fail on `new`; None if every valid old call still binds."""
    def names(ps: Sequence[Param], *kinds: str) -> List[str]:
        return [n for n, k, _ in ps if k in kinds]

    old_pos, new_pos = names(old, POSONLY, POS), names(new, POSONLY, POS)
    new_has = {k for _, k, _ in new}
    old_has = {k for _, k, _ in old}
    if VARKW not in new_has:
        by_keyword = names(old, POS, KWONLY)
        accepted = set(names(new, POS, KWONLY))
        gone = [n for n in by_keyword if n not in accepted]
        if gone:
            return f"parameter(s) {', '.join(gone)} removed or renamed"
    if VARARGS in old_has and VARARGS not in new_has:
        return "*args removed"
    if VARKW in old_has and VARKW not in new_has:
        return "**kwargs removed"
    if VARARGS not in new_has and len(new_pos) < len(old_pos):
        return f"takes {len(new_pos)} positional parameter(s), callers may pass {len(old_pos)}"
    added = [n for n, k, d in new if k in (POSONLY, POS, KWONLY) and not d and n not in old_pos
             and n not in names(old, KWONLY)]
    if added:
        return f"new required parameter(s) {', '.join(added)}"
    return None


def _code_names(code: types.CodeType) -> Set[str]:
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _code_names(const)
    return out


def _functions_in(namespace: Dict[str, Any], module_dict: Dict[str, Any]) -> Iterator[Tuple[str, Any]]:
    for name, value in list(namespace.items()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, types.FunctionType) and value.__globals__ is module_dict:
            yield name, value
        elif isinstance(value, type) and value.__module__ == module_dict.get("__name__"):
            for attr, member in list(vars(value).items()):
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, types.FunctionType):
                    yield f"{name}.{attr}", member


def _places(obj: Any, name: str, skip: Set[str]) -> List[str]:
    """Where, outside the bundle's modules, `obj` (called `name`) is still held or named."""
    places: List[str] = []
    for mod_name, module in list(sys.modules.items()):
        if mod_name in skip or module is None or mod_name.startswith("dynupdate_agent"):
            continue
        try:
            mod_dict = vars(module)
        except TypeError:
            continue
        for var, value in list(mod_dict.items()):
            if value is obj:
                places.append(f"{mod_name}.{var} holds it")
        for qual, fn in _functions_in(mod_dict, mod_dict):
            if name in _code_names(fn.__code__):
                places.append(f"{mod_name}.{qual} names it")
        if len(places) >= MAX_PLACES:
            return places[:MAX_PLACES] + ["…"]
    return places


def at_risk(modules: Iterable[Any], covered: Iterable[str] = ()) -> List[Dict[str, Any]]:
    """Removed or incompatibly changed names of the bundle's live modules, with their callers.

    `modules` are the prepared module plans (live module, new namespace, class
    pairs); `covered` are ``module:qualname`` names an adapter keeps working.
    """
    plans = [mp for mp in modules if getattr(mp, "module", None) is not None]
    skip = {mp.name for mp in plans}
    covered = set(covered)
    items: List[Dict[str, Any]] = []

    def consider(where: str, name: str, old: Any, new: Any) -> None:
        if where in covered:
            return
        if new is None:
            change = "removed"
        else:
            before, after = params_of(old), params_of(new)
            reason = incompatibility(before, after) if before is not None and after is not None else None
            if reason is None:
                return
            change = f"signature: {reason}"
        target = old.__func__ if isinstance(old, (staticmethod, classmethod)) else old
        items.append({"name": where, "change": change, "callers": _places(target, name, skip)})

    for mp in plans:
        live, new = vars(mp.module), mp.namespace
        for name, old in list(live.items()):
            if name.startswith("__") or not _defined_here(old, live, mp.name):
                continue
            replacement = new.get(name)
            if isinstance(old, types.FunctionType):
                consider(f"{mp.name}:{name}", name, old,
                         replacement if isinstance(replacement, types.FunctionType) else None)
            elif replacement is None:  # a class the new version no longer has
                consider(f"{mp.name}:{name}", name, old, None)
        for pair in getattr(mp, "classes", []):
            old_ns, new_ns = vars(pair.live), vars(pair.new)
            for attr, old in list(old_ns.items()):
                func = old.__func__ if isinstance(old, (staticmethod, classmethod)) else old
                if attr.startswith("__") or not isinstance(func, types.FunctionType):
                    continue
                new_value = new_ns.get(attr)
                new_func = new_value.__func__ if isinstance(new_value, (staticmethod, classmethod)) else new_value
                consider(f"{mp.name}:{pair.live.__qualname__}.{attr}", attr, func,
                         new_func if isinstance(new_func, types.FunctionType) else None)
    return items


def _defined_here(value: Any, module_dict: Dict[str, Any], module_name: str) -> bool:
    if isinstance(value, types.FunctionType):
        return value.__globals__ is module_dict
    return isinstance(value, type) and value.__module__ == module_name
