"""Version 1 of the demo's basket: a list of item names, every item costs 1.00."""
import dynupdate_agent


def price_of(item):
    return 1.00


@dynupdate_agent.updatable
class Basket:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def describe(self):
        return {"items": sorted(self.items), "total": round(sum(price_of(i) for i in self.items), 2),
                "pricing": "flat 1.00"}
