"""Issue 8, item 2: the instance set of an update is decided at the safe point, completely.

Against a real target (tests/targets/ins_app) driven through the real CLI:
- a factory list never loses an instance while another thread's cyclic garbage
  makes the GC sweep it (200,001 kept instances, counted by `status`);
- instances of a plain class created while the update waits for its safe point
  are transferred, and an instance whose `__init__` the mediator held is built
  by the new code instead (the transfer hook never sees it);
- a patch that makes a plain class `@updatable` migrates every existing
  instance, eagerly or lazily, and rollback reverts them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import TARGETS, wait_until
from shoputil import Command, Shop, wait_update_waiting

SERVER = TARGETS / "ins_app" / "server.py"
V1 = (TARGETS / "ins_app" / "insmod.py").read_text()

PLAIN_V2 = '''
class Plain:
    def __init__(self, n):
        self.count = n

    def describe(self):
        return f"plain v2 {self.count}"

    def __dynupdate_transfer__(self, old):
        self.__dict__.pop("n")
        self.count = old["n"]
        LOG.append(["plain", old["n"]])
'''

BECOMES_V2 = '''
@dynupdate_agent.updatable
class Becomes:
    def __init__(self, n):
        self.count = n

    def describe(self):
        return f"becomes v2 {self.count}"

    def __dynupdate_transfer__(self, old):
        self.__dict__.pop("n")
        self.count = old["n"]
        LOG.append(["becomes", old["n"]])

    def __dynupdate_revert__(self, new):
        self.__dict__.pop("count")
        self.n = new["count"]
        LOG.append(["revert", new["count"]])
'''


def _replace_class(source: str, name: str, new: str) -> str:
    start = source.index(f"class {name}:")
    end = source.index("\n\n\n", start)
    return source[:start] + new.strip() + source[end:]


def write_bundle(folder: Path, name: str, classes: dict, extra: str = "") -> str:
    source = V1
    for cls, new in classes.items():
        source = _replace_class(source, cls, new)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "insmod.py").write_text(source)
    (folder / "patch.toml").write_text(f'name = "{name}"\nversion = "2"\n{extra}\n[modules]\n"insmod" = "insmod.py"\n')
    return str(folder)


def start(start_target) -> Shop:
    return Shop(start_target([sys.executable, "-m", "dynupdate", "run", str(SERVER)]))


def factory_rows(shop: Shop) -> dict:
    return {row["class"]: row for row in shop.status()["factories"]}


@pytest.mark.timeout(180)
def test_factory_list_loses_nothing_under_concurrent_creation_and_gc(start_target):
    shop = start(start_target)
    assert shop.get("/churn", n=200_001, timeout=120) == {"kept": 200_001}
    # every kept instance is alive; the garbage was collected: the list must count exactly the kept ones
    assert factory_rows(shop)["insmod.Tracked"]["instances"] == 200_001


def test_plain_instances_created_during_the_wait_are_transferred(start_target, tmp_path):
    shop = start(start_target)
    shop.get("/spawn", kind="plain", n=10)
    bundle = write_bundle(tmp_path / "v2", "plain-v2", {"Plain": PLAIN_V2})
    holder = shop.get_async("/hold", make=5)
    wait_until(lambda: shop.get("/held")["held"], message="/hold parked in the old code")
    generation = shop.status()["generation"]
    apply = Command("apply", "--pid", str(shop.pid), bundle, "--timeout", "60", "--json")
    try:
        wait_update_waiting(shop, generation)
        # a constructor called now is held by the mediator: the object is allocated, not yet built
        spawned = shop.get_async("/spawn", kind="plain", n=1, base=500)
        wait_until(lambda: shop.status()["generation"] > generation and not spawned.done(), timeout=5,
                   message="the spawn request to be held")
        shop.get("/release")  # /hold creates 5 instances on the old code, then returns: safe point
        code, result, out, err = apply.wait(60)
    finally:
        if apply.proc.poll() is None:
            apply.kill()
    assert code == 0, (result, err)
    assert holder.wait() == {"made": 5}
    spawned.wait()
    state = shop.get("/state")
    kept = [attrs for name, attrs in state["kept"]]
    assert len(kept) == 16
    assert all(set(attrs) == {"count"} for attrs in kept), f"every instance on the v2 layout: {kept}"
    transferred = sorted(n for kind, n in state["log"])
    assert transferred == list(range(10)) + [1000, 1001, 1002, 1003, 1004], \
        "the 10 old instances and the 5 created by old code during the wait were transferred, the held one not"
    assert result["updated"]["instances"] == 15
    assert shop.get("/touch", i=15) == {"describe": "plain v2 500"}
    assert shop.get("/own_new") == {"Plain": False, "Becomes": False, "Tracked": True}, "the watch is gone"


def test_failed_update_leaves_no_watch_behind(start_target, tmp_path):
    shop = start(start_target)
    shop.get("/spawn", kind="plain", n=3)
    bundle = write_bundle(tmp_path / "v2", "plain-v2", {"Plain": PLAIN_V2})
    holder = shop.get_async("/hold", make=1)
    wait_until(lambda: shop.get("/held")["held"], message="/hold parked in the old code")
    code, result = shop.apply(bundle, "--timeout", "0.5")
    shop.get("/release")
    assert holder.wait() == {"made": 1}
    assert code != 0 and result["error"]["type"] == "SafePointTimeout", result
    assert shop.get("/own_new") == {"Plain": False, "Becomes": False, "Tracked": True}
    assert all(set(attrs) == {"n"} for _, attrs in shop.get("/state")["kept"])
    assert shop.get("/touch", i=3) == {"describe": "plain 1000"}


@pytest.fixture
def becomes(start_target, tmp_path):
    shop = start(start_target)
    shop.get("/spawn", kind="becomes", n=20)
    assert "insmod.Becomes" not in factory_rows(shop)
    return shop, write_bundle(tmp_path / "v2", "becomes-v2", {"Becomes": BECOMES_V2})


def test_class_made_updatable_gets_every_instance_migrated_eagerly(becomes):
    shop, bundle = becomes
    code, result = shop.apply(bundle)
    assert code == 0, result
    assert result["updated"]["instances"] == 20
    assert all(set(attrs) == {"count"} for _, attrs in shop.get("/state")["kept"])
    assert shop.get("/touch", i=7) == {"describe": "becomes v2 7"}
    assert factory_rows(shop)["insmod.Becomes"]["instances"] == 20, "existing instances are in the new factory"
    shop.get("/spawn", kind="becomes", n=1, base=100)
    assert factory_rows(shop)["insmod.Becomes"]["instances"] == 21, "and new ones are tracked"
    code, result = shop.rollback()
    assert code == 0, result
    assert result["updated"]["instances"] == 21
    state = shop.get("/state")
    assert all(set(attrs) == {"n"} for _, attrs in state["kept"]), state["kept"]
    assert shop.get("/touch", i=20) == {"describe": "becomes 100"}


def test_class_made_updatable_lazily_then_rolled_back(becomes):
    shop, bundle = becomes
    code, result = shop.apply(bundle, "--lazy")
    assert code == 0, result
    assert result["updated"]["instances"] == 20
    assert factory_rows(shop)["insmod.Becomes"]["pending"] == 20
    assert shop.get("/own_new")["Becomes"] is True, "lazy wrappers over the new factory's __new__"
    assert shop.get("/touch", i=3) == {"describe": "becomes v2 3"}
    assert shop.get("/touch", i=4) == {"describe": "becomes v2 4"}
    assert factory_rows(shop)["insmod.Becomes"]["pending"] == 18
    code, result = shop.rollback()
    assert code == 0, result
    assert result["updated"]["instances"] == 2, "the two transferred instances are reverted"
    state = shop.get("/state")
    assert sorted(n for kind, n in state["log"] if kind == "revert") == [3, 4]
    assert all(set(attrs) == {"n"} for _, attrs in state["kept"]), state["kept"]
    assert [shop.get("/touch", i=i)["describe"] for i in (3, 4, 5)] == ["becomes 3", "becomes 4", "becomes 5"]
    assert shop.get("/own_new")["Becomes"] is True, "still a factory after the rollback (its list stays right)"


def test_lazy_update_of_a_plain_class_leaves_it_constructible(start_target, tmp_path):
    """Lazy transfer wraps `__new__` while instances are pending; once none is left (and after a
    rollback) the class must construct with arguments as before (CPython cannot restore the
    allocator by deleting `__new__`: agent/typeslots.py)."""
    shop = start(start_target)
    shop.get("/spawn", kind="plain", n=2)
    code, result = shop.apply(write_bundle(tmp_path / "v2", "plain-v2", {"Plain": PLAIN_V2}), "--lazy")
    assert code == 0, result
    assert shop.get("/touch", i=0) == {"describe": "plain v2 0"}
    assert shop.get("/touch", i=1) == {"describe": "plain v2 1"}
    wait_until(lambda: not shop.get("/own_new")["Plain"], message="the lazy wrappers to go once nothing is pending")
    shop.get("/spawn", kind="plain", n=1, base=7)
    assert shop.get("/touch", i=2) == {"describe": "plain v2 7"}
    code, result = shop.rollback()
    assert code == 0, result
    shop.get("/spawn", kind="plain", n=1, base=8)
    assert shop.get("/own_new") == {"Plain": False, "Becomes": False, "Tracked": True}


HANGING_V2 = PLAIN_V2.replace('''        LOG.append(["plain", old["n"]])''', '''        LOG.append(["plain", old["n"]])
        if old["n"] == 2:
            GATE.wait(30)  # hangs past --hook-timeout (the test sets GATE afterwards)''')


def test_transfer_abandoned_by_the_watchdog_leaves_collection_on(start_target, tmp_path):
    """The eager loop pauses automatic collection; a hook that hangs makes the watchdog abandon
    the loop, whose own `finally` then never runs: the end of the request turns it back on."""
    shop = start(start_target)
    shop.get("/spawn", kind="plain", n=4)
    assert shop.get("/gc") == {"enabled": True}
    code, result = shop.apply(write_bundle(tmp_path / "v2", "hang", {"Plain": HANGING_V2}), "--hook-timeout", "1")
    assert code != 0 and result["error"]["type"] == "HookTimeout", result
    assert shop.get("/gc") == {"enabled": True}, "automatic collection is on again after the abandoned transfer"
    shop.get("/release")  # the hung hook returns; its late work is undone by the engine
    wait_until(lambda: all(set(attrs) == {"n"} for _, attrs in shop.get("/state")["kept"]),
               message="every instance back on its v1 state")
    assert shop.get("/gc") == {"enabled": True}
    assert shop.get("/own_new") == {"Plain": False, "Becomes": False, "Tracked": True}
