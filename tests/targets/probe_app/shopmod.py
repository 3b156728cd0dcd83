"""Code the probe tests attach to: every kind of callable a probe must handle."""
import asyncio


def total(items, tax=0.1):
    subtotal = sum(items)
    return round(subtotal * (1 + tax), 2)


class Cart:
    def __init__(self):
        self.items = []

    def add(self, item, qty=1):
        self.items.extend([item] * qty)
        return len(self.items)

    @staticmethod
    def price(item):
        return len(item)

    @classmethod
    def make(cls):
        return cls()

    @property
    def size(self):
        return len(self.items)

    class Line:
        def describe(self, name):
            return f"line {name}"


def countdown(n):
    while n > 0:
        yield n
        n -= 1
    return "done"


async def slow_echo(value, delay=0.01):
    await asyncio.sleep(delay)
    return value


def fails(x):
    if x < 0:
        raise ValueError("negative")
    return x
