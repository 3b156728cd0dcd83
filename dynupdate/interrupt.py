"""Ctrl-C during an update: ask the target to abandon it, then report what really happened.

A KeyboardInterrupt in the middle of reading a reply would leave us not
knowing whether the update landed. Instead, while a request runs, the first
SIGINT only half-closes the connection: the agent abandons the update if it
has not recorded it yet (the target is unchanged) and answers either way, so
the CLI reports the outcome the target actually has. A second Ctrl-C stops
waiting for that answer (the outcome is then unknown and the CLI says so).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class State:
    requested = False


@contextmanager
def abandon_on_sigint(client: Any) -> Iterator[State]:
    """While the block runs, the first Ctrl-C abandons the request instead of raising."""
    state = State()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(_signum: int, _frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True
        from . import render

        render.err.print("[yellow]interrupted:[/] asking the target to abandon the update… "
                         "(Ctrl-C again to stop waiting for its answer)", markup=True)
        client.abandon()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
