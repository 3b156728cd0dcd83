"""Issue 3, semantics 4: lazy transfer (`--lazy`, `lazy = true`, `__dynupdate_lazy__`).

Instances are only marked by the update; each one's transfer runs on its first
attribute access, exactly once even under concurrent access. `status --json`
factories[].pending counts the marked instances still waiting.
"""
import threading

from shoputil import V2, bundle, start_shop

N = 200


def lazy_shop(start_target, bundle_dir, *extra):
    shop = start_shop(start_target)
    shop.get("/spawn", n=N, prefix="bulk")
    instances = shop.factory()["instances"]
    assert instances == N + 4
    code, result = shop.apply(bundle_dir, *extra)
    assert code == 0, result
    return shop, instances, result


def expected_lines(i):
    return {"apple": i % 3 + 1}


def test_lazy_flag_defers_transfer_until_first_access(start_target):
    shop, instances, result = lazy_shop(start_target, V2, "--lazy")
    assert result["version"] == "2"
    # nothing transferred yet: every live cart is pending
    assert shop.factory()["pending"] == instances
    raw = shop.get("/raw", cart="bulk-5")["dict"]            # no attribute access through the class
    assert raw == {"cid": "bulk-5", "items": ["apple"] * 3}, "a pending instance must keep its old state"
    # touch three carts: exactly those are transferred
    for cid in ("bulk-0", "bulk-1", "c2"):
        shop.get("/touch", cart=cid)
    assert shop.factory()["pending"] == instances - 3
    assert shop.get("/raw", cart="bulk-1")["dict"] == {"cid": "bulk-1", "lines": expected_lines(1)}
    assert shop.get("/raw", cart="c2")["dict"] == {"cid": "c2", "lines": {"fig": 1, "apple": 2}}
    assert shop.get("/raw", cart="bulk-5")["dict"]["items"] == ["apple"] * 3
    # new code on a pending instance: the transfer runs first, then the v2 method
    assert shop.get("/total", cart="bulk-2")["total"] == 3 * 200
    assert shop.get("/total", cart="g1")["total"] == 300 + 75
    assert shop.factory()["pending"] == instances - 5
    # touching everything finishes the job, with the right values
    state = shop.get("/state", bulk=1)
    for i in range(N):
        assert state["carts"][f"bulk-{i}"] == {"cid": f"bulk-{i}", "lines": expected_lines(i)}
    assert state["carts"]["g1"] == {"cid": "g1", "lines": {"pear": 1}, "message": "happy birthday"}
    assert shop.factory()["pending"] == 0
    log = state["module"]["TRANSFER_LOG"]
    assert len(log) == len(set(log)) == instances, "each instance transferred exactly once"


def test_lazy_transfer_runs_once_under_concurrent_access(start_target):
    shop, instances, _ = lazy_shop(start_target, V2, "--lazy")
    targets = ["bulk-10", "bulk-11", "c1"]
    results, errors = [], []
    barrier = threading.Barrier(24)

    def hit(cid):
        try:
            barrier.wait(10)
            results.append((cid, shop.get("/total", cart=cid)["total"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hit, args=(targets[i % 3],)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    expected = {"bulk-10": 2 * 200, "bulk-11": 3 * 200, "c1": 200 + 300}
    assert all(total == expected[cid] for cid, total in results), results
    log = shop.get("/state", raw=1)["module"]["TRANSFER_LOG"]
    for cid in targets:
        assert log.count(cid) == 1, f"{cid} transferred {log.count(cid)} times: {log}"
    assert shop.get("/raw", cart="bulk-11")["dict"] == {"cid": "bulk-11", "lines": {"apple": 3}}
    assert shop.factory()["pending"] == instances - 3


def test_lazy_from_manifest(start_target):
    shop, instances, result = lazy_shop(start_target, bundle("lazy-manifest"))
    assert shop.factory()["pending"] == instances
    assert shop.get("/total", cart="bulk-4")["total"] == 2 * 200
    assert shop.factory()["pending"] == instances - 1


def test_lazy_from_class_attribute(start_target):
    shop, instances, result = lazy_shop(start_target, bundle("lazy-attr"))
    assert shop.factory()["pending"] == instances
    assert shop.get("/describe", cart="bulk-3")["describe"] == "bulk-3: 1 unit(s) in 1 line(s)"
    assert shop.factory()["pending"] == instances - 1


def test_eager_is_the_default(start_target):
    shop, instances, result = lazy_shop(start_target, V2)
    assert result["updated"]["instances"] == instances
    assert shop.factory()["pending"] == 0
    assert shop.get("/raw", cart="bulk-7")["dict"] == {"cid": "bulk-7", "lines": expected_lines(7)}


def test_next_update_while_instances_still_pending(start_target):
    """Instances still pending from a lazy v2 must not be lost when v3 lands on top:
    their v2 transfer still runs (exactly once) before v3 code uses them."""
    shop, instances, _ = lazy_shop(start_target, V2, "--lazy")
    shop.get("/touch", cart="bulk-0")
    code, result = shop.apply(str(V2).replace("shop-v2", "shop-v3"))
    assert code == 0, result
    assert shop.get("/total", cart="bulk-2")["total"] == 3 * 300          # v3 prices on v2 layout
    assert shop.get("/raw", cart="bulk-2")["dict"] == {"cid": "bulk-2", "lines": {"apple": 3}}
    assert shop.get("/total", cart="c2")["total"] == 900 + 2 * 300
    state = shop.get("/state", bulk=1)
    assert all("lines" in c and "items" not in c for c in state["carts"].values())
    log = state["module"]["TRANSFER_LOG"]
    assert len(log) == len(set(log)) == instances
    assert shop.factory()["pending"] == 0
