"""Promotions (v2): not imported by the app when the patch lands."""


def banner():
    return "spring sale (v2)"
