"""Fault switches for the reliability tests. Never patched: bundles import it.

`hit(point)` counts calls per point; when the count reaches the configured
value it raises (`fail`) or parks on a gate (`block`) until the gate is
released. Configured over HTTP (`/faults`, `/gate`) by the tests, so one
bundle (tests/bundles/rel_v2) exercises every failure path:

    points: exec (module body), transfer (per instance), revert (per instance),
            module_hook, module_revert
    fail:   {point: k}  raise on the k-th hit (k = -1: on every hit)
    block:  {point: k}  park the k-th hit on gate `point` until released
"""
import threading

_lock = threading.Lock()
FAIL = {}
BLOCK = {}
COUNTS = {}
GATES = {}
BLOCKED = {}


class InjectedFault(RuntimeError):
    pass


def configure(fail=None, block=None):
    with _lock:
        FAIL.clear()
        FAIL.update(fail or {})
        BLOCK.clear()
        BLOCK.update(block or {})
        COUNTS.clear()
        for point in BLOCK:
            GATES[point] = threading.Event()


def gate(name):
    with _lock:
        ev = GATES.get(name)
        if ev is None:
            ev = GATES[name] = threading.Event()
        return ev


def arm(name):
    with _lock:
        GATES[name] = threading.Event()


def release(name):
    gate(name).set()


def block(name, timeout=60.0):
    """Park the calling thread on gate `name` (visible in /faults as blocked)."""
    ev = gate(name)
    with _lock:
        BLOCKED[name] = BLOCKED.get(name, 0) + 1
    try:
        ev.wait(timeout)
    finally:
        with _lock:
            BLOCKED[name] -= 1


def hit(point):
    with _lock:
        n = COUNTS[point] = COUNTS.get(point, 0) + 1
        fail = FAIL.get(point) in (n, -1)
        parked = BLOCK.get(point) == n
    if parked:
        block(point)
    if fail:
        raise InjectedFault(f"injected fault at {point} #{n}")


def report():
    with _lock:
        return {"fail": dict(FAIL), "block": dict(BLOCK), "counts": dict(COUNTS), "blocked": dict(BLOCKED)}
