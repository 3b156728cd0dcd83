"""Interposition by code swap: hide a function's body behind a forwarder, keep its identity.

K42 interposed an object by replacing it with another that forwards calls.
In Python the function object is what every reference holds (module
attributes, `from m import f`, bound methods, callbacks in dicts), so we keep
the object and swap its `__code__` for a small forwarder with the same shape
(number of free variables, plain / generator / coroutine), which calls
``dispatch(key, args, kwargs)``. Taking the interposer away puts the very same
code object back: nothing remains and the steady state costs nothing.

`original_clone` gives a function that runs the original code with the
function's globals, defaults and closure, which the interposer calls to
forward the call.
"""
from __future__ import annotations

import inspect
import sys
import types
import warnings
from typing import Any, Dict, Tuple

PLAIN, GENERATOR, COROUTINE = "function", "generator", "coroutine"

_BODIES = {
    PLAIN: "return '__DISPATCH__'('__KEY__', args, kwargs)",
    GENERATOR: "return (yield from '__DISPATCH__'('__KEY__', args, kwargs))",
    COROUTINE: "return await '__DISPATCH__'('__KEY__', args, kwargs)",
}
_templates: Dict[Tuple[str, int], types.CodeType] = {}


class NotInterposable(TypeError):
    """The object cannot be interposed by code swap (a C function, an async generator, ...)."""


def kind_of(code: types.CodeType) -> str:
    if code.co_flags & inspect.CO_ASYNC_GENERATOR:
        raise NotInterposable("async generator functions cannot be interposed")
    if code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE):
        return COROUTINE
    if code.co_flags & inspect.CO_GENERATOR:
        return GENERATOR
    return PLAIN


def _template(kind: str, nfree: int) -> types.CodeType:
    """A forwarder of `kind` with `nfree` free variables, so it fits any closure."""
    code = _templates.get((kind, nfree))
    if code is not None:
        return code
    names = [f"_f{i}" for i in range(nfree)]
    lines = ["def _outer():"]
    if names:
        lines.append(f"    {' = '.join(names)} = None")
    lines.append(f"    {'async ' if kind == COROUTINE else ''}def forwarder(*args, **kwargs):")
    if names:
        lines.append(f"        nonlocal {', '.join(names)}")
    lines.append(f"        {_BODIES[kind]}")
    lines.append("    return forwarder")
    namespace: Dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile("\n".join(lines), "<dynupdate interposer>", "exec"), namespace)
    code = namespace["_outer"]().__code__
    _templates[(kind, nfree)] = code
    return code


def forwarder(original: types.CodeType, dispatch: Any, key: int) -> types.CodeType:
    """The code to put in place of `original`: calls ``dispatch(key, args, kwargs)``."""
    template = _template(kind_of(original), len(original.co_freevars))
    consts = tuple(dispatch if c == "__DISPATCH__" else key if c == "__KEY__" else c for c in template.co_consts)
    fields: Dict[str, Any] = {"co_consts": consts, "co_name": original.co_name}
    if sys.version_info >= (3, 11):
        fields["co_qualname"] = original.co_qualname
    return template.replace(**fields)


def original_clone(fn: types.FunctionType, code: types.CodeType) -> types.FunctionType:
    """A function running `code` exactly as `fn` would (same globals, defaults, closure)."""
    clone = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    clone.__qualname__ = fn.__qualname__
    return clone
