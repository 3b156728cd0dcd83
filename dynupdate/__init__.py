"""dynupdate: live-patch running Python processes (CLI and client library).

Scripts use the same library as the CLI:

    from dynupdate import connect, load_bundle
    client, injected = connect(4242)
    with client:
        result = client.apply(load_bundle("patches/cart-v2"), timeout=10)
"""
from .attach import connect
from .bundle import load_bundle
from .client import Client
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

__version__ = "0.1.0"
__all__ = ["Client", "connect", "load_bundle", "DynupdateError", "UsageError", "BundleError", "TargetUnreachable",
           "NoSuchProcess", "NotPython", "AccessDenied", "GdbMissing", "InjectionFailed", "RemoteError", "Busy",
           "SafePointTimeout"]
