"""One exception family; each type knows its exit code and tells the user what to do.

Exit codes (a published contract, see README):
  0 ok
  1 the operation was rejected or failed inside the target, which is unchanged
  2 usage error or invalid input, detected before contacting the target
  3 target unreachable (no such process, not Python, permission, gdb, injection)
  4 no safe point was reached within --timeout; the target is unchanged
  130 interrupted (Ctrl-C); the message says whether the target is unchanged
"""
from __future__ import annotations

from typing import Any, Dict, Optional


class DynupdateError(Exception):
    """Base of every error dynupdate reports; `str()` is the message for the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", remote: Optional[Dict[str, Any]] = None,
                 result: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: the target-side error {type, message, traceback}, when there is one
        self.remote = remote
        #: the agent's full reply, when the failure came from the target
        self.result = result

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def as_json(self) -> Dict[str, Any]:
        if self.remote:
            return dict(self.remote)
        return {"type": type(self).__name__, "message": self.message, "traceback": ""}


class UsageError(DynupdateError):
    """The command line or its input is invalid; nothing was sent to the target."""

    exit_code = 2


class BundleError(UsageError):
    """The patch bundle is invalid (manifest, file, syntax); names the file and line."""


class TargetUnreachable(DynupdateError):
    """The target cannot be reached or controlled."""

    exit_code = 3


class NoSuchProcess(TargetUnreachable):
    pass


class NotPython(TargetUnreachable):
    pass


class AccessDenied(TargetUnreachable):
    pass


class UnsupportedPython(TargetUnreachable):
    """The target runs a CPython older than the agent supports; found from /proc before any injection."""


class GdbMissing(TargetUnreachable):
    pass


class InjectionFailed(TargetUnreachable):
    pass


class ProtocolMismatch(TargetUnreachable):
    """The agent speaks another protocol version or sent something unreadable."""


class RemoteError(DynupdateError):
    """The target refused or failed the request; it runs on its previous version."""

    exit_code = 1


class Busy(RemoteError):
    """Another update or rollback is running in the target."""


class HookStuck(Busy):
    """An abandoned update's hook has not returned yet; updates are refused until it does."""


class HookTimeout(RemoteError):
    """A hook or new module body did not finish within --hook-timeout; the update was undone."""


class UndoFailed(RemoteError):
    """The update failed and undoing it failed too; the message lists what was not undone."""


class SafePointTimeout(RemoteError):
    """No safe point within --timeout; the update was abandoned, nothing changed."""

    exit_code = 4


class Interrupted(DynupdateError):
    """Ctrl-C: the update was abandoned before it landed (the target is unchanged) or the outcome is unknown."""

    exit_code = 130


_REMOTE_TYPES = {"Busy": Busy, "SafePointTimeout": SafePointTimeout, "HookStuck": HookStuck,
                 "HookTimeout": HookTimeout, "UndoFailed": UndoFailed}


def from_remote(error: Dict[str, Any], result: Optional[Dict[str, Any]] = None) -> RemoteError:
    """Turn an agent's error reply into the matching exception type."""
    kind = str(error.get("type", "RemoteError"))
    cls = _REMOTE_TYPES.get(kind, RemoteError)
    message = str(error.get("message", "the target reported an error"))
    return cls(f"{kind}: {message}" if cls is RemoteError else message, remote=dict(error), result=result)


class BuildNeedsAction(DynupdateError):
    """`build --strict`: the compatibility report lists items that need the author's action (exit 1)."""
