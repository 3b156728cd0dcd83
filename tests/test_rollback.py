"""Issue 3, "Versions and rollback": one step and `--to VERSION`, the previous code
restored in place (same identities), `__dynupdate_revert__` hooks bringing instance
and module state back to the old layout, the same atomicity rules, and a clear
error (exit 1) when there is nothing to roll back.
"""
import json

from shoputil import V2, V3, Command, assert_result_shape, bundle, start_shop, wait_in_activity, \
    wait_update_waiting


def history(shop):
    return [h["version"] for h in shop.status()["history"] if h.get("rolled_back_at") is None]


def test_rollback_with_nothing_to_roll_back(start_target):
    shop = start_shop(start_target)
    code, data = shop.rollback()
    assert code == 1, data
    assert_result_shape(data, ok=False)
    assert data["error"]["message"]
    assert shop.version() == "base"
    code, data = shop.rollback("--to", "base")  # already there: done, so that tree rollbacks converge
    assert code == 0 and data["ok"] and data["version"] == "base", data
    assert shop.get("/price", item="apple") == {"price": 100}


def test_rollback_one_step_then_to_base(start_target):
    shop = start_shop(start_target)
    base_state = shop.get("/state", raw=1)
    assert shop.apply(V2)[0] == 0
    # state changes made while v2 runs must survive the way back
    shop.get("/add", cart="c1", item="apple")                 # c1: apple x2, pear
    shop.get("/new", cart="c9", items="fig,fig,pear")         # created under v2: lines layout
    code, result = shop.apply(V3)
    assert code == 0, result
    assert result["previous_version"] == "2" and result["version"] == "3"
    assert shop.get("/price", item="apple") == {"price": 300}
    assert shop.get("/has", name="legacy_price")["module"] is False       # removed functions are deleted
    assert shop.get("/has", name="legacy_label")["Cart"] is False         # removed methods too
    assert shop.get("/has", name="clear")["Cart"] is True
    assert history(shop) == ["base", "2", "3"]

    # one step: back to 2
    code, result = shop.rollback()
    assert code == 0, result
    assert_result_shape(result, ok=True)
    assert (result["previous_version"], result["version"]) == ("3", "2")
    assert shop.status()["version"] == "2" and shop.get("/version") == {"version": "2"}
    assert history(shop) == ["base", "2"]
    assert shop.get("/price", item="apple") == {"price": 200}
    assert shop.get("/callback", item="apple") == {"price": 200}
    assert shop.get("/legacy", cart="c1") == {"price": 200, "label": "legacy"}   # restored
    assert shop.get("/has", name="clear")["Cart"] is False
    assert shop.get("/classmethod", cart="g1")["GiftCart"] == "GiftCart (v2)"
    assert shop.get("/raw", cart="c1")["dict"] == {"cid": "c1", "lines": {"apple": 2, "pear": 1}}

    # all the way back
    code, result = shop.rollback("--to", "base")
    assert code == 0, result
    assert (result["previous_version"], result["version"]) == ("2", "base")
    assert history(shop) == ["base"]
    assert shop.version() == "base"
    for path in ("/price", "/modattr", "/callback"):
        assert shop.get(path, item="apple") == {"price": 100}, path
    assert shop.get("/decorated", amount=1000)["discount"] == 900
    assert shop.get("/static", cents=1999) == {"Cart": "19.99", "instance": "19.99"}
    assert shop.get("/classmethod", cart="v1")["VipCart"] == "VipCart (base)"
    assert shop.get("/isinstance", cart="g1")["same_class"] is True
    # the revert hook restored the base layout, with the changes made meanwhile
    state = shop.get("/state", raw=1)
    carts = state["carts"]
    assert sorted(carts["c1"]["items"]) == ["apple", "apple", "pear"] and "lines" not in carts["c1"]
    assert sorted(carts["c9"]["items"]) == ["fig", "fig", "pear"] and "lines" not in carts["c9"]
    for cid in ("c2", "g1", "v1"):
        assert sorted(carts[cid]["items"]) == sorted(base_state["carts"][cid]["items"]), cid
    assert carts["g1"]["message"] == "happy birthday"
    assert shop.get("/bound") == {"describe": "c1 holds 3 item(s)"}
    assert shop.get("/total", cart="c9")["total"] == 300 + 300 + 150
    # module hook reverted, names new in v2 gone again
    assert state["module"]["TAX_RATE"] == 0.20
    assert "tax_raised_from" not in state["module"]["STATS"]
    assert shop.get("/has", name="stats")["module"] is False
    assert shop.get("/has", name="quantity")["Cart"] is False
    assert shop.get("/has", name="summary")["GiftCart"] is False
    # and the base code works on the restored state
    assert shop.get("/add", cart="c9", item="apple") == {"count": 4}
    # nothing left to roll back
    assert shop.rollback()[0] == 1
    # and it can go forward again
    assert shop.apply(V2)[0] == 0
    assert shop.get("/raw", cart="c9")["dict"] == {"cid": "c9", "lines": {"fig": 2, "pear": 1, "apple": 1}}


def test_rollback_to_skips_several_versions_at_once(start_target):
    shop = start_shop(start_target)
    assert shop.apply(V2)[0] == 0
    assert shop.apply(V3)[0] == 0
    code, result = shop.rollback("--to", "base")
    assert code == 0, result
    assert result["version"] == "base"
    assert history(shop) == ["base"]
    assert shop.get("/raw", cart="c2")["dict"] == {"cid": "c2", "items": ["fig", "apple", "apple"]}
    assert shop.get("/price", item="fig") == {"price": 300}


def test_rollback_to_unknown_version_is_refused(start_target):
    shop = start_shop(start_target)
    assert shop.apply(V2)[0] == 0
    code, data = shop.rollback("--to", "9")
    assert code == 1, data
    assert "9" in data["error"]["message"], data
    assert shop.version() == "2"
    assert shop.get("/price", item="apple") == {"price": 200}


def test_rollback_after_lazy_apply_with_instances_still_pending(start_target):
    shop = start_shop(start_target)
    shop.get("/spawn", n=50, prefix="bulk")
    assert shop.apply(V2, "--lazy")[0] == 0
    shop.get("/touch", cart="bulk-1")              # transferred
    shop.get("/add", cart="c1", item="fig")        # transferred, then changed under v2
    assert shop.factory()["pending"] > 0
    code, result = shop.rollback()
    assert code == 0, result
    assert shop.factory()["pending"] == 0
    state = shop.get("/state", bulk=1, raw=1)
    for i in range(50):   # touched or not, every cart is back on the base layout with its items
        assert state["carts"][f"bulk-{i}"] == {"cid": f"bulk-{i}", "items": ["apple"] * (i % 3 + 1)}, i
    assert sorted(state["carts"]["c1"]["items"]) == ["apple", "fig", "pear"]
    assert state["carts"]["c2"] == {"cid": "c2", "items": ["fig", "apple", "apple"]}
    assert shop.get("/total", cart="bulk-2")["total"] == 300


def test_rollback_waits_for_a_safe_point_too(start_target):
    shop = start_shop(start_target)
    assert shop.apply(V2)[0] == 0
    generation = shop.status()["generation"]
    slow = shop.get_async("/slow", item="apple", seconds=60, gate="r1")
    wait_in_activity(shop)
    cmd = Command("rollback", "--pid", str(shop.pid), "--json")
    wait_update_waiting(shop, generation)
    held = shop.get_async("/price", item="apple")
    assert cmd.proc.poll() is None
    shop.get("/release", gate="r1")
    code, result, out, err = cmd.wait()
    assert code == 0, (out, err)
    assert slow.wait() == {"quote": "v2:200"}          # finished on the code it started on
    assert cmd.finished >= slow.finished
    assert held.wait() == {"price": 100}               # held, then ran the restored code
    assert shop.get("/price", item="apple") == {"price": 100}


def test_rollback_timeout_leaves_the_version_in_place(start_target):
    shop = start_shop(start_target)
    assert shop.apply(V2)[0] == 0
    slow = shop.get_async("/slow", item="apple", seconds=60, gate="r2")
    wait_in_activity(shop)
    code, data = shop.rollback("--timeout", "0.5")
    assert code == 4, data
    assert not slow.done()
    shop.get("/release", gate="r2")
    assert slow.wait() == {"quote": "v2:200"}
    assert shop.version() == "2"
    assert shop.get("/raw", cart="c2")["dict"] == {"cid": "c2", "lines": {"fig": 1, "apple": 2}}
    assert shop.get("/price", item="apple") == {"price": 200}
    assert shop.get("/state", raw=1)["module"]["TAX_RATE"] == 0.25


def test_failing_revert_hook_leaves_the_update_in_place(start_target):
    shop = start_shop(start_target)
    code, result = shop.apply(bundle("revert-raises"))
    assert code == 0, result
    shop.get("/add", cart="c1", item="fig")
    before = shop.get("/state", raw=1)
    code, data = shop.rollback()
    assert code == 1, data
    assert_result_shape(data, ok=False)
    assert "revert hook failed on c2" in json.dumps(data["error"]), data["error"]
    assert shop.version() == "2-revert-raises"
    after = shop.get("/state", raw=1)
    for d in (before, after):
        d["module"]["STATS"].pop("decorated_calls", None)
    assert after == before, "carts reverted before the failing one must be restored"
    assert shop.get("/price", item="apple") == {"price": 200}
    assert shop.get("/has", name="stats")["module"] is True
