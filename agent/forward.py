"""Forwarders: an old function object that runs its replacement.

A function whose free variables change (it now uses `super()`, a decorator
gained an argument, a dataclass regenerated its methods) cannot take the new
code in place: `__code__` must match the length of the function's closure,
which is fixed. The update installs the new function where the old one was
found (class, module), and the old function object, still held by bound
methods, tuples, callbacks, `__wrapped__` or a call parked by the mediator,
gets a small code object of the right shape (as many free variables as its
closure has cells) that calls the replacement. So every existing reference
runs the new code; only identity differs (`old is not new`).

Only replaced functions get a forwarder; functions updated in place keep
running their own code with no indirection. The forwarder finds the
replacement through a weak reference to the old function (a constant of its
code) and that function's `__dict__[FORWARD]`: a strong reference from the
code's constants would close a cycle through a code object, which the cyclic
GC cannot see (see mediator.py). The weak reference is alive whenever the
forwarder runs, since its caller holds the function.
"""
from __future__ import annotations

import sys
import types
import warnings
import weakref
from typing import Any, Dict

FORWARD = "__dynupdate_forward__"

_templates: Dict[int, types.CodeType] = {}


def _template(nfree: int) -> types.CodeType:
    """A forwarder code object with `nfree` free variables (to fit any closure)."""
    code = _templates.get(nfree)
    if code is not None:
        return code
    names = [f"_f{i}" for i in range(nfree)]
    lines = ["def _outer():"]
    if names:
        lines.append(f"    {' = '.join(names)} = None")
    lines.append("    def forward(*args, **kwargs):")
    if names:
        lines.append(f"        nonlocal {', '.join(names)}")
    lines.append(f"        return '__SELF__'().__dict__[{FORWARD!r}](*args, **kwargs)")
    lines.append("    return forward")
    namespace: Dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "'str' object is not callable": the constant is swapped below
        exec(compile("\n".join(lines), "<dynupdate forward>", "exec"), namespace)
    code = namespace["_outer"]().__code__
    _templates[nfree] = code
    return code


def forwarder_code(fn: types.FunctionType) -> types.CodeType:
    """A code object that, as `fn.__code__`, makes `fn` call `fn.__dict__[FORWARD]`."""
    template = _template(len(fn.__closure__ or ()))
    self_ref = weakref.ref(fn)  # weak: the code must not keep its own function alive (see above)
    consts = tuple(self_ref if c == "__SELF__" else c for c in template.co_consts)
    fields: Dict[str, Any] = {"co_consts": consts, "co_name": fn.__code__.co_name}
    if sys.version_info >= (3, 11):
        fields["co_qualname"] = fn.__code__.co_qualname
    return template.replace(**fields)

