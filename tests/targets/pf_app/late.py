"""Imported only when /late is first requested (in a worker, typically after an update)."""


class Counter:
    def __init__(self):
        self.hits = 0


COUNTER = Counter()


def answer():
    COUNTER.hits += 1  # state in the original layout: fails if a rollback left the bundle's layout
    return "late-v1"
