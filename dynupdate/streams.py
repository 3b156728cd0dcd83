"""Output streams that can never change an outcome.

A user who pipes `dynupdate apply ... | head -2` closes our stdout while the
update is still running. If a write error escaped, it would abort the request
half-way and the exit code would describe our pipe, not the target. So every
write the CLI makes goes through a `Guarded` stream: a failed write marks the
stream broken and is otherwise ignored, and `settle()` at exit points the
broken file descriptors at /dev/null so the interpreter's final flush cannot
fail either. The exit code is decided by the result alone.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, TextIO


class Guarded:
    """A text stream proxy (resolved on every call, so test capture still works) that ignores write errors."""

    def __init__(self, get: Callable[[], TextIO]) -> None:
        self._get = get
        self.broken = False

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._get().write(text)
        except (OSError, ValueError, AttributeError):  # EPIPE, EIO, a closed file, or none at all (`>&-`)
            self.broken = True
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._get().flush()
        except (OSError, ValueError, AttributeError):
            self.broken = True

    def isatty(self) -> bool:
        try:
            return bool(self._get().isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


stdout = Guarded(lambda: sys.stdout)
stderr = Guarded(lambda: sys.stderr)


def settle() -> None:
    """Flush both streams; a stream whose reader has gone is silenced for the rest of the process."""
    for guarded, fd in ((stdout, 1), (stderr, 2)):
        guarded.flush()
        if guarded.broken:
            _silence(fd)


def _silence(fd: int) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except OSError:
        pass
