"""A module unrelated to hangapp.core (an update of it must not depend on core's state)."""


def hello():
    return "other v1"
