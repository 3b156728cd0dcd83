"""Carts (release 3). Complete new source of shop.cart, as shipped in patches/shop-v3."""
import functools
import time

try:
    from dynupdate_agent import updatable
except ImportError:
    def updatable(cls):
        return cls

# Module data keeps its live values across the update (these literals only
# matter for a fresh start); new names (TRANSFER_LOG) are added.
PRICES = {"apple": 100, "pear": 150, "fig": 300}
TAX_RATE = 0.20
ADDS = 0
STATS = {"decorated_calls": 0}
TRANSFER_LOG = []


def price_of(item):
    """Unit price in cents (v3: everything costs triple)."""
    return PRICES[item] * 3


def stats():
    """New in v2: reads the live module state."""
    return {"adds": ADDS, "tax_rate": TAX_RATE, "decorated_calls": STATS["decorated_calls"]}


def promo_code(cid):
    """New in v2: uses a module that did not exist before the update."""
    from shop import coupons
    return coupons.code_for(cid)


def counted(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        STATS["decorated_calls"] += 1
        return func(*args, **kwargs)
    return wrapper


@counted
def discount(amount):
    """Member discount: 20% off (v2)."""
    return round(amount * 0.8)


def slow_quote(item, seconds, gate=None):
    if gate is not None:
        gate.wait(seconds)
    else:
        time.sleep(seconds)
    return f"v3:{price_of(item)}"


class Money:
    __slots__ = ("cents",)

    def __init__(self, cents):
        self.cents = cents


@updatable
class Cart:
    """A shopping cart; v2 keeps quantities: `lines` = {item: quantity}."""

    kind = "regular"     # class-level data keeps its live value ("standard")
    created = 0
    currency = "EUR"     # new class attribute: added

    def __init__(self, cid, items=()):
        self.cid = cid
        self.lines = {}
        for item in items:
            self.lines[item] = self.lines.get(item, 0) + 1
        Cart.created += 1

    def add(self, item):
        global ADDS
        price_of(item)
        self.lines[item] = self.lines.get(item, 0) + 1
        ADDS += 1
        return sum(self.lines.values())

    def quantity(self, item):
        """New in v2."""
        return self.lines.get(item, 0)

    def total(self):
        return sum(price_of(item) * quantity for item, quantity in self.lines.items())

    def summary(self):
        """New in v2."""
        return f"{self.cid}: {self.total()}"

    def describe(self):
        return f"{self.cid}: {sum(self.lines.values())} unit(s) in {len(self.lines)} line(s)"

    def clear(self):
        """New in v3."""
        self.lines.clear()

    class Policy:
        """A nested class: updated like any other."""

        def limit(self):
            return 30

        @staticmethod
        def name():
            return "policy (v3)"

    @property
    def label(self):
        return f"Cart {self.cid} ({sum(self.lines.values())} units)"

    @classmethod
    def describe_class(cls):
        return f"{cls.__name__} (v3)"

    @staticmethod
    def fmt(cents):
        return f"EUR {cents / 100:.2f}"


class GiftCart(Cart):

    def __init__(self, cid, items=(), message=""):
        super().__init__(cid, items)
        self.message = message

    def total(self):
        return super().total() + 75  # gift wrapping got dearer

    def summary(self):
        """New in v2, and it uses super(): must bind to the live class."""
        return super().summary() + " (gift)"
