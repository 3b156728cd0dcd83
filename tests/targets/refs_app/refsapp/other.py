"""Another module using deco.logged (never patched): its calls share the wrapper's code."""
import threading

from refsapp.deco import logged

GATE = threading.Event()
ENTERED = threading.Event()


@logged
def blocked():
    ENTERED.set()
    GATE.wait(120)
    return "other done"
