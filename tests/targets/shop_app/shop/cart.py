"""Carts (base release). patches/shop-v2 ships the next release of this file."""
import functools
import time

try:
    from dynupdate_agent import updatable
except ImportError:  # the app also runs without dynupdate
    def updatable(cls):
        return cls

# Module-level data is state: an update keeps these live values.
PRICES = {"apple": 100, "pear": 150, "fig": 300}  # cents
TAX_RATE = 0.20          # a config constant; shop-v2's module hook raises it
ADDS = 0                 # counts Cart.add calls
STATS = {"decorated_calls": 0}


def price_of(item):
    """Unit price in cents."""
    return PRICES[item]


def legacy_price(item):
    """Removed in shop-v3."""
    return PRICES[item]


def counted(func):
    """A functools.wraps decorator: the module attribute is the wrapper."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        STATS["decorated_calls"] += 1
        return func(*args, **kwargs)
    return wrapper


@counted
def discount(amount):
    """Member discount: 10% off."""
    return round(amount * 0.9)


def slow_quote(item, seconds, gate=None):
    """Blocks inside shop.cart (until `gate` is set, at most `seconds`): keeps an
    update waiting for its safe point."""
    if gate is not None:
        gate.wait(seconds)
    else:
        time.sleep(seconds)
    return f"v1:{price_of(item)}"


class Money:
    """A __slots__ class: its layout may not change in an update."""
    __slots__ = ("cents",)

    def __init__(self, cents):
        self.cents = cents


@updatable
class Cart:
    """A shopping cart; live carts are state (their `items` list)."""

    kind = "standard"    # class-level data: state, kept live
    created = 0          # class-level counter

    def __init__(self, cid, items=()):
        self.cid = cid
        self.items = list(items)
        Cart.created += 1

    def add(self, item):
        global ADDS
        price_of(item)
        self.items.append(item)
        ADDS += 1
        return len(self.items)

    def total(self):
        return sum(price_of(item) for item in self.items)

    def describe(self):
        return f"{self.cid} holds {len(self.items)} item(s)"

    def legacy_label(self):
        """Removed in shop-v3."""
        return "legacy"

    class Policy:
        """A nested class: updated like any other."""

        def limit(self):
            return 10

        @staticmethod
        def name():
            return "policy (base)"

    @property
    def label(self):
        return f"cart {self.cid}: {len(self.items)} item(s)"

    @classmethod
    def describe_class(cls):
        return f"{cls.__name__} (base)"

    @staticmethod
    def fmt(cents):
        return f"{cents // 100}.{cents % 100:02d}"


class GiftCart(Cart):
    """A subclass defined in the patched module."""

    def __init__(self, cid, items=(), message=""):
        super().__init__(cid, items)
        self.message = message

    def total(self):
        return super().total() + 50  # gift wrapping
