"""A new module whose dependency is not installed in the target."""
import relapp_dependency_that_does_not_exist  # noqa: F401


def helper():
    return 1
