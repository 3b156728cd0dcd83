"""Carts (release 2). Complete new source of shop.cart, as shipped in patches/shop-v2."""
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
TRANSFER_LOG = []        # cids whose state was migrated, in order


def price_of(item):
    """Unit price in cents (v2: everything costs double)."""
    return PRICES[item] * 2


def legacy_price(item):
    """Removed in shop-v3."""
    return PRICES[item] * 2


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
    return f"v2:{price_of(item)}"


class Money:
    __slots__ = ("cents",)

    def __init__(self, cents):
        self.cents = cents


class Meta(type):
    pass


@updatable
class Cart(metaclass=Meta):
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

    def __dynupdate_transfer__(self, old):
        """Called once per live cart: `old` is its attribute dict from before."""
        lines = {}
        for item in old.get("items", []):
            lines[item] = lines.get(item, 0) + 1
        self.lines = lines
        self.__dict__.pop("items", None)
        TRANSFER_LOG.append(self.cid)

    def __dynupdate_revert__(self, new):
        """Called on rollback: back to the base layout (an `items` list)."""
        items = []
        for item, quantity in new.get("lines", {}).items():
            items.extend([item] * quantity)
        self.items = items
        self.__dict__.pop("lines", None)

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

    def legacy_label(self):
        return "legacy"

    class Policy:
        """A nested class: updated like any other."""

        def limit(self):
            return 20

        @staticmethod
        def name():
            return "policy (v2)"

    @property
    def label(self):
        return f"Cart {self.cid} ({sum(self.lines.values())} units)"

    @classmethod
    def describe_class(cls):
        return f"{cls.__name__} (v2)"

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


def __dynupdate_transfer__(old):
    """Module hook: runs once after the swap, in the live module."""
    global TAX_RATE
    TAX_RATE = 0.25
    STATS["tax_raised_from"] = old["TAX_RATE"]


def __dynupdate_revert__(new):
    """Module hook on rollback: back to the base constant."""
    global TAX_RATE
    TAX_RATE = 0.20
    STATS.pop("tax_raised_from", None)
