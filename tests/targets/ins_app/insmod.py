"""Instance-set target module, version 1 (tests/test_instance_set.py writes version 2).

`Plain` and `Becomes` are plain classes (v2 makes `Becomes` @updatable);
`Tracked` is @updatable. `hold()` is old code an update must wait for; it
creates `Plain` instances just before it returns, i.e. during the wait.
"""
import gc
import threading

import dynupdate_agent

GATE = threading.Event()
HELD = threading.Event()
KEEP = []
LOG = []  # transfer hooks of version 2 write here


class Plain:
    def __init__(self, n):
        self.n = n

    def describe(self):
        return f"plain {self.n}"


class Becomes:
    def __init__(self, n):
        self.n = n

    def describe(self):
        return f"becomes {self.n}"


@dynupdate_agent.updatable
class Tracked:
    def __init__(self, n):
        self.n = n
        self.other = None


def hold(make):
    """Park inside old code until released, then create `make` Plain instances and return."""
    HELD.set()
    GATE.wait(60)
    KEEP.extend(Plain(1000 + i) for i in range(make))
    return make


def churn(n):
    """Keep n Tracked instances while another thread makes cyclic garbage (GC-triggered sweeps)."""
    kept = []
    done = threading.Event()

    def garbage():
        while not done.is_set():
            for _ in range(500):
                a, b = Tracked(-1), Tracked(-1)
                a.other, b.other = b, a

    thread = threading.Thread(target=garbage)
    thread.start()
    try:
        for i in range(n):
            kept.append(Tracked(i))
    finally:
        done.set()
        thread.join()
    gc.collect()
    return kept
