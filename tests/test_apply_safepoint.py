"""Issue 3, "Safe point and the mediator": an update waits until no old-generation
thread runs the code it replaces; calls that begin during the wait are held at
their entry and continue on the new code; `--timeout` abandons the update (exit 4)
and leaves everything as before; one update at a time ("busy"); a client that
disconnects abandons its update.

The call in flight is GET /slow?gate=NAME, which blocks inside
shop.cart.slow_quote until the test releases it with GET /release?gate=NAME
(so nothing here depends on how fast the machine is).
"""
import json

from conftest import wait_until
from shoputil import V2, Command, assert_result_shape, assert_unchanged, snapshot, start_shop, \
    wait_in_activity, wait_update_waiting


def slow_call(shop, gate):
    """A call in flight inside shop.cart, until release(shop, gate)."""
    call = shop.get_async("/slow", item="apple", seconds=60, gate=gate)
    wait_in_activity(shop)
    return call


def release(shop, gate):
    shop.get("/release", gate=gate)


def test_call_in_flight_finishes_on_old_code_then_update_completes(start_target):
    shop = start_shop(start_target)
    generation = shop.status()["generation"]
    slow = slow_call(shop, "a")
    apply = Command("apply", "--pid", str(shop.pid), V2, "--json")
    wait_update_waiting(shop, generation)
    # a call that begins during the wait is held at its entry
    held = shop.get_async("/price", item="apple")
    assert apply.proc.poll() is None, "the update must wait for the call in flight"
    assert shop.version() == "base"
    release(shop, "a")
    code, result, out, err = apply.wait()
    assert code == 0, (out, err)
    assert slow.wait() == {"quote": "v1:100"}, "the call in flight must finish on the old code"
    assert apply.finished >= slow.finished, "the update must complete after the call in flight returned"
    assert held.wait() == {"price": 200}, "a call held during the wait continues on the new code"
    assert held.finished >= slow.finished, "the held call must not run before the swap"
    assert_result_shape(result, ok=True)
    assert result["version"] == "2"
    # steady state afterwards: new code everywhere, nothing is held any more
    assert shop.get("/slow", item="apple", seconds=0) == {"quote": "v2:200"}
    assert shop.get("/modattr", item="pear") == {"price": 300}


def test_unrelated_requests_are_not_held(start_target):
    shop = start_shop(start_target)
    generation = shop.status()["generation"]
    slow = slow_call(shop, "b")
    apply = Command("apply", "--pid", str(shop.pid), V2, "--json")
    wait_update_waiting(shop, generation)
    # shop.tax is not in the bundle: it answers while the update waits
    assert shop.get("/vat", cents=1000) == {"vat": 200}
    assert shop.get("/health") == {"ok": True}
    assert apply.proc.poll() is None and not slow.done()
    release(shop, "b")
    code, _, out, err = apply.wait()
    assert code == 0, (out, err)
    assert slow.wait() == {"quote": "v1:100"}


def test_timeout_leaves_everything_unchanged(start_target):
    shop = start_shop(start_target)
    shop.get("/add", cart="c1", item="fig")
    before = snapshot(shop)
    generation = shop.status()["generation"]
    slow = slow_call(shop, "c")
    apply = Command("apply", "--pid", str(shop.pid), V2, "--timeout", "1", "--json")
    wait_update_waiting(shop, generation)
    held = shop.get_async("/price", item="apple")
    code, result, out, err = apply.wait()
    assert code == 4, (out, err)
    assert_result_shape(result, ok=False)
    assert "timeout" in (result["error"]["type"] + result["error"]["message"]).lower(), result["error"]
    assert "slow_quote" in result["error"]["message"], "the error names what it waited on"
    assert not slow.done()
    # a call held during the wait was released on the old code
    assert held.wait() == {"price": 100}
    release(shop, "c")
    assert slow.wait() == {"quote": "v1:100"}
    assert shop.version() == "base"
    assert_unchanged(before, snapshot(shop))
    assert shop.get("/raw", cart="c1")["dict"] == {"cid": "c1", "items": ["apple", "pear", "fig"]}
    assert [h["version"] for h in shop.status()["history"] if h.get("rolled_back_at") is None] == ["base"]
    assert shop.get("/has", name="stats")["module"] is False
    # and the target can still be updated once it is quiet
    code, result = shop.apply(V2)
    assert code == 0, result
    assert shop.get("/price", item="apple") == {"price": 200}


def test_timeout_human_output_says_no_safe_point(start_target):
    shop = start_shop(start_target)
    slow = slow_call(shop, "d")
    apply = Command("apply", "--pid", str(shop.pid), V2, "--timeout", "0.5")
    code, _, out, err = apply.wait()
    assert code == 4, (out, err)
    assert "safe point" in (out + err).lower()
    release(shop, "d")
    slow.wait()
    assert shop.get("/price", item="apple") == {"price": 100}


def test_second_update_while_one_waits_is_busy(start_target):
    shop = start_shop(start_target)
    generation = shop.status()["generation"]
    slow = slow_call(shop, "e")
    first = Command("apply", "--pid", str(shop.pid), V2, "--json")
    wait_update_waiting(shop, generation)
    code, data = shop.apply(V2)
    if code != 1:
        release(shop, "e")
        first_code, _, out, err = first.wait()
        raise AssertionError(f"second apply: exit {code} {data}\nfirst apply: exit {first_code}\n{out}\n{err}")
    assert_result_shape(data, ok=False)
    assert "busy" in json.dumps(data["error"]).lower(), data["error"]
    code, data = shop.rollback()
    assert code == 1 and "busy" in json.dumps(data["error"]).lower(), data
    code, data = shop.apply(V2, "--dry-run")
    assert code == 1 and "busy" in json.dumps(data["error"]).lower(), data
    # human output says so too
    proc = Command("apply", "--pid", str(shop.pid), V2)
    code, _, out, err = proc.wait()
    text = (out + err).lower()
    assert code == 1 and ("busy" in text or "another update" in text), (out, err)
    # the first one is unaffected
    release(shop, "e")
    code, result, out, err = first.wait()
    assert code == 0, (out, err)
    assert result["version"] == "2"
    slow.wait()
    assert [h["version"] for h in shop.status()["history"]
            if h.get("rolled_back_at") is None] == ["base", "2"]


def test_client_disconnect_abandons_the_update(start_target):
    shop = start_shop(start_target)
    before = snapshot(shop)
    generation = shop.status()["generation"]
    slow = slow_call(shop, "f")
    apply = Command("apply", "--pid", str(shop.pid), V2, "--json")
    wait_update_waiting(shop, generation)
    apply.kill()

    # the agent notices the client is gone and gives up: a dry run is no longer busy
    def settled():
        code, data = shop.apply(V2, "--dry-run")
        return code == 0
    wait_until(settled, timeout=20, interval=0.1, message="the abandoned update to end")
    release(shop, "f")
    assert slow.wait() == {"quote": "v1:100"}
    assert shop.version() == "base"
    assert_unchanged(before, snapshot(shop))
