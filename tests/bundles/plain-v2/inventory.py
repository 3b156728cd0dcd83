"""Inventory (release 2)."""


def greeting():
    return "inventory v2"


class Stock:
    def __init__(self, sku, quantity):
        self.sku = sku
        self.quantity = quantity

    def __dynupdate_transfer__(self, old):
        self.quantity = old["qty"]
        del self.qty

    def __dynupdate_revert__(self, new):
        self.qty = new["quantity"]
        del self.quantity

    def describe(self):
        return f"{self.sku} x{self.quantity} (v2)"
