"""VAT (base release)."""
RATE = 0.30


def vat(cents):
    return round(cents * RATE)

raise RuntimeError("boom while executing shop.tax")
