"""Issue 3, CLI: `apply --dry-run`, `check`, the --json shape, the human summary,
status after updates, and `dynupdate demo`."""
import glob
import json
import os

import pytest

from conftest import PATCHES, dynupdate
from shoputil import (V2, assert_result_shape, assert_unchanged, attach_module_output, bundle,  # noqa: F401
                      snapshot, start_module_target, start_shop)

pytestmark = pytest.mark.usefixtures("attach_module_output")


@pytest.fixture(scope="module")
def shop(start_module_target):
    shop = start_shop(start_module_target)
    shop.get("/spawn", n=100, prefix="bulk")
    return shop


def test_dry_run_reports_a_plan_and_changes_nothing(shop):
    before = snapshot(shop, bulk=True)
    code, data = shop.apply(V2, "--dry-run")
    assert code == 0, data
    assert_result_shape(data, ok=True)
    assert data.get("dry_run") is True
    assert data.get("planned_version") == "2"
    assert data["version"] == "base" and data["previous_version"] == "base"
    assert data.get("plan"), "the plan says what would change"
    assert "shop.cart" in data["updated"]["modules"]
    assert data["updated"]["instances"] == 104, "counts the instances that would be transferred"
    assert data["updated"]["classes"] >= 2 and data["updated"]["functions"] >= 5
    assert_unchanged(before, snapshot(shop, bulk=True))
    status = shop.status()
    assert status["version"] == "base" and [h["version"] for h in status["history"]
                                                     if h.get("rolled_back_at") is None] == ["base"]
    assert shop.get("/has", name="stats")["module"] is False


def test_dry_run_catches_what_apply_would_reject(shop):
    before = snapshot(shop)
    for name in ("bad-bases", "bad-slots", "requires-mismatch", "exec-raises"):
        code, data = shop.apply(bundle(name), "--dry-run")
        assert code == 1, (name, data)
        assert_result_shape(data, ok=False)
    assert_unchanged(before, snapshot(shop))


def test_dry_run_human_output(shop):
    proc = dynupdate("apply", "--pid", str(shop.pid), V2, "--dry-run")
    assert proc.returncode == 0, proc
    text = proc.stdout + proc.stderr
    assert "dry run" in text.lower() and "base" in text and "2" in text, text
    assert shop.version() == "base"


@pytest.mark.parametrize("path", sorted(glob.glob(str(PATCHES / "*"))) + [bundle(n) for n in (
    "bad-transfer", "exec-raises", "bad-bases", "bad-slots", "bad-metaclass", "requires-mismatch",
    "module-hook-raises", "revert-raises", "lazy-manifest", "lazy-attr", "plain-v2")])
def test_check_valid_bundles(path):
    proc = dynupdate("check", path)
    assert proc.returncode == 0, proc
    assert os.path.basename(path) in proc.stdout or "valid" in proc.stdout


def test_check_example_bundles_json():
    proc = dynupdate("check", V2, "--json")
    assert proc.returncode == 0, proc
    data = json.loads(proc.stdout)
    assert data["ok"] is True and data["name"] == "shop-v2" and data["version"] == "2"
    assert data["requires"] == "base"
    assert set(data["modules"]) == {"shop.cart", "shop.promo", "shop.coupons"}
    assert all(len(d) == 64 for d in data["modules"].values())   # sha256 hex digests


@pytest.mark.parametrize("name,needle", [
    ("syntax-error", "cart.py:30"),
    ("missing-file", "nowhere.py"),
    ("bad-toml", "patch.toml"),
    ("no-manifest", "patch.toml"),
])
def test_check_invalid_bundles(name, needle):
    proc = dynupdate("check", bundle(name))
    assert proc.returncode == 2, proc
    assert needle in proc.stderr, proc.stderr


def test_check_not_a_folder(tmp_path):
    proc = dynupdate("check", str(tmp_path / "nope"))
    assert proc.returncode == 2, proc


def test_apply_human_summary_and_status_history(start_target):
    shop = start_shop(start_target)
    proc = dynupdate("apply", "--pid", str(shop.pid), V2)
    assert proc.returncode == 0, proc
    text = proc.stdout
    assert "base" in text and "2" in text, text
    for word in ("functions", "classes", "instances", "shop.cart"):
        assert word in text, (word, text)
    status = dynupdate("status", "--pid", str(shop.pid))
    assert status.returncode == 0
    assert "shop-v2" in status.stdout and "2" in status.stdout
    # rollback, human form
    proc = dynupdate("rollback", "--pid", str(shop.pid))
    assert proc.returncode == 0, proc
    assert "base" in proc.stdout
    assert shop.get("/price", item="apple") == {"price": 100}


def test_json_output_is_exactly_one_object_on_failure(start_target):
    shop = start_shop(start_target)
    proc = dynupdate("apply", "--pid", str(shop.pid), bundle("exec-raises"), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)            # stdout holds only the object
    assert_result_shape(data, ok=False)
    assert data["pid"] == shop.pid
    assert data["error"]["type"] and "boom" in data["error"]["message"] + data["error"]["traceback"]
    proc = dynupdate("apply", "--pid", str(shop.pid), V2, "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert_result_shape(data, ok=True)
    assert data["updated"]["modules"] and set(data["updated"]["modules"]) >= {"shop.cart"}
    assert set(data["phases"]), data["phases"]


def test_apply_to_missing_pid_is_unreachable():
    proc = dynupdate("apply", "--pid", "999999", V2, "--json")
    assert proc.returncode == 3, proc
    assert_result_shape(json.loads(proc.stdout), ok=False)


def test_demo_runs_and_exits_zero():
    proc = dynupdate("demo", timeout=120)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.strip(), "the demo explains what it does"
