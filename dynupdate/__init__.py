"""dynupdate: live-patch running Python processes (CLI and client library).

Scripts use the same library as the CLI:

    from dynupdate import connect, load_bundle
    client, injected = connect(4242)
    with client:
        result = client.apply(load_bundle("patches/cart-v2"), timeout=10)
"""
from typing import Any, List

from .errors import (
                     AccessDenied,
                     BundleError,
                     Busy,
                     DynupdateError,
                     GdbMissing,
                     InjectionFailed,
                     NoSuchProcess,
                     NotPython,
                     RemoteError,
                     SafePointTimeout,
                     TargetUnreachable,
                     UsageError,
)

# Loaded on first use (PEP 562), so `dynupdate status` does not import the bundle loader and friends.
_LAZY = {"connect": ("attach", "connect"), "load_bundle": ("bundle", "load_bundle"), "Client": ("client", "Client")}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dynupdate' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"
__all__ = ["Client", "connect", "load_bundle", "DynupdateError", "UsageError", "BundleError", "TargetUnreachable",
           "NoSuchProcess", "NotPython", "AccessDenied", "GdbMissing", "InjectionFailed", "RemoteError", "Busy",
           "SafePointTimeout"]
