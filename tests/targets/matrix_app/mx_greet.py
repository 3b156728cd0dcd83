"""Module the target-matrix bundle replaces: greet() changes, the hit counter (state) must survive."""
HITS = [0]


def hit():
    HITS[0] += 1
    return HITS[0]


def greet():
    return "hello v1"
