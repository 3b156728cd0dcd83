"""Find msgpack, even in a process whose environment does not have it.

When the agent is injected into (or launched in) an interpreter without
msgpack, the bootstrap tells us where the CLI's copy lives. We load that copy
under a private name so the target's `sys.modules` gains no `msgpack` entry of
ours and its `sys.path` is never touched. The C extension only loads on a
matching interpreter; otherwise msgpack falls back to its pure-Python codec.
When neither is there nor readable, _minipack (the protocol's subset of msgpack
in standard-library Python) serves, so the agent loads in any target.
"""
from __future__ import annotations

import importlib.util
import os
import sys

_PRIVATE_NAME = __name__.rpartition(".")[0] + "._vendored_msgpack"


def _load_private(directory: str):
    init = os.path.join(directory, "msgpack", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        _PRIVATE_NAME, init, submodule_search_locations=[os.path.dirname(init)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no msgpack package under {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in [n for n in sys.modules if n == _PRIVATE_NAME or n.startswith(_PRIVATE_NAME + ".")]:
            del sys.modules[name]
        raise
    return module


def _find():
    try:
        import msgpack as found

        return found
    except ImportError:
        pass
    package = sys.modules.get(__name__.rpartition(".")[0])
    directory = getattr(package, "_msgpack_dir", None)
    if directory:
        try:
            return _load_private(directory)
        except (ImportError, OSError):  # e.g. the CLI's copy lies where the target's user cannot read
            pass
    from . import _minipack  # the wire protocol's subset of msgpack, standard library only

    return _minipack


msgpack = _find()
