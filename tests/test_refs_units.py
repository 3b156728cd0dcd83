"""Unit tests (pure logic, in-process) for the pieces behind issue 8 items 3, 5, 6:
forwarders of any closure shape, their undo and rollback; linecache leases;
the refusal rules. The real-process tests are test_refs_redirect/_refusals/_leaks."""
import asyncio
import gc
import linecache
import weakref

import pytest

from dynupdate_agent import plan, refusals, sources
from dynupdate_agent.forward import FORWARD


def make_closure(n):
    """A function whose closure has n cells, returning its first cell's value."""
    names = [f"v{i}" for i in range(n)]
    body = "def outer():\n"
    for i, name in enumerate(names):
        body += f"    {name} = {i + 10}\n"
    refs = " + ".join(names) if names else "0"
    body += f"    def f(x, *, k=1):\n        return ('old', x, k, {refs})\n    return f\n"
    ns = {}
    exec(body, ns)
    return ns["outer"]()


@pytest.mark.parametrize("cells", [0, 1, 3])
def test_forwarder_of_any_closure_shape_runs_the_replacement_and_undoes(cells):
    old = make_closure(cells)
    before = old.__code__

    def new(x, *, k=2):
        return ("new", x, k)

    op = plan.ForwardFunction(old, new)
    stored = [old]
    op.apply()
    assert stored[0](5) == ("new", 5, 2) and stored[0](5, k=7) == ("new", 5, 7)
    assert old.__code__.co_name == "f" and len(old.__code__.co_freevars) == cells
    op.undo()
    assert old.__code__ is before and FORWARD not in old.__dict__
    assert old(5)[0] == "old"


def test_rollback_of_a_forward_makes_the_replacement_forward_back():
    def old(x):
        return "old"

    def new(x):
        return "new"

    op = plan.ForwardFunction(old, new)
    op.apply()
    back = op.inverse()
    back.apply()
    assert old(1) == "old" and new(1) == "old"
    back.undo()  # the rollback itself failed: the update stands again
    assert old(1) == "new" and new(1) == "new"


def test_forwarding_async_and_generator_functions():
    async def old_co():
        return "old"

    async def new_co():
        return "new"

    def old_gen():
        yield "old"

    def new_gen():
        yield "new"

    plan.ForwardFunction(old_co, new_co).apply()
    plan.ForwardFunction(old_gen, new_gen).apply()
    assert asyncio.run(old_co()) == "new"
    assert list(old_gen()) == ["new"]


def test_forwarder_does_not_keep_its_function_alive():
    def old():
        return 1

    def new():
        return 2

    op = plan.ForwardFunction(old, new)
    op.apply()
    ref = weakref.ref(old)
    del old, op
    gc.collect()
    assert ref() is None, "the forwarder's code must not hold its own function (a cycle the GC cannot see)"


def test_source_leases_same_file_twice_suspend_and_release():
    name = "<dynupdate unit>/m.py"
    first = sources.SourceLease(name, "a = 1\n")
    second = sources.SourceLease(name, "b = 2\n")
    sources.settle(keep=True)
    assert linecache.getline(name, 1) == "b = 2\n"
    second.suspend()                      # rolled back: the older live lease shows again
    assert linecache.getline(name, 1) == "a = 1\n"
    second.resume()                       # the rollback was undone
    assert linecache.getline(name, 1) == "b = 2\n"
    second.release()
    first.release()
    assert name not in linecache.cache


def test_source_lease_follows_its_plan_and_failed_requests():
    owner = plan.Plan()
    kept = sources.SourceLease("<dynupdate unit>/kept.py", "x = 1\n")
    kept.keep_with(owner)
    dropped = sources.SourceLease("<dynupdate unit>/failed.py", "y = 1\n")
    sources.settle(keep=False)            # the request failed: both are released
    assert "<dynupdate unit>/kept.py" not in linecache.cache
    assert "<dynupdate unit>/failed.py" not in linecache.cache
    again = sources.SourceLease("<dynupdate unit>/kept.py", "x = 2\n")
    again.keep_with(owner)
    sources.settle(keep=True)
    assert "<dynupdate unit>/kept.py" in linecache.cache
    del owner
    gc.collect()
    assert "<dynupdate unit>/kept.py" not in linecache.cache
    assert dropped.state == kept.state == again.state == "released"


@pytest.mark.parametrize("name,allowed_with_flag", [
    ("builtins", True), ("sys", True), ("threading", True), ("os.path", True), ("json.decoder", True),
    ("dynupdate_agent", False), ("dynupdate_agent.server", False), ("msgpack", False), ("msgpack.ext", False)])
def test_refusal_rules(name, allowed_with_flag):
    assert refusals.refusal(name) is not None
    assert (refusals.refusal(name, allow_stdlib=True) is None) is allowed_with_flag


@pytest.mark.parametrize("name", ["shop.cart", "__main__", "tests_support", "dynupdate_agentx", "msgpackish"])
def test_application_modules_are_not_refused(name):
    assert refusals.refusal(name) is None


def test_stdlib_scan_fallback_agrees_with_stdlib_module_names():
    scanned = refusals._scan_stdlib()
    for name in ("os", "threading", "json", "asyncio", "sys", "builtins", "_thread", "collections"):
        assert name in scanned
    assert "msgpack" not in scanned and "pytest" not in scanned


def test_a_reference_that_cannot_be_redirected_is_named_in_warnings():
    """A classmethod that became a staticmethod: a bound classmethod taken before passes
    `cls`, the new function takes nothing, so it cannot forward; the result says so."""
    import sys
    import types

    from dynupdate_agent import diff

    module = types.ModuleType("refs_unit_kind")
    sys.modules[module.__name__] = module
    try:
        exec("class K:\n    @classmethod\n    def f(cls):\n        return 1\n", vars(module))
        mp = diff.plan_module(module.__name__, "class K:\n    @staticmethod\n    def f():\n        return 2\n",
                              "<dynupdate unit>/kind.py")
        assert any("K.f changed from a classmethod to staticmethod" in w for w in mp.warnings), mp.warnings
    finally:
        sources.settle(keep=False)
        del sys.modules[module.__name__]
