"""Issue 3, "Atomicity": every failure undoes every change already made (code,
classes, instance state, module state); the target keeps running its previous
version; the CLI exits 1 (2 for a bundle it rejects itself) and shows the reason
and the target-side traceback.

One shop for the module, with 1000 extra carts and state changed at run time;
each failure case must leave its observable code and state exactly as they were,
so the cases can share it. The last test proves the target still updates fine.
"""
import json

import pytest

from dynupdate import errors
from dynupdate.bundle import load_bundle
from dynupdate.client import Client
from shoputil import (V2, V3, assert_result_shape, assert_unchanged, attach_module_output, bundle,  # noqa: F401
                      snapshot, start_module_target, start_shop)
from conftest import dynupdate

pytestmark = pytest.mark.usefixtures("attach_module_output")


@pytest.fixture(scope="module")
def shop(start_module_target):
    shop = start_shop(start_module_target)
    shop.get("/spawn", n=1000, prefix="bulk")
    shop.get("/add", cart="c1", item="fig")
    shop.get("/new", cart="c3", kind="gift", items="fig,fig")
    shop.before = snapshot(shop, bulk=True)
    return shop


def check_untouched(shop):
    assert_unchanged(shop.before, snapshot(shop, bulk=True))
    status = shop.status()
    assert status["version"] == "base"
    assert [h["version"] for h in status["history"] if h.get("rolled_back_at") is None] == ["base"]
    factories = [f for f in status["factories"] if f["class"] == "shop.cart.Cart"]
    assert len(factories) == 1 and factories[0]["pending"] == 0, status["factories"]
    # the not-yet-imported module was not installed by a failed update
    assert shop.get("/has", name="stats")["module"] is False
    assert shop.get("/has", name="quantity")["Cart"] is False


FAILURES = [
    # (bundle, words the error must contain (all of them), what it exercises)
    ("bad-transfer", ["7th"], "a transfer hook raising on the 7th of ~1000 instances"),
    ("exec-raises", ["boom"], "the second module raising while it is executed"),
    ("bad-bases", ["GiftCart", "bases"], "a class whose bases changed"),
    ("bad-slots", ["Money", "__slots__"], "a class whose __slots__ layout changed"),
    ("bad-metaclass", ["Cart", "metaclass"], "a class whose metaclass changed"),
    ("requires-mismatch", ["requires", "7"], "requires = 7 on a process at base"),
    ("module-hook-raises", ["module hook failed"], "the module hook raising after the swap"),
]


@pytest.mark.parametrize("name,words,what", FAILURES, ids=[f[0] for f in FAILURES])
def test_failure_leaves_code_and_state_unchanged(shop, name, words, what):
    code, data = shop.apply(bundle(name))
    assert code == 1, f"{what}: expected exit 1, got {code}: {data}"
    assert_result_shape(data, ok=False)
    text = json.dumps(data["error"])
    assert all(w.lower() in text.lower() for w in words), f"{what}: reason not reported: {data['error']}"
    if name in ("bad-transfer", "exec-raises", "module-hook-raises"):
        # user code raised in the target: its traceback is shown (rejections need none)
        assert data["error"]["traceback"], "the target-side traceback must be shown"
        assert "RuntimeError" in data["error"]["traceback"] + data["error"]["message"], data["error"]
    check_untouched(shop)


def test_failure_human_output_shows_reason_and_traceback(shop):
    proc = dynupdate("apply", "--pid", str(shop.pid), bundle("bad-transfer"))
    assert proc.returncode == 1, proc
    text = proc.stdout + proc.stderr
    assert "7th" in text and "Traceback" in text, text
    check_untouched(shop)


def test_requires_not_met_v3_on_base(shop):
    code, data = shop.apply(V3)
    assert code == 1, data
    assert "requires" in json.dumps(data["error"]).lower() or "2" in data["error"]["message"], data
    check_untouched(shop)


@pytest.mark.parametrize("name", ["syntax-error", "missing-file", "bad-toml", "no-manifest"])
def test_invalid_bundle_is_rejected_before_contacting_the_target(shop, name):
    proc = dynupdate("apply", "--pid", str(shop.pid), bundle(name))
    assert proc.returncode == 2, proc
    assert bundle(name) in proc.stderr or "patch.toml" in proc.stderr, proc.stderr
    if name == "syntax-error":
        assert "cart.py:30" in proc.stderr, proc.stderr      # the file and the line
    check_untouched(shop)


def test_digest_mismatch_is_refused(shop):
    loaded = load_bundle(V2)
    loaded["modules"][0]["source"] += "\nPRICES['apple'] = 1\n"   # tampered after digesting
    with Client.connect(shop.pid) as client:
        with pytest.raises(errors.RemoteError) as info:
            client.apply(loaded)
    assert "digest" in str(info.value).lower() or "sha256" in str(info.value).lower(), str(info.value)
    check_untouched(shop)


def test_target_still_updates_after_every_failure(shop):
    code, data = shop.apply(V2)
    assert code == 0, data
    assert shop.get("/price", item="apple") == {"price": 200}
    state = shop.get("/state", bulk=1, raw=1)
    assert state["carts"]["bulk-6"] == {"cid": "bulk-6", "lines": {"apple": 1}}
    assert state["carts"]["c1"] == {"cid": "c1", "lines": {"apple": 1, "pear": 1, "fig": 1}}
    assert state["module"]["TAX_RATE"] == 0.25
    assert len(state["module"]["TRANSFER_LOG"]) == 1000 + 5
