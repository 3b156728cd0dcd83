"""VAT (base release)."""
RATE = 0.20


def vat(cents):
    return round(cents * RATE)
