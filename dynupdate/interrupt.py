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
from typing import Any


class State:
    #: Ctrl-C was pressed while the request ran
    requested = False
    #: the target's answer is known: from now on Ctrl-C changes nothing (the outcome is reported as it is)
    finished = False


def arm(client: Any) -> State:
    """From now until the process exits, Ctrl-C abandons the request instead of raising.

    The handler is not restored afterwards on purpose: once the answer is
    known, an interrupt must not cut the report of what happened short.
    """
    state = State()
    if threading.current_thread() is not threading.main_thread():
        return state

    def handler(_signum: int, _frame: Any) -> None:
        if state.finished:
            return
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True
        from . import render

        render.err.print("[yellow]interrupted:[/] asking the target to abandon the update… "
                         "(Ctrl-C again to stop waiting for its answer)", markup=True)
        client.abandon()

    signal.signal(signal.SIGINT, handler)
    return state
