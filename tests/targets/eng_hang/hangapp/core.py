"""Version 1 of the module the deadline tests patch (their bundles are generated from templates)."""
from hangapp import control

try:
    import dynupdate_agent
    updatable = dynupdate_agent.updatable
except ImportError:
    def updatable(cls):
        return cls

SCHEMA = 1
REGISTRY = {}


@updatable
class Item(metaclass=control.Guarded):
    def __init__(self, iid, qty):
        self.iid = iid
        self.qty = qty

    def view(self):
        return {"iid": self.iid, "qty": self.qty}


def label():
    return "v1"


def spawn(n):
    for i in range(n):
        REGISTRY[f"i{i}"] = Item(f"i{i}", i)
