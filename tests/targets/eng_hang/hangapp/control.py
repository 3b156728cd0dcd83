"""Switches the deadline tests reach over HTTP (/control). Never patched: bundles import it.

LOCK    the lock a /locked request holds while it calls into hangapp.core
GO      hooks that call entered() wait for it (the test's handshake)
HANG    hooks wait on it to stay stuck in a C-level wait until the test releases it
FROZEN  while true, Guarded classes refuse attribute changes (an undo that cannot finish)
"""
import threading

LOCK = threading.Lock()
GO = threading.Event()
HANG = threading.Event()
ENTERED = threading.Event()
FROZEN = [False]
COUNTS = {"locked_held": 0, "hook_returned": 0}


class Guarded(type):
    """A metaclass whose classes can be frozen: setting or deleting attributes then raises."""

    def __setattr__(cls, name, value):
        if FROZEN[0]:
            raise RuntimeError(f"class {cls.__name__} is frozen")
        super().__setattr__(name, value)

    def __delattr__(cls, name):
        if FROZEN[0]:
            raise RuntimeError(f"class {cls.__name__} is frozen")
        super().__delattr__(name)


def entered():
    """Called first by a hook under test: tell the test, then wait for its go."""
    ENTERED.set()
    GO.wait(60)


def reset():
    GO.clear()
    HANG.clear()
    ENTERED.clear()
    FROZEN[0] = False
    for key in COUNTS:
        COUNTS[key] = 0


def report():
    return {"entered": ENTERED.is_set(), "locked": LOCK.locked(), "frozen": FROZEN[0], **COUNTS}
