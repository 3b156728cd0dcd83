"""The veto hook: a new module's `__dynupdate_check__()` may refuse the update.

Like Linux livepatch's pre-patch callbacks, the check runs at the safe point,
just before the swap, while the old code is still live, so it can look at the
live state ("is the queue drained?", "does the config allow it?"). Raising, or
returning a string, vetoes the update with that reason; nothing has changed
yet, so there is nothing to undo. It also runs for `--dry-run`, whose answer
then predicts the veto.
"""
from __future__ import annotations

import traceback
from typing import Any, Iterable, Optional


class Vetoed(Exception):
    """A module's check refused the update; `reason` is what it said."""

    def __init__(self, module: str, reason: str, tb: str = "") -> None:
        super().__init__(f"module {module!r} vetoed the update: {reason}")
        self.module, self.reason, self.tb = module, reason, tb


def check(modules: Iterable[Any]) -> None:
    """Run every `__dynupdate_check__` of the bundle (module plans in bundle order)."""
    for mp in modules:
        hook = getattr(mp, "check_hook", None)
        if hook is None:
            continue
        try:
            verdict: Optional[Any] = hook()
        except Exception as exc:  # the hook's own way to say no
            raise Vetoed(mp.name, f"{type(exc).__name__}: {exc}", traceback.format_exc()) from None
        if isinstance(verdict, str) and verdict:
            raise Vetoed(mp.name, verdict)
