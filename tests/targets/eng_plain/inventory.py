"""Inventory (base release): a plain class, no dynupdate anywhere."""


def greeting():
    return "inventory v1"


class Stock:
    def __init__(self, sku, qty):
        self.sku = sku
        self.qty = qty

    def describe(self):
        return f"{self.sku}: {self.qty}"
