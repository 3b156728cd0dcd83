"""Coupons (new in v2: the base release has no such module)."""
VALUE = "SPRING-V2"


def code_for(cid):
    return f"{VALUE}-{cid}"
