"""Imported only when /late is first requested (in a worker, typically after an update)."""


def answer():
    return "late-v1"
