"""Version 1 of the reliability target's patched module (tests/bundles/rel_v2 is version 2).

Items keep `qty` as a plain int; v2 keeps it as {"n": qty}. Every access from
the server goes through methods or functions of this module, so the engine's
mediator sees (and holds) each one while an update swaps code.
"""
from relapp import faults

try:
    import dynupdate_agent
    updatable = dynupdate_agent.updatable
except ImportError:  # plain python, no agent
    def updatable(cls):
        return cls

SCHEMA = 1
REGISTRY = {}


@updatable
class Item:
    def __init__(self, iid, qty):
        self.iid = iid
        self.qty = qty

    def view(self):
        return {"iid": self.iid, "qty": self.qty}

    def incr(self, by):
        self.qty += by
        return self.qty


def label():
    return "v1"


def total():
    return sum(item.view()["qty"] for item in list(REGISTRY.values()))


def spawn(n, prefix="i"):
    start = len([k for k in REGISTRY if k.startswith(prefix)])
    for i in range(start, start + n):
        REGISTRY[f"{prefix}{i}"] = Item(f"{prefix}{i}", i)
    return len(REGISTRY)


def work(gate):
    """A call that stays in flight on this code until `gate` is released, then calls label()."""
    faults.block(gate)
    return {"inside": label(), "self": "v1"}
