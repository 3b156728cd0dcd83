"""Decorators defined in another module than the code they wrap (never patched)."""
import functools

CALLS = {"logged": 0}


def logged(func):
    """A functools.wraps decorator: the wrapper's globals are this module's."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        CALLS["logged"] += 1
        return func(*args, **kwargs)
    return wrapper
