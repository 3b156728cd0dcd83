"""Version 2 of the demo's basket: quantities per item, priced from a table."""
import dynupdate_agent

PRICES = {"apple": 0.50, "pear": 0.75}


def price_of(item):
    return PRICES.get(item, 2.00)


@dynupdate_agent.updatable
class Basket:
    def __init__(self):
        self.quantities = {}

    def add(self, item):
        self.quantities[item] = self.quantities.get(item, 0) + 1

    def describe(self):
        items = sorted(i for i, n in self.quantities.items() for _ in range(n))
        total = sum(price_of(i) * n for i, n in self.quantities.items())
        return {"items": items, "total": round(total, 2), "pricing": "price table"}

    def __dynupdate_transfer__(self, old):
        """v1 -> v2: a list of names becomes a name -> quantity map."""
        self.quantities = {}
        for item in old["items"]:
            self.quantities[item] = self.quantities.get(item, 0) + 1
        del self.items

    def __dynupdate_revert__(self, new):
        """v2 -> v1 on rollback: expand the quantities back into a list."""
        self.items = [i for i, n in new["quantities"].items() for _ in range(n)]
        del self.quantities
