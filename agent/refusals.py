"""Modules an update must not patch: the agent itself, what it depends on, the standard library.

The agent runs the update with the very code a bundle could replace. Patching
`dynupdate_agent.server` or `msgpack` swaps the code that carries the reply
and any later rollback (the agent is bricked); patching `builtins`,
`threading` or `os` changes what the interpreter, every thread and the agent
rely on mid-flight (seen: the process died, or service and agent hung). So:

- the agent's own modules and its dependency `msgpack` are refused, always;
- the standard library (`builtins`, `sys`, `threading`, `os.path`, ...) is
  refused unless the request says `allow_stdlib` (`dynupdate apply
  --allow-stdlib`), an explicit choice by someone who knows what they patch.

Pure functions of a module name, shared by the agent (authoritative, it knows
the target's interpreter) and the CLI (`dynupdate check`/`apply` refuse the
bundle offline with its own interpreter's list).
"""
from __future__ import annotations

import os
import sys
from typing import FrozenSet, Iterable, Optional

#: the agent package, whatever name it was loaded under, plus the name it is published as
AGENT_PACKAGES = frozenset({__name__.rpartition(".")[0] or "dynupdate_agent", "dynupdate_agent"})
#: what the agent imports besides the standard library
AGENT_DEPENDENCIES = frozenset({"msgpack"})

_stdlib: Optional[FrozenSet[str]] = None


def stdlib_names() -> FrozenSet[str]:
    """Top-level names of the standard library of the running interpreter."""
    global _stdlib
    if _stdlib is None:
        names = getattr(sys, "stdlib_module_names", None)  # Python >= 3.10
        _stdlib = frozenset(names) if names is not None else _scan_stdlib()
    return _stdlib


def _scan_stdlib() -> FrozenSet[str]:
    """Python 3.9 has no sys.stdlib_module_names: list the stdlib folder instead."""
    names = set(sys.builtin_module_names)
    lib = os.path.dirname(os.__file__)
    for folder in (lib, os.path.join(lib, "lib-dynload")):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            stem = entry.split(".", 1)[0]
            if entry in ("site-packages", "dist-packages") or not stem.isidentifier():
                continue
            if entry.endswith((".py", ".so", ".pyd")) or os.path.isfile(os.path.join(folder, entry, "__init__.py")):
                names.add(stem)
    return frozenset(names)


def refusal(module: str, allow_stdlib: bool = False) -> Optional[str]:
    """Why `module` must not be patched (a message for the user), or None if it may be."""
    top = module.partition(".")[0]
    if top in AGENT_PACKAGES:
        return (f"module {module!r} is part of the dynupdate agent, which runs the update and any later rollback; "
                f"the agent can never patch itself. Nothing was changed")
    if top in AGENT_DEPENDENCIES:
        return (f"module {module!r} is a dependency of the dynupdate agent (its wire format); patching it could "
                f"leave the agent unable to reply or roll back, so it is never allowed. Nothing was changed")
    if top in stdlib_names() and not allow_stdlib:
        return (f"module {module!r} belongs to the Python standard library, which the interpreter, every thread "
                f"and the agent itself run on; refused. Nothing was changed. If you really mean to patch it, "
                f"pass --allow-stdlib (request field allow_stdlib)")
    return None


def first_refusal(modules: Iterable[str], allow_stdlib: bool = False) -> Optional[str]:
    """The refusal of the first module in `modules` that must not be patched, if any."""
    for name in modules:
        reason = refusal(name, allow_stdlib)
        if reason is not None:
            return reason
    return None
