"""Module updated by the fork-safety tests (tests/test_prefork_forking.py)."""
import threading

release = threading.Event()


def greet():
    return "v1"


def hold():
    """Keeps the calling thread inside this module: no safe point until `release` is set."""
    release.wait(60)
    return "held-v1"
