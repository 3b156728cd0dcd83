"""Version 3 of relapp.items: qty is kept as {"n": qty, "v": 3}; label() says "v3"."""
from relapp import faults

try:
    import dynupdate_agent
    updatable = dynupdate_agent.updatable
except ImportError:
    def updatable(cls):
        return cls

faults.hit("exec")  # an exception while executing the new module, when switched on

SCHEMA = 1
REGISTRY = {}


@updatable
class Item:
    def __init__(self, iid, qty):
        self.iid = iid
        self.count = {"n": qty}

    def view(self):
        return {"iid": self.iid, "qty": self.count["n"]}

    def incr(self, by):
        self.count["n"] += by
        return self.count["n"]

    def __dynupdate_transfer__(self, old):
        """v2 -> v3: tag the count; calls another updated method while the update runs."""
        self.count = {"n": old["count"]["n"], "v": 3}
        assert self.view() == {"iid": self.iid, "qty": old["count"]["n"]}  # an updated method
        faults.hit("transfer")

    def __dynupdate_revert__(self, new):
        """v3 -> v2 on rollback."""
        assert self.view()["qty"] == new["count"]["n"]  # an updated method, on the v3 code
        self.count = {"n": new["count"]["n"]}
        faults.hit("revert")



def label():
    return "v3"


def total():
    return sum(item.view()["qty"] for item in list(REGISTRY.values()))


def spawn(n, prefix="i"):
    start = len([k for k in REGISTRY if k.startswith(prefix)])
    for i in range(start, start + n):
        REGISTRY[f"{prefix}{i}"] = Item(f"{prefix}{i}", i)
    return len(REGISTRY)


def work(gate):
    faults.block(gate)
    return {"inside": label(), "self": "v3"}


def __dynupdate_transfer__(old):
    global SCHEMA
    SCHEMA = 3          # module state changed first: a failure must restore it
    faults.hit("module_hook")


def __dynupdate_revert__(new):
    global SCHEMA
    SCHEMA = 2
    faults.hit("module_revert")
