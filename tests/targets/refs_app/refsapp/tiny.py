"""A small module patched many times by the leak tests."""


def value():
    return 0
