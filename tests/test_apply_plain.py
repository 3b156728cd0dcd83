"""Issue 3, semantics 4: a program that never imported dynupdate_agent. Its classes
are no factories, so the engine finds their instances by scanning the heap; with
a plain `python` start, `apply` first injects the agent (and says so)."""
from conftest import dynupdate
from shoputil import PLAIN_SERVER, bundle, start_shop

PLAIN = bundle("plain-v2")


def check_plain_update(shop):
    assert shop.get("/stock", sku="nut") == {"describe": "nut: 25"}
    code, result = shop.apply(PLAIN)
    assert code == 0, result
    assert result["version"] == "2"
    assert result["updated"]["instances"] == 3
    state = shop.get("/state")
    assert state["items"] == {"bolt": {"sku": "bolt", "quantity": 10}, "nut": {"sku": "nut", "quantity": 25},
                              "gear": {"sku": "gear", "quantity": 3}}
    assert state["greeting"] == "inventory v2"
    assert shop.get("/stock", sku="nut") == {"describe": "nut x25 (v2)"}
    code, result = shop.rollback()
    assert code == 0, result
    assert shop.get("/state")["items"]["gear"] == {"sku": "gear", "qty": 3}
    assert shop.get("/stock", sku="gear") == {"describe": "gear: 3"}


def test_heap_scan_with_agent_from_run(start_target):
    shop = start_shop(start_target, server=PLAIN_SERVER)
    check_plain_update(shop)


def test_apply_injects_the_agent_into_a_plain_process(start_target):
    shop = start_shop(start_target, server=PLAIN_SERVER, with_agent=False)
    proc = dynupdate("apply", "--pid", str(shop.pid), PLAIN)
    assert proc.returncode == 0, proc
    assert "inject" in (proc.stdout + proc.stderr).lower(), "apply says it injected the agent"
    assert shop.get("/stock", sku="nut") == {"describe": "nut x25 (v2)"}
    assert shop.get("/state")["items"]["bolt"] == {"sku": "bolt", "quantity": 10}
