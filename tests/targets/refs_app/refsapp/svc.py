"""The module the tests patch (tests/bundles/refs_v2/svc.py is its next version)."""
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
        return "greet v1"

    @classmethod
    @logged
    def make(cls):
        return "make v1 " + cls.__name__


@logged
def price(amount):
    """Price v1."""
    return amount * 1


@functools.lru_cache(maxsize=None)
def rate(units):
    return units * 10


@functools.lru_cache(maxsize=None)
def tax(units):
    return units + 1


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Order:
    oid: int
    lines: list = field(default_factory=list)


def slow():
    ENTERED.set()
    GATE.wait(120)
    return "slow v1"
