"""Issue 8 item 3: every existing reference runs the new code.

One refs_app target, one apply of tests/bundles/refs_v2 while a call into the
patched module is in flight (and one in another module, through the same
decorator, which the update must not wait for) and a call through a stored
bound method is held by the mediator; the tests then look, from outside, at each kind of reference
taken before the update (scenarios after IPython autoreload's test suite):

- a stored bound method whose method gains `super()` (its free variables
  change, so it is replaced, not updated in place), and a call held during
  the wait into that replaced function;
- a function wrapped by a decorator from ANOTHER module (functools.wraps):
  the held wrapper, the module attribute and `__wrapped__`;
- a `@classmethod` that loses an inner decorator, bound before the update;
- a `@dataclass` that gains a field: generated __init__/__repr__/__eq__, fields();
- a `functools.lru_cache` object (a wrapper that is not a function).
The last test rolls back and checks the same references run the old code again.
"""
import os

import pytest

from conftest import wait_until
from refsutil import REFS_V2, App, raw_bundle, start_app

from dynupdate import errors
from dynupdate.client import Client
from shoputil import Command, assert_result_shape, attach_module_output  # noqa: F401
from shoputil import start_module_target  # noqa: F401  (a fixture, used by name)

pytestmark = pytest.mark.usefixtures("attach_module_output")

GREET_V2 = "greet v2 over base"


@pytest.fixture(scope="module")
def updated(request):
    app = start_app(request.getfixturevalue("start_module_target"))
    before = {"bound": app.eval("holders.BOUND()"), "make": app.eval("holders.MAKE()"),
              "price": app.eval("holders.PRICE(10)"), "point": app.eval("repr(holders.POINT)"),
              "rate": app.eval("holders.RATE(1)"), "tax": app.eval("holders.TAX(1)")}
    generation = app.status()["generation"]
    # in flight in ANOTHER module, through the same decorator's wrapper code: not waited for
    elsewhere = app.eval_async("other.blocked()")
    wait_until(lambda: app.eval("other.ENTERED.is_set()"), message="other.blocked() to start")
    slow = app.eval_async("svc.slow()")                       # in flight on the old code
    wait_until(lambda: app.eval("svc.ENTERED.is_set()"), message="slow() to start")
    apply = Command("apply", "--pid", str(app.pid), REFS_V2, "--json")
    wait_until(lambda: app.status()["generation"] > generation, timeout=30, interval=0.05,
               message="the update to start waiting for a safe point")
    held = app.eval_async("holders.BOUND()")                  # into the function being replaced
    wait_until(lambda: app.eval("probe.held_calls()") >= 1, timeout=30, interval=0.05,
               message="the call through the stored bound method to be held by the mediator")
    held_make = app.eval_async("holders.MAKE()")              # into a classmethod losing its decorator
    wait_until(lambda: app.eval("probe.held_calls()") >= 2, timeout=30, interval=0.05,
               message="the call through the bound classmethod to be held by the mediator")
    assert apply.proc.poll() is None, "the update must still wait for slow()"
    app.eval("svc.GATE.set()")
    code, result, out, err = apply.wait()
    elsewhere_done = elsewhere.done()
    app.eval("other.GATE.set()")
    return {"app": app, "before": before, "code": code, "result": result, "out": out, "err": err,
            "slow": slow.wait(), "held": held.wait(), "held_make": held_make.wait(), "elsewhere_done": elsewhere_done,
            "elsewhere": elsewhere.wait()}


@pytest.fixture
def app(updated) -> App:
    assert updated["code"] == 0, (updated["out"], updated["err"])
    return updated["app"]


def test_apply_succeeds(updated, app):
    result = updated["result"]
    assert_result_shape(result, ok=True)
    assert result["version"] == "2"
    assert updated["before"] == {"bound": "greet v1", "make": "make v1 Greeter", "price": 10,
                                 "point": "Point(x=1, y=2)", "rate": 10, "tax": 2}
    assert updated["slow"] == "slow v1", "the call in flight finishes on the old code"
    assert not updated["elsewhere_done"], "the update must not wait for another module's use of a decorator"
    assert updated["elsewhere"] == "other done"
    # the replaced functions are named, with what still differs (identity), not as stale references
    replaced = [w for w in result["warnings"] if "replaced" in w]
    assert any("Greeter.greet" in w for w in replaced), result["warnings"]
    assert not any("still runs the old code" in w or "cannot be redirected" in w for w in result["warnings"])


def test_call_held_during_the_wait_runs_the_new_code(updated, app):
    assert updated["held"] == GREET_V2
    assert updated["held_make"] == "make v2 Greeter"


def test_stored_bound_method_gaining_super(app):
    assert app.eval("holders.BOUND()") == GREET_V2
    assert app.eval("holders.IN_TUPLE[0](holders.GREETER)") == GREET_V2
    assert app.eval("svc.Greeter().greet()") == GREET_V2
    assert app.eval("holders.GREETER.greet()") == GREET_V2
    # the class holds the new function directly: no forwarder on the steady-state path
    assert app.eval("'__dynupdate_forward__' in vars(svc.Greeter)['greet'].__dict__") is False
    assert app.eval("vars(svc.Greeter)['greet'].__code__.co_freevars") == ["__class__"]


def test_wrapper_from_another_modules_decorator(app):
    calls = app.eval("deco.CALLS['logged']")
    assert app.eval("holders.PRICE(10)") == 20                 # the reference held since startup
    assert app.eval("svc.price(10)") == 20                     # the module attribute
    assert app.eval("svc.price.__wrapped__(10)") == 20         # __wrapped__
    assert app.eval("holders.PRICE_INNER(10)") == 20           # the inner function held elsewhere
    assert app.eval("svc.price is holders.PRICE") is True      # updated in place: identity kept
    assert app.eval("svc.price.__doc__") == "Price v2."        # functools.wraps metadata follows
    assert app.eval("deco.CALLS['logged']") == calls + 2, "the decorator's wrapper still runs"


def test_classmethod_losing_an_inner_decorator(app):
    calls = app.eval("deco.CALLS['logged']")
    assert app.eval("holders.MAKE()") == "make v2 Greeter"    # bound before the update
    assert app.eval("svc.Greeter.make()") == "make v2 Greeter"
    assert app.eval("svc.Greeter().make()") == "make v2 Greeter"
    assert app.eval("deco.CALLS['logged']") == calls, "the removed decorator no longer runs"


def test_cached_function_wrapper_object(updated, app):
    # functools.lru_cache makes a C object, not a function: the same object keeps serving,
    # runs the new code, and does not answer from results the old code computed
    assert updated["before"]["rate"] == 10
    assert app.eval("holders.RATE(1)") == 100
    assert app.eval("svc.rate(2)") == 200 and app.eval("svc.rate.__wrapped__(3)") == 300
    assert app.eval("svc.rate is holders.RATE") is True
    # the next version drops the cache on tax(): the old cache object held elsewhere runs the new code
    assert updated["before"]["tax"] == 2
    assert app.eval("holders.TAX(1)") == 3 and app.eval("svc.tax(1)") == 3


def test_dataclass_gaining_a_field(app):
    assert app.eval("repr(holders.POINT)") == "Point(x=1, y=2, z=0)"
    assert app.eval("repr(svc.Point(1, 2, 3))") == "Point(x=1, y=2, z=3)"
    assert app.eval("svc.Point(1, 2) == svc.Point(1, 2, 0)") is True
    assert app.eval("holders.POINT == svc.Point(1, 2, 0)") is True
    assert app.eval("holders.POINT == svc.Point(1, 2, 5)") is False
    assert app.eval("[f.name for f in __import__('dataclasses').fields(svc.Point)]") == ["x", "y", "z"]
    assert app.eval("isinstance(holders.POINT, svc.Point)") is True
    # a field's default_factory changed (it lives in the generated __init__'s closure)
    assert app.eval("type(svc.Order(1).lines).__name__") == "dict"


def test_failed_rollback_leaves_every_reference_on_the_new_code(app):
    app.eval("deco.CALLS.update(fail_revert=True)")
    code, result = app.rollback()
    assert code == 1 and "revert refused" in result["error"]["message"], result
    app.eval("deco.CALLS.update(fail_revert=False)")
    assert app.status()["version"] == "2"
    assert app.eval("holders.BOUND()") == GREET_V2 and app.eval("svc.Greeter().greet()") == GREET_V2
    assert app.eval("holders.MAKE()") == "make v2 Greeter" and app.eval("svc.Greeter.make()") == "make v2 Greeter"
    assert app.eval("holders.PRICE(10)") == 20 and app.eval("holders.RATE(1)") == 100
    assert app.eval("holders.TAX(1)") == 3
    assert app.eval("repr(holders.POINT)") == "Point(x=1, y=2, z=0)"
    assert app.eval("probe.linecache()") == ["<dynupdate refs-v2>/svc.py"]


def test_rollback_restores_the_old_code_through_the_same_references(app):
    # a bound method of the replacement, taken while v2 runs, and a call into it held
    # during the rollback's wait: both must end on the old code too
    app.eval("setattr(holders, 'BOUND_V2', holders.GREETER.greet)")
    assert app.eval("holders.BOUND_V2()") == GREET_V2
    app.eval("[svc.GATE.clear(), svc.ENTERED.clear()]")
    generation = app.status()["generation"]
    slow = app.eval_async("svc.slow()")
    wait_until(lambda: app.eval("svc.ENTERED.is_set()"), message="slow() to start")
    rollback = Command("rollback", "--pid", str(app.pid), "--json")
    wait_until(lambda: app.status()["generation"] > generation, timeout=30, interval=0.05,
               message="the rollback to start waiting for a safe point")
    held = app.eval_async("holders.BOUND_V2()")
    wait_until(lambda: app.eval("probe.held_calls()") >= 1, timeout=30, interval=0.05,
               message="the call into the replacement to be held by the mediator")
    app.eval("svc.GATE.set()")
    code, result, out, err = rollback.wait()
    assert code == 0, (out, err)
    assert slow.wait() == "slow v2"
    assert held.wait() == "greet v1"
    assert app.eval("holders.BOUND_V2()") == "greet v1"
    assert app.eval("holders.BOUND()") == "greet v1"
    assert app.eval("svc.Greeter().greet()") == "greet v1"
    assert app.eval("'__dynupdate_forward__' in holders.BOUND.__func__.__dict__") is False
    assert app.eval("holders.MAKE()") == "make v1 Greeter"
    assert app.eval("holders.PRICE(10)") == 10 and app.eval("svc.price.__wrapped__(10)") == 10
    assert app.eval("repr(holders.POINT)") == "Point(x=1, y=2)"
    assert app.eval("holders.RATE(1)") == 10
    assert app.eval("type(svc.Order(1).lines).__name__") == "list"
    assert app.eval("holders.TAX(1)") == 2 and app.eval("svc.tax(1)") == 2
    assert app.eval("[f.name for f in __import__('dataclasses').fields(svc.Point)]") == ["x", "y"]


OTHER_PYTHONS = [f"/root/.pyenv/versions/{v}/bin/python" for v in ("3.9.18", "3.13.0")]


@pytest.mark.parametrize("python", OTHER_PYTHONS, ids=lambda p: p.split("/")[-3])
def test_reference_rules_on_other_interpreters(start_target, python):
    """dataclasses and closures differ between versions (3.9 has no stdlib_module_names
    either, so the agent's refusal list comes from its stdlib folder there)."""
    if not os.path.exists(python):
        pytest.skip(f"{python} is not installed")
    app = start_app(start_target, python=python)
    code, result = app.apply(REFS_V2)
    assert code == 0, result
    assert app.eval("holders.BOUND()") == GREET_V2
    assert app.eval("holders.MAKE()") == "make v2 Greeter"
    assert app.eval("holders.PRICE(10)") == 20 and app.eval("holders.PRICE_INNER(10)") == 20
    assert app.eval("repr(holders.POINT)") == "Point(x=1, y=2, z=0)"
    assert app.eval("holders.POINT == svc.Point(1, 2, 0)") is True
    assert app.eval("holders.RATE(1)") == 100
    assert app.eval("type(svc.Order(1).lines).__name__") == "dict"
    with Client.connect(app.pid) as client, pytest.raises(errors.RemoteError) as refused:
        client.apply(raw_bundle("threading"), timeout=5)
    assert refused.value.result["error"]["type"] == "RefusedModule"
    code, result = app.rollback()
    assert code == 0, result
    assert app.eval("holders.BOUND()") == "greet v1" and app.eval("repr(holders.POINT)") == "Point(x=1, y=2)"
    assert app.eval("probe.linecache()") == []
