"""The module the tests patch: version 2."""
import functools
import threading
from dataclasses import dataclass, field

from refsapp.deco import logged

GATE = threading.Event()      # holds slow() until the test sets it
ENTERED = threading.Event()   # set once slow() runs


class Base:
    def greet(self):
        return "base"


class Greeter(Base):
    def greet(self):
        return "greet v2 over " + super().greet()    # gains super(): a __class__ cell

    @classmethod
    def make(cls):                                  # lost its inner @logged
        return "make v2 " + cls.__name__


@logged
def price(amount):
    """Price v2."""
    return amount * 2


@functools.lru_cache(maxsize=None)
def rate(units):
    return units * 100


def tax(units):                                 # no longer cached
    return units + 2


@dataclass
class Point:
    x: int
    y: int
    z: int = 0                                      # a new field


@dataclass
class Order:
    oid: int
    lines: dict = field(default_factory=dict)


def slow():
    ENTERED.set()
    GATE.wait(120)
    return "slow v2"



def __dynupdate_revert__(new):
    from refsapp.deco import CALLS  # runs after the rollback restored the old globals

    if CALLS.get("fail_revert"):  # a test sets it to make a rollback fail (and be undone)
        raise RuntimeError("revert refused by the test")
