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

import types
import weakref

from . import interpose

FORWARD = "__dynupdate_forward__"


def forwarder_code(fn: types.FunctionType) -> types.CodeType:
    """A code object that, as `fn.__code__`, makes `fn` call `fn.__dict__[FORWARD]`."""
    self_ref = weakref.ref(fn)  # weak: the code must not keep its own function alive (see above)
    return interpose.shaped_code(fn.__code__, f"return '__SELF__'().__dict__[{FORWARD!r}](*args, **kwargs)",
                                 {"__SELF__": self_ref}, filename="<dynupdate forward>")

