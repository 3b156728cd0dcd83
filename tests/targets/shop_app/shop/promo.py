"""Promotions (base release). The app imports this module only on the first /promo
request, so a patch can ship a new version of it before it is ever loaded."""


def banner():
    return "no promotion (base)"
