"""Run a few lines of Python inside another running CPython process (the bootstrap of `attach`).

* driver.py      - checks, folders, gdb's process, outcome (`inject`, `InjectionError`)
* gdb_program.py - what gdb runs: symbols first, sample threads, one call under a lock
* threads.py     - which thread may run Python code, from its backtrace (pure, unit-tested)
* symbols.py     - symbol files gdb loads before it stops the target
* folders.py     - the private and the drop folder, safe against the target's user
"""
from .driver import MIN_PYTHON, REASONS, InjectionError, check_target, inject

__all__ = ["MIN_PYTHON", "REASONS", "InjectionError", "check_target", "inject"]
