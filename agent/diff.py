"""Turn "live module + new source" into a plan of reversible operations.

The new source runs in a throwaway namespace; its definitions are then matched
to the live ones by name. Functions and classes that exist in both are updated
in place (identity kept, so every reference sees the new code); a function
that cannot be (its closure changed shape) is replaced where it was found and
the old object forwards to the replacement (forward.py), so references to it
run the new code too. Wrappers made by decorators from other modules and
functions generated for a class (dataclasses) are this module's code as well.
New definitions are adopted with their globals re-bound to the live module;
data keeps its live value. Nothing live is touched here: the result is a
`Plan` to apply later.
"""
from __future__ import annotations

import builtins
import functools
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import factories, importer, report, sources
from .plan import MISSING, ClearCache, ForwardFunction, Plan, SetAttr, SetCell, SetItem, UpdateFunction

TRANSFER = "__dynupdate_transfer__"
REVERT = "__dynupdate_revert__"
LAZY = "__dynupdate_lazy__"
CHECK = "__dynupdate_check__"

_MODULE_SKIP = {"__name__", "__file__", "__package__", "__loader__", "__spec__", "__builtins__", "__cached__",
                "__path__", "__dynupdate_deferred_factories__", TRANSFER, REVERT, CHECK}
_MODULE_TAKE_NEW = {"__doc__", "__all__"}
#: class attributes that describe the code, not state: dataclass metadata, annotations
_CLASS_TAKE_NEW = {"__annotations__", "__dataclass_fields__", "__dataclass_params__", "__match_args__",
                   "__firstlineno__", "__static_attributes__"}
_CLASS_SKIP = {"__dict__", "__weakref__", "__module__", "__qualname__", "__slots__"}


class UnsupportedChange(Exception):
    """A change the engine cannot carry out safely; the update is rejected."""


@dataclass
class ClassPair:
    live: type
    new: type
    name: str


@dataclass
class ModulePlan:
    name: str
    module: Optional[types.ModuleType]
    namespace: Dict[str, Any]
    source: str = ""
    plan: Plan = field(default_factory=Plan)
    functions: int = 0
    classes: List[ClassPair] = field(default_factory=list)
    adopted: List[type] = field(default_factory=list)
    mediated: List[types.FunctionType] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    module_hook: Optional[types.FunctionType] = None
    revert_hook: Optional[types.FunctionType] = None
    check_hook: Optional[types.FunctionType] = None
    #: warnings for module data whose new-source value differs from the live value it keeps
    kept: List[str] = field(default_factory=list)
    installed_new: bool = False
    new_factories: List[type] = field(default_factory=list)

    @property
    def live_dict(self) -> Dict[str, Any]:
        return vars(self.module) if self.module is not None else self.namespace


def _is_function(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def execute_source(name: str, source: str, filename: str, live: Optional[types.ModuleType]) -> Dict[str, Any]:
    """Run the new source in a fresh namespace that looks like the module's."""
    namespace: Dict[str, Any] = {"__name__": name, "__builtins__": builtins, "__file__": filename}
    package = name.rpartition(".")[0]
    if live is not None:
        for key in ("__package__", "__spec__", "__loader__", "__path__", "__file__", "__cached__"):
            if key in vars(live):
                namespace[key] = vars(live)[key]
    namespace.setdefault("__package__", package)
    code = compile(source, filename, "exec", dont_inherit=True)
    with factories.deferred_registration() as deferred:
        exec(code, namespace)
    namespace["__dynupdate_deferred_factories__"] = deferred
    return namespace


class Differ:
    """Builds the ModulePlan for one module."""

    def __init__(self, mp: ModulePlan) -> None:
        self.mp = mp
        self.ns = mp.namespace
        self.live_globals = mp.live_dict
        self.class_map: Dict[int, type] = {}
        self.rebound: Dict[int, Any] = {}
        self.cells: Dict[int, Any] = {}
        self.updated_fns: Dict[int, bool] = {}
        #: id(old function) -> what replaced it (so every path to it installs the same object)
        self.replaced: Dict[int, Any] = {}

    # -- what belongs to the new source -------------------------------------------
    def _ours_new(self, obj: Any) -> bool:
        if _is_function(obj):
            return obj.__globals__ is self.ns
        return isinstance(obj, type) and obj.__module__ == self.mp.name and self._defined_in_ns(obj)

    def _defined_in_ns(self, cls: type) -> bool:
        return any(_is_function(v) and v.__globals__ is self.ns for v in self._functions_of(cls)) or \
            cls.__qualname__.split(".")[0] in self.ns

    @staticmethod
    def _functions_of(cls: type) -> List[types.FunctionType]:
        out = []
        for v in vars(cls).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if _is_function(v):
                out.append(v)
        return out

    def _ours_live(self, obj: Any) -> bool:
        if _is_function(obj):
            return obj.__globals__ is self.live_globals
        return isinstance(obj, type) and obj.__module__ == self.mp.name

    # -- re-binding new objects to the live module --------------------------------
    def rebind(self, obj: Any) -> Any:
        """A version of a new-source object that uses the live module's globals."""
        key = id(obj)
        if key in self.rebound:
            return self.rebound[key]
        if isinstance(obj, type) and key in self.class_map:
            return self.class_map[key]
        if _is_function(obj) and (self._new_code(obj) or _wraps(obj, self._new_code)):
            # the new source's own functions get the live globals; generated ones and
            # wrappers from other modules keep theirs; closures are re-bound either way
            namespace = self.live_globals if obj.__globals__ is self.ns else obj.__globals__
            clone = types.FunctionType(obj.__code__, namespace, obj.__name__, obj.__defaults__,
                                       self._cells(obj.__closure__))
            self.rebound[key] = clone
            clone.__kwdefaults__ = obj.__kwdefaults__
            clone.__annotations__ = obj.__annotations__
            clone.__qualname__ = obj.__qualname__
            clone.__module__ = obj.__module__
            clone.__doc__ = obj.__doc__
            clone.__dict__.update({k: self.rebind(v) for k, v in obj.__dict__.items()})
            return clone
        if isinstance(obj, (staticmethod, classmethod)) and _is_function(obj.__func__):
            return type(obj)(self.rebind(obj.__func__))
        if isinstance(obj, property):
            fget, fset, fdel = (self.rebind(f) if f is not None else None for f in (obj.fget, obj.fset, obj.fdel))
            return property(fget, fset, fdel, obj.__doc__)
        if isinstance(obj, type) and self._ours_new(obj):
            self.adopt_class(obj)
        return obj

    def _cells(self, closure: Optional[Tuple[Any, ...]]) -> Optional[Tuple[Any, ...]]:
        if closure is None:
            return None
        cells = []
        for cell in closure:
            clone = self.cells.get(id(cell))  # functions that shared a cell still share it
            if clone is None:
                clone = self.cells[id(cell)] = types.CellType()  # first, so a self-reference ends
                try:
                    clone.cell_contents = self.rebind(cell.cell_contents)
                except ValueError:
                    pass
            cells.append(clone)
        return tuple(cells)

    def adopt_class(self, cls: type) -> None:
        """A class only the new version has: re-bind its methods, fix its bases."""
        if id(cls) in self.rebound:
            return
        self.rebound[id(cls)] = cls
        for name, value in list(vars(cls).items()):
            if name in _CLASS_SKIP:
                continue
            new_value = self.rebind(value)
            if new_value is not value:
                type.__setattr__(cls, name, new_value)
        bases = tuple(self.class_map.get(id(b), b) for b in cls.__bases__)
        if bases != cls.__bases__:
            try:
                cls.__bases__ = bases
            except TypeError as exc:
                raise UnsupportedChange(f"new class {cls.__qualname__}: cannot base it on the live classes ({exc})")
        self.mp.adopted.append(cls)

    # -- functions --------------------------------------------------------------
    def _new_code(self, fn: Any) -> bool:
        """A function the new source made: defined in it, or generated for it with the
        live module as globals (dataclass methods are exec'd in `sys.modules[name]`)."""
        return _is_function(fn) and (fn.__globals__ is self.ns or (
            fn.__globals__ is self.live_globals and fn.__module__ == self.mp.name))

    def _owned_live(self, obj: Any) -> bool:
        """Live code of this module: its classes and functions, and wrappers around its
        functions made by a decorator from another module (`functools.wraps` or a closure)."""
        if isinstance(obj, type):
            return self._ours_live(obj)
        return _is_function(obj) and (self._ours_live(obj) or _wraps(obj, self._ours_live))

    def _owned_new(self, obj: Any) -> bool:
        """The same for the new source's objects."""
        if isinstance(obj, type):
            return self._ours_new(obj)
        return _is_function(obj) and (self._new_code(obj) or _wraps(obj, self._new_code))

    def code(self, old: Any, new: Any, install: Callable[[Any], None]) -> None:
        """Make the live function `old` run `new`'s code.

        In place when the closure shapes match (identity kept, no indirection):
        `old` is this module's own function, or a wrapper from another module's
        decorator with the same wrapper code, whose inner functions are then
        followed through closure cells and `__wrapped__`. Otherwise `install`
        puts the replacement where `old` was found and `old` forwards to it.
        """
        if id(old) in self.replaced:
            install(self.replaced[id(old)])
            return
        if id(old) in self.updated_fns:
            return
        same_shape = old.__code__.co_freevars == new.__code__.co_freevars
        own = self._ours_live(old) and self._new_code(new)
        foreign_wrapper = not own and old.__code__ is new.__code__ and _wraps(old, self._ours_live)
        if not same_shape or not (own or foreign_wrapper):
            if not self._ours_live(old) and self._new_code(new):
                # a decorator from another module was removed: the function it wrapped takes
                # the new code in place (so a call already inside the wrapper, or held at
                # the function, runs it) and is what the wrapper now forwards to
                for inner in _own_inner(old, self._ours_live):
                    if inner.__name__ == new.__name__ and \
                            inner.__code__.co_freevars == new.__code__.co_freevars:
                        self.code(inner, new, _ignore)
                        break
            self._replace(old, new, install)
            return
        self.updated_fns[id(old)] = True
        self.rebound[id(new)] = old
        self.mp.plan.add(UpdateFunction(old, new))
        if own:  # a foreign wrapper's code is shared by all its uses; its inner functions are mediated
            self.mp.mediated.append(old)
            self.mp.functions += 1
        generated = own and new.__globals__ is not self.ns  # e.g. a dataclass __init__
        for c_old, c_new in zip(old.__closure__ or (), new.__closure__ or ()):
            try:
                v_old, v_new = c_old.cell_contents, c_new.cell_contents
            except ValueError:
                continue
            if _is_function(v_old) and _is_function(v_new) and v_old is not v_new and \
                    self._owned_live(v_old) and self._owned_new(v_new):
                self.code(v_old, v_new, functools.partial(self._set_cell, c_old, v_old))
            elif generated and v_old is not v_new:
                # a generated function's cells are part of its definition (a field's
                # default_factory), not state kept since import: they take the new value
                self._set_cell(c_old, v_old, self.rebind(v_new))
        w_old, w_new = old.__dict__.get("__wrapped__"), new.__dict__.get("__wrapped__")
        if _is_function(w_old) and _is_function(w_new) and w_old is not w_new and \
                self._owned_live(w_old) and self._owned_new(w_new):
            self.code(w_old, w_new, functools.partial(self._set_item, old.__dict__, "__wrapped__", w_old))

    def _set_cell(self, cell: Any, old: Any, new: Any) -> None:
        self.mp.plan.add(SetCell(cell, old, new))

    def _set_item(self, container: Any, key: Any, old: Any, new: Any) -> None:
        self.mp.plan.add(SetItem(container, key, old, new))

    def _replace(self, old: types.FunctionType, new: Any, install: Callable[[Any], None]) -> None:
        """Install the new function where `old` was; `old` itself forwards to it."""
        replacement = self.rebind(new)
        self.replaced[id(old)] = replacement
        install(replacement)
        self.forward(old, replacement)

    def forward(self, old: Any, replacement: Any) -> None:
        """Every reference to the old function object runs `replacement` from the swap on."""
        if not _is_function(old) or not callable(replacement) or old is replacement:
            return
        self.replaced[id(old)] = replacement
        self.mp.plan.add(ForwardFunction(old, replacement, back=id(replacement) not in self.updated_fns))
        self.mp.mediated.extend(_own_inner(old, self._ours_live))
        if _is_function(replacement):  # a rollback then waits for its frames too
            self.mp.mediated.extend(_own_inner(replacement, self._ours_live))
        self.mp.functions += 1
        after = getattr(getattr(replacement, "__code__", None), "co_freevars", None)
        why = f"its free variables changed: {old.__code__.co_freevars} -> {after}" \
            if after is not None and after != old.__code__.co_freevars else "it is now made another way"
        self.mp.warnings.append(
            f"{old.__module__}.{old.__qualname__} was replaced, not updated in place ({why}); existing "
            f"references to it run the new code, but code comparing the function's identity (`is`, dict "
            f"keys, sets) sees a different object")

    # -- classes ----------------------------------------------------------------
    def check_class(self, old: type, new: type) -> None:
        if _qualname(type(old)) != _qualname(type(new)):
            raise UnsupportedChange(f"class {old.__qualname__}: metaclass changed from {_qualname(type(old))} "
                                    f"to {_qualname(type(new))}; restart the process for this change")
        old_bases = [_qualname(b) for b in old.__bases__]
        new_bases = [_qualname(self.class_map.get(id(b), b)) for b in new.__bases__]
        if old_bases != new_bases:
            raise UnsupportedChange(f"class {old.__qualname__}: bases changed from ({', '.join(old_bases)}) to "
                                    f"({', '.join(new_bases)}); restart the process for this change")
        if _slots(old) != _slots(new):
            raise UnsupportedChange(f"class {old.__qualname__}: __slots__ changed from {_slots(old)} to "
                                    f"{_slots(new)}; the instance layout cannot change in place")

    def map_classes(self, old: type, new: type) -> None:
        """Record old<->new class pairs (nested ones too) before any rebinding."""
        self.class_map[id(new)] = old
        for name, v_new in vars(new).items():
            v_old = vars(old).get(name)
            if isinstance(v_new, type) and isinstance(v_old, type) and self._ours_new(v_new) and \
                    self._ours_live(v_old):
                self.map_classes(v_old, v_new)

    def klass(self, old: type, new: type, name: str) -> None:
        self.check_class(old, new)
        self.mp.classes.append(ClassPair(old, new, name))
        for fn in self._functions_of(old):  # held during the update: own code, and what
            self.mp.mediated.extend(_own_inner(fn, self._ours_live))  # foreign wrappers call
        names = [n for n in vars(old)] + [n for n in vars(new) if n not in vars(old)]
        for attr in names:
            if attr in _CLASS_SKIP:
                continue
            v_old, v_new = vars(old).get(attr, MISSING), vars(new).get(attr, MISSING)
            if _is_factory_hook(v_old) or _is_factory_hook(v_new) or _is_member(v_old) or _is_member(v_new):
                continue
            self.member(old, attr, v_old, v_new)

    def member(self, owner: type, name: str, old: Any, new: Any) -> None:
        if name == "__doc__":
            if old != new:
                self.mp.plan.add(SetAttr(owner, name, None if new is MISSING else new))
            return
        if name in _CLASS_TAKE_NEW:
            if old is not new:
                self.mp.plan.add(SetAttr(owner, name, new))
            return
        if new is MISSING:
            if _is_code(old, self._owned_live):
                self.mp.plan.add(SetAttr(owner, name, MISSING))
            return
        if old is MISSING:
            self.mp.plan.add(SetAttr(owner, name, self.rebind(new)))
            return
        self.pair(owner, name, old, new)

    def pair(self, owner: Any, name: str, old: Any, new: Any) -> None:
        """Both versions define `name`: update code in place, keep data live."""
        if old is new:
            return
        if isinstance(old, type) and isinstance(new, type) and self._ours_live(old) and self._ours_new(new):
            self.klass(old, new, name)
        elif _is_function(old) and _is_function(new) and self._owned_live(old) and self._owned_new(new):
            self.code(old, new, lambda r: self.mp.plan.add(SetAttr(owner, name, r)))
        elif type(old) is type(new) and isinstance(old, (staticmethod, classmethod)) and \
                self._owned_live(old.__func__) and self._owned_new(new.__func__):
            wrapper = type(old)
            self.code(old.__func__, new.__func__,
                      lambda r: self.mp.plan.add(SetAttr(owner, name, wrapper(r))))
        elif isinstance(old, property) and isinstance(new, property):
            self._property(owner, name, old, new)
        elif self._wrapper_objects(old, new):
            self._wrapper_object(old, new)
        elif _is_code(new, self._owned_new) or _is_code(old, self._owned_live):
            replacement = self.rebind(new)
            self.mp.plan.add(SetAttr(owner, name, replacement))
            if self._owned_live(old):  # e.g. `f = other.f` now: old references run that
                self.forward(old, replacement)
            elif self._owned_live(_vars_or_empty(old).get("__wrapped__")) and not isinstance(old, type):
                # a wrapper object (lru_cache, ...) that the new version drops: held elsewhere,
                # it calls the function it wraps, which forwards
                self.forward(vars(old)["__wrapped__"], replacement)
                if callable(getattr(old, "cache_clear", None)):
                    self.mp.plan.add(ClearCache(old))
            elif isinstance(old, (staticmethod, classmethod)) and self._owned_live(old.__func__):
                # e.g. a classmethod that became a staticmethod: the calls differ, no forwarding
                fn = old.__func__
                self.mp.warnings.append(
                    f"{fn.__module__}.{fn.__qualname__} changed from a {type(old).__name__} to "
                    f"{type(new).__name__}: references taken before the update (a bound "
                    f"{type(old).__name__}) keep running the old code")
        # else: data present in both versions keeps its live value (it is state)

    def _wrapper_objects(self, old: Any, new: Any) -> bool:
        """Two wrappers that are not functions (`functools.lru_cache`, ...) around our code."""
        if _is_function(old) or isinstance(old, type) or type(old) is not type(new):
            return False
        w_old, w_new = _vars_or_empty(old).get("__wrapped__"), _vars_or_empty(new).get("__wrapped__")
        return _is_function(w_old) and _is_function(w_new) and self._owned_live(w_old) and self._owned_new(w_new)

    def _wrapper_object(self, old: Any, new: Any) -> None:
        """The live wrapper stays and calls the function it always called: that one gets
        the new code (in place, or forwarding); a cache of old results is emptied."""
        inner = vars(old)["__wrapped__"]
        self.code(inner, vars(new)["__wrapped__"], functools.partial(self._set_item, vars(old), "__wrapped__", inner))
        if callable(getattr(old, "cache_clear", None)):
            self.mp.plan.add(ClearCache(old))

    def _property(self, owner: Any, name: str, old: property, new: property) -> None:
        parts: List[Any] = []
        for f_old, f_new in ((old.fget, new.fget), (old.fset, new.fset), (old.fdel, new.fdel)):
            if self._owned_live(f_old) and self._owned_new(f_new):
                chosen: List[Any] = [f_old]  # updated in place, unless code() installs a replacement
                self.code(f_old, f_new, functools.partial(chosen.__setitem__, 0))
                parts.append(chosen[0])
            else:
                part = self.rebind(f_new) if f_new is not None else None
                if self._owned_live(f_old):
                    self.forward(f_old, part)
                parts.append(part)
        self.mp.plan.add(SetAttr(owner, name, property(parts[0], parts[1], parts[2], new.__doc__)))

    # -- the module -------------------------------------------------------------
    def module(self) -> None:
        live = self.live_globals
        for name, v_new in self.ns.items():  # pair classes first: rebinding needs the map
            v_old = live.get(name, MISSING)
            if isinstance(v_new, type) and isinstance(v_old, type) and self._ours_new(v_new) and \
                    self._ours_live(v_old):
                self.map_classes(v_old, v_new)
        names = list(live) + [n for n in self.ns if n not in live]
        for name in names:
            if name in _MODULE_SKIP:
                continue
            v_old, v_new = live.get(name, MISSING), self.ns.get(name, MISSING)
            if name in _MODULE_TAKE_NEW and v_new is not MISSING:
                if v_old is not v_new:
                    self.mp.plan.add(SetAttr(self.mp.module, name, v_new))
            elif v_new is MISSING:
                if _is_code(v_old, self._owned_live):
                    self.mp.plan.add(SetAttr(self.mp.module, name, MISSING))
            elif v_old is MISSING:
                self.mp.plan.add(SetAttr(self.mp.module, name, self.rebind(v_new)))
            else:
                self.pair(self.mp.module, name, v_old, v_new)
                if not callable(v_new) and not isinstance(v_new, (staticmethod, classmethod, property)):
                    warning = report.kept_warning(self.mp.name, name, v_old, v_new)
                    if warning is not None:
                        self.mp.kept.append(warning)
                    # data keeps its live value: let the throwaway namespace say so too, so
                    # that the new literal (a big table, say) is freed now, not at the next
                    # full GC that breaks the namespace's function <-> globals cycles
                    self.ns[name] = v_old
        if _is_function(self.ns.get(TRANSFER)):
            self.mp.module_hook = self.rebind(self.ns[TRANSFER])
        if _is_function(self.ns.get(REVERT)):
            self.mp.revert_hook = self.rebind(self.ns[REVERT])
        if _is_function(self.ns.get(CHECK)):
            self.mp.check_hook = self.rebind(self.ns[CHECK])
        for cls in self.ns.get("__dynupdate_deferred_factories__", []):
            live_cls = self.class_map.get(id(cls), cls)
            if not factories.is_updatable(live_cls):
                self.mp.new_factories.append(live_cls)


def _slots(cls: type) -> Tuple[str, ...]:
    slots = vars(cls).get("__slots__", None)
    if slots is None:
        return ()
    if isinstance(slots, str):
        return (slots,)
    return tuple(slots)


def _is_factory_hook(value: Any) -> bool:
    func = value.__func__ if isinstance(value, staticmethod) else value
    return bool(getattr(func, "_dynupdate_factory", False))


def _ignore(_value: Any) -> None:
    pass


def _own_inner(fn: Any, ours: Callable[[Any], bool], depth: int = 4) -> List[types.FunctionType]:
    """`fn` if it is ours, else the functions of ours a wrapper `fn` calls. A wrapper from
    another module shares its code with every use of its decorator: holding or waiting on
    that code would wait on unrelated calls elsewhere."""
    if ours(fn):
        return [fn]
    if not _is_function(fn) or depth <= 0:
        return []
    inner = [fn.__dict__.get("__wrapped__")]
    for cell in fn.__closure__ or ():
        try:
            inner.append(cell.cell_contents)
        except ValueError:
            continue
    found: List[types.FunctionType] = []
    for value in inner:
        if _is_function(value):
            found.extend(f for f in _own_inner(value, ours, depth - 1) if f not in found)
    return found


def _wraps(fn: Any, ours: Callable[[Any], bool], depth: int = 4) -> bool:
    """`fn` wraps a function `ours` accepts, through `__wrapped__` or its closure (stacked
    decorators too, up to `depth`): a wrapper a decorator made for that function."""
    if not _is_function(fn) or depth <= 0:
        return False
    inner = [fn.__dict__.get("__wrapped__")]
    for cell in fn.__closure__ or ():
        try:
            inner.append(cell.cell_contents)
        except ValueError:
            continue
    return any(_is_function(v) and (ours(v) or _wraps(v, ours, depth - 1)) for v in inner)


def _vars_or_empty(obj: Any) -> Dict[str, Any]:
    try:
        return vars(obj)
    except TypeError:
        return {}


def _is_member(value: Any) -> bool:
    return isinstance(value, (types.MemberDescriptorType, types.GetSetDescriptorType))


def _is_code(value: Any, ours) -> bool:
    """Code-like values are replaced by an update; anything else is state."""
    if isinstance(value, (staticmethod, classmethod, property)):
        return True
    return (_is_function(value) or isinstance(value, type)) and ours(value)


def plan_module(name: str, source: str, filename: str) -> ModulePlan:
    """Prepare one module of a bundle (compile, run in a throwaway namespace, diff)."""
    live, run_as = importer.live_module(name)  # `python -m name` and "__main__" update __main__
    lease = sources.SourceLease(filename, source)  # settled when the request ends (see sources.py)
    namespace = execute_source(run_as, source, filename, live)
    if importer.is_main(live):
        name = importer.adopt_into_main(namespace, run_as)
    mp = ModulePlan(name=name, module=live, namespace=namespace, source=source)
    lease.keep_with(mp.plan)
    mp.plan.sources.append(lease)
    if live is None:
        mp.installed_new = True
        if _is_function(namespace.get(CHECK)):
            mp.check_hook = namespace[CHECK]
        return mp
    differ = Differ(mp)
    differ.module()
    return mp
