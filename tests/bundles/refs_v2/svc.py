"""The module the tests patch: version 2."""
import threading
from dataclasses import dataclass

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


@dataclass
class Point:
    x: int
    y: int
    z: int = 0                                      # a new field


def slow():
    ENTERED.set()
    GATE.wait(120)
    return "slow v2"
