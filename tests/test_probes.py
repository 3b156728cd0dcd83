"""Live probes on a real target process, driven through the real CLI and observed over HTTP.

One target (tests/targets/probe_app) is shared by the module; every test
removes its probes, and the last checks that nothing is left behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TARGETS, Target, dynupdate, dynupdate_json, wait_until

APP = TARGETS / "probe_app"


def _start(python: str = sys.executable, env: dict | None = None) -> tuple:
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    target = Target([sys.executable, "-m", "dynupdate", "run", "--", python, str(APP / "app.py")], env=full,
                    cwd=str(APP))
    return target, target.ready_value(timeout=30)


@pytest.fixture(scope="module")
def app():
    target, port = _start()
    try:
        yield target, port
    finally:
        target.stop()


def _get(port: str, what: str, arg: str = "1") -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/call?what={what}&arg={arg}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["ok"], body
    return body["value"]


def _add(pid: int, target: str, *args: str, env: dict | None = None) -> dict:
    code, data = dynupdate_json("probe", "add", "--pid", str(pid), target, *args, env=env)
    assert code == 0, data
    return data["probe"]


def _show(pid: int, probe_id: str) -> dict:
    code, data = dynupdate_json("probe", "show", "--pid", str(pid), probe_id)
    assert code == 0, data
    return data


def _remove_all(pid: int) -> None:
    code, data = dynupdate_json("probe", "remove", "--pid", str(pid), "--all")
    assert code == 0, data


@pytest.mark.parametrize("target, what, arg, expected", [
    ("shopmod:total", "total", "4", 5.5),                       # a function reached through a from-import
    ("shopmod:Cart.add", "add", "pear", None),                  # a method through a bound method stored before
    ("shopmod:Cart.price", "price", "kiwi", 4),                 # staticmethod
    ("shopmod:Cart.make", "make", "1", "Cart"),                 # classmethod
    ("shopmod:Cart.size", "size", "1", None),                   # property getter
    ("shopmod:Cart.Line.describe", "line", "x", "line x"),      # nested class
    ("shopmod:countdown", "countdown", "3", [3, 2, 1]),         # generator function
    ("shopmod:slow_echo", "echo", "hi", "hi"),                  # coroutine function on an asyncio loop
])
def test_count_time_log_on_each_kind_of_callable(app, target, what, arg, expected):
    proc, port = app
    probe = _add(proc.pid, target, "--count", "--time", "--log", "called -> {return}")
    try:
        values = [_get(port, what, arg) for _ in range(3)]
        if expected is not None:
            assert values == [expected] * 3
        data = _show(proc.pid, probe["id"])
        p = data["probe"]
        assert (p["calls"], p["returns"], p["exceptions"]) == (3, 3, 0), p
        assert p["timing"]["count"] == 3 and p["timing"]["max_ms"] >= p["timing"]["p50_ms"] >= 0
        messages = [r["message"] for r in data["records"]]
        if what == "make":  # the probe sees the real return value: the new Cart itself
            assert all(m.startswith("called -> <shopmod.Cart object at") for m in messages), messages
        elif what == "countdown":  # a generator's return value is what its `return` statement gives
            assert messages == ["called -> done"] * 3
        else:
            assert messages == [f"called -> {v}" for v in values]
        if what == "echo":  # timed across the whole await (the coroutine sleeps 10 ms)
            assert p["timing"]["p50_ms"] >= 9.0, p["timing"]
            assert all(r["task"] for r in data["records"])
    finally:
        _remove_all(proc.pid)


def test_template_names_when_and_capture(app):
    proc, port = app
    probe = _add(proc.pid, "shopmod:fails", "--log", "x={x} result={result} exc={exception}", "--capture",
                 "--when", "x != 7")
    try:
        for arg in ("3", "7", "-1"):
            _get(port, "fails", arg)
        data = _show(proc.pid, probe["id"])
        assert data["probe"]["calls"] == 3 and data["probe"]["exceptions"] == 1
        records = data["records"]
        assert [r["message"] for r in records] == ["x=3 result=3 exc=None",
                                                   "x=-1 result=None exc=negative"]
        assert records[0]["arguments"] == {"x": "3"} and records[0]["return"] == "3"
        assert records[1]["exception"] == "ValueError('negative')"
        assert records[1]["locals"] == {"x": "-1"}
    finally:
        _remove_all(proc.pid)


def test_capture_gets_locals_at_return(app):
    proc, port = app
    probe = _add(proc.pid, "shopmod:total", "--capture")
    try:
        _get(port, "total", "9")
        record = _show(proc.pid, probe["id"])["records"][0]
        assert record["locals"] == {"items": "[9, 1]", "tax": "0.1", "subtotal": "10"}
        assert record["return"] == "11.0"
    finally:
        _remove_all(proc.pid)


def test_errors_in_templates_never_reach_the_target_and_disable_the_probe(app):
    proc, port = app
    probe = _add(proc.pid, "shopmod:total", "--log", "{no_such_name}", "--when", "1/0 or True")
    for _ in range(12):
        assert _get(port, "total", "1") == 2.2  # the call goes on unchanged
    p = _show(proc.pid, probe["id"])["probe"]
    assert p["state"] == "disabled" and p["errors"] == 10, p
    assert "ZeroDivisionError" in p["last_error"] and "disabled after 10 errors" in p["reason"]
    code, data = dynupdate_json("probe", "list", "--pid", str(proc.pid))
    assert [q["state"] for q in data["probes"] if q["id"] == probe["id"]] == ["disabled"]
    assert [q for q in data["probes"] if q["state"] == "active"] == []


def test_rate_limit_counts_dropped_records(app):
    proc, port = app
    probe = _add(proc.pid, "shopmod:total", "--log", "t", "--rate", "2", "--count")
    try:
        for _ in range(10):
            _get(port, "total", "1")
        p = _show(proc.pid, probe["id"])["probe"]
        assert p["calls"] == 10 and p["records_kept"] + p["dropped"] == 10
        assert 2 <= p["records_kept"] <= 5 and p["dropped"] >= 5, p
    finally:
        _remove_all(proc.pid)


def test_for_expiry_removes_the_probe_and_restores_the_code(app):
    proc, port = app
    before = _get(port, "code")
    probe = _add(proc.pid, "shopmod:total", "--count", "--for", "1s")
    assert _get(port, "code") != before
    _get(port, "total", "1")
    wait_until(lambda: _get(port, "code") == before, timeout=10, message="the probe to expire")
    p = _show(proc.pid, probe["id"])["probe"]
    assert p["state"] == "expired" and p["calls"] == 1


def test_remove_restores_the_exact_code_object(app):
    proc, port = app
    before = _get(port, "code")
    first = _add(proc.pid, "shopmod:total", "--count")
    second = _add(proc.pid, "shopmod:total", "--time")
    code, data = dynupdate_json("probe", "remove", "--pid", str(proc.pid), first["id"])
    assert code == 0 and data["removed"] == [first["id"]]
    assert _get(port, "code") != before  # the other probe is still there
    code, data = dynupdate_json("probe", "remove", "--pid", str(proc.pid), second["id"])
    assert code == 0
    assert _get(port, "code") == before
    code, data = dynupdate_json("probe", "remove", "--pid", str(proc.pid), second["id"])
    assert code == 1 and data["error"]["type"] == "UnknownProbe"


def test_unknown_targets_name_what_exists(app):
    proc, _ = app
    code, data = dynupdate_json("probe", "add", "--pid", str(proc.pid), "shopmod:totl", "--count")
    assert code == 1 and data["error"]["type"] == "UnknownTarget"
    assert "similar: total" in data["error"]["message"]
    code, data = dynupdate_json("probe", "add", "--pid", str(proc.pid), "shopmod:Cart.ad", "--count")
    assert code == 1 and "similar: add" in data["error"]["message"]
    code, data = dynupdate_json("probe", "add", "--pid", str(proc.pid), "shopmdo:total", "--count")
    assert code == 1 and "similar: shopmod" in data["error"]["message"]
    code, data = dynupdate_json("probe", "add", "--pid", str(proc.pid), "json:dumps.__doc__", "--count")
    assert code == 1
    proc2 = dynupdate("probe", "add", "--pid", str(proc.pid), "shopmod:total")
    assert proc2.returncode == 2 and "--count" in proc2.stderr


def test_follow_streams_records(app):
    proc, port = app
    probe = _add(proc.pid, "shopmod:total", "--log", "total of {items}")
    follower = subprocess.Popen([sys.executable, "-m", "dynupdate", "probe", "show", "--pid", str(proc.pid),
                                 probe["id"], "--follow", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for i in range(3):
            _get(port, "total", str(i))
            lines.append(json.loads(follower.stdout.readline()))
        assert [r["message"] for r in lines] == ["total of [0, 1]", "total of [1, 1]", "total of [2, 1]"]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        _remove_all(proc.pid)


def test_probe_survives_an_update_and_a_rollback(app, tmp_path):
    proc, port = app
    probe = _add(proc.pid, "shopmod:total", "--log", "{return}")
    try:
        bundle = tmp_path / "b"
        bundle.mkdir()
        source = (APP / "shopmod.py").read_text().replace("round(subtotal * (1 + tax), 2)", "subtotal * 100")
        (bundle / "shopmod.py").write_text(source)
        (bundle / "patch.toml").write_text('name = "p"\nversion = "2"\n[modules]\n"shopmod" = "shopmod.py"\n')
        _get(port, "total", "1")
        code, data = dynupdate_json("apply", "--pid", str(proc.pid), str(bundle))
        assert code == 0, data
        assert _get(port, "total", "1") == 200
        code, status = dynupdate_json("status", "--pid", str(proc.pid))
        assert [p["id"] for p in status["probes"]] == [probe["id"]]
        code, data = dynupdate_json("rollback", "--pid", str(proc.pid))
        assert code == 0, data
        assert _get(port, "total", "1") == 2.2
        messages = [r["message"] for r in _show(proc.pid, probe["id"])["records"]]
        assert messages == ["2.2", "200", "2.2"]
    finally:
        _remove_all(proc.pid)


def test_nothing_left_behind(app):
    proc, port = app
    code, status = dynupdate_json("status", "--pid", str(proc.pid))
    assert status["probes"] == []
    names = {t["name"] for t in status["threads"]}
    assert "dynupdate-probes" not in names
    assert _get(port, "total", "1") == 2.2


def test_signed_target_requires_a_signed_probe(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret-key-material")
    key.chmod(0o600)
    target, port = _start(env={"DYNUPDATE_KEY_FILE": str(key)})
    try:
        code, data = dynupdate_json("probe", "add", "--pid", str(target.pid), "shopmod:total", "--count")
        assert code == 1 and data["error"]["type"] == "SignatureError"
        other = tmp_path / "other"
        other.write_text("another-key")
        other.chmod(0o600)
        code, data = dynupdate_json("probe", "add", "--pid", str(target.pid), "shopmod:total", "--count",
                                    "--key-file", str(other))
        assert code == 1 and data["error"]["type"] == "SignatureError"
        probe = _add(target.pid, "shopmod:total", "--count", "--key-file", str(key))
        _get(port, "total", "1")
        assert _show(target.pid, probe["id"])["probe"]["calls"] == 1
    finally:
        target.stop()


def _pythons() -> list:
    found = []
    for minor in ("3.9", "3.12", "3.13"):
        matches = sorted(Path("/root/.pyenv/versions").glob(f"{minor}.*/bin/python"))
        found.append(pytest.param(str(matches[-1]) if matches else None, id=minor))
    return found


@pytest.mark.parametrize("python", _pythons())
def test_probes_on_other_python_versions(python):
    if python is None:
        pytest.skip("this interpreter version is not installed (pyenv)")
    target, port = _start(python)
    try:
        probe = _add(target.pid, "shopmod:slow_echo", "--time", "--count")
        other = _add(target.pid, "shopmod:Cart.add", "--log", "{item}")
        before = _get(port, "code")
        assert _get(port, "echo", "v") == "v" and _get(port, "add", "fig") >= 2
        assert _show(target.pid, probe["id"])["probe"]["timing"]["count"] == 1
        assert [r["message"] for r in _show(target.pid, other["id"])["records"]] == ["fig"]
        _remove_all(target.pid)
        assert _get(port, "code") == before
    finally:
        target.stop()


def test_callers_at_risk_for_a_removed_method_and_a_changed_signature(app, tmp_path):
    """`apply --dry-run` and `check --pid` name what the bundle breaks and who still uses it."""
    proc, port = app
    source = (APP / "shopmod.py").read_text()
    source = source.replace("def total(items, tax=0.1):\n    subtotal = sum(items)",
                            "def total(values, tax=0.1):\n    subtotal = sum(values)")
    source = source.replace("    @staticmethod\n    def price(item):\n        return len(item)\n\n", "")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "shopmod.py").write_text(source)
    (bundle / "patch.toml").write_text('name = "risky"\nversion = "r"\n[modules]\n"shopmod" = "shopmod.py"\n')
    code, data = dynupdate_json("apply", "--pid", str(proc.pid), str(bundle), "--dry-run")
    assert code == 0, data
    risk = {item["name"]: item for item in data["callers_at_risk"]}
    assert set(risk) == {"shopmod:total", "shopmod:Cart.price"}, risk
    assert risk["shopmod:total"]["change"] == "signature: parameter(s) items removed or renamed"
    assert "__main__.total holds it" in risk["shopmod:total"]["callers"]
    assert "__main__.call names it" in risk["shopmod:total"]["callers"]
    assert risk["shopmod:Cart.price"]["change"] == "removed"
    assert "__main__.call names it" in risk["shopmod:Cart.price"]["callers"]
    check = dynupdate("check", str(bundle), "--pid", str(proc.pid))
    assert check.returncode == 0, check.stderr
    assert "callers at risk (2):" in check.stdout and "__main__.total holds it" in check.stdout
    code, status = dynupdate_json("status", "--pid", str(proc.pid))
    assert status["version"] == "base"  # a dry run changes nothing


@pytest.mark.parametrize("old, new, problem", [
    ([("a", "pos", False)], [("a", "pos", False), ("b", "pos", True)], None),
    ([("a", "pos", False)], [("b", "pos", False)], "parameter(s) a removed or renamed"),
    ([("a", "pos", False)], [("a", "pos", False), ("b", "kwonly", False)], "new required parameter(s) b"),
    ([("a", "pos", False), ("b", "pos", True)], [("a", "pos", False)], "parameter(s) b removed or renamed"),
    ([("a", "pos", False)], [("a", "pos", False), ("kw", "varkw", False)], None),
    ([("a", "posonly", False), ("b", "posonly", False)], [("a", "posonly", False)],
     "takes 1 positional parameter(s), callers may pass 2"),
    ([("args", "varargs", False)], [], "*args removed"),
])
def test_incompatibility_rules(old, new, problem):
    from dynupdate_agent.callers import incompatibility

    assert incompatibility(old, new) == problem


def _interpose_bundle(tmp_path: Path, source: str, interpose: dict, version: str = "ip") -> Path:
    bundle = tmp_path / f"ip-{version}"
    bundle.mkdir()
    (bundle / "shopmod.py").write_text(source)
    (bundle / "audit.py").write_text('''
CALLS = []

def around(call, *args, **kwargs):
    CALLS.append(args)
    result = call(*args, **kwargs)
    return result * 10 if isinstance(result, (int, float)) else result

def adapter(call, item):
    # `Cart.price` was removed in the new version: keep old callers working
    assert call is None
    return len(item) * 100
''')
    table = "".join(f'"{k}" = "{v}"\n' for k, v in interpose.items())
    (bundle / "patch.toml").write_text(f'name = "ip"\nversion = "{version}"\n[modules]\n"shopmod" = "shopmod.py"\n'
                                       f'[interpose]\n{table}')
    return bundle


def test_bundle_interposers_apply_and_roll_back_atomically(app, tmp_path):
    proc, port = app
    before = _get(port, "code")
    source = (APP / "shopmod.py").read_text().replace(
        "    @staticmethod\n    def price(item):\n        return len(item)\n\n", "")
    bundle = _interpose_bundle(tmp_path, source, {"shopmod:total": "audit.py:around",
                                                  "shopmod:Cart.price": "audit.py:adapter"})
    code, data = dynupdate_json("apply", "--pid", str(proc.pid), str(bundle), "--dry-run")
    assert code == 0, data
    assert "shopmod:Cart.price" not in {i["name"] for i in data["callers_at_risk"]}  # the adapter keeps it
    code, data = dynupdate_json("apply", "--pid", str(proc.pid), str(bundle))
    assert code == 0, data
    try:
        assert _get(port, "total", "4") == 55.0           # the interposer wraps the new code
        assert _get(port, "price", "kiwi") == 400         # the removed method answers through the adapter
    finally:
        code, data = dynupdate_json("rollback", "--pid", str(proc.pid))
        assert code == 0, data
    assert _get(port, "total", "4") == 5.5 and _get(port, "price", "kiwi") == 4
    assert _get(port, "code") == before                   # rollback put the exact code object back
    # a failing update takes its interposers with it: the target stays on the old code, unwrapped
    broken = _interpose_bundle(tmp_path, source, {"shopmod:total": "audit.py:around",
                                                  "shopmod:Nope.gone": "audit.py:around"}, version="broken")
    code, data = dynupdate_json("apply", "--pid", str(proc.pid), str(broken))
    assert code == 1 and data["error"]["type"] == "InterposeError", data
    assert "shopmod:Nope does not exist" in data["error"]["message"]
    assert _get(port, "total", "4") == 5.5 and _get(port, "code") == before
    assert _get(port, "price", "kiwi") == 4
