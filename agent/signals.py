"""Remove the agent's socket when a signal ends the process.

SIGINT needs nothing: its default handler raises KeyboardInterrupt, the
interpreter exits normally and the agent's atexit hook removes the socket.
SIGTERM's default action kills the process without running atexit, leaving a
socket behind. Where the program has not chosen its own SIGTERM handling (the
disposition is still the default) and we are on the main thread (only it may
set handlers), `install()` sets a handler that removes the socket, restores
the default action and re-sends the signal: the process still dies of SIGTERM
with the same exit status, and a program that installs its own handler later
simply replaces ours. Only `dynupdate run`'s launcher calls `install()`:
`dynupdate_agent.start()` never installs signal handlers (a program that
embeds the agent keeps full control of its signals). An agent injected into
a running process is not on the main thread and leaves signal handling alone; `dynupdate ps` removes the
sockets of processes that no longer exist.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any


def _remove_socket_and_die(signum: int, _frame: Any) -> None:
    try:
        from . import runtime

        runtime.stop()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install() -> bool:
    """Handle SIGTERM if its disposition is the default; True if the handler was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _remove_socket_and_die)
    except (ValueError, OSError):
        return False
    return True
