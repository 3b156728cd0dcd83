"""Helpers for the engine's acceptance tests (issue 3): the shop target over HTTP,
the CLI's apply/rollback/status in JSON, and a module-scoped target fixture.

Test modules import what they use, fixtures included:
    from shoputil import Shop, shop_module, attach_module_output, apply, ...
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import PATCHES, ROOT, TARGETS, Target, dynupdate_json, wait_until
from dynupdate_agent.wire import ERROR_KEYS, RESULT_KEYS as _RESULT_KEYS, UPDATED_KEYS

SHOP_SERVER = TARGETS / "shop_app" / "server.py"
PLAIN_SERVER = TARGETS / "eng_plain" / "plain.py"
BUNDLES = ROOT / "tests" / "bundles"
V2 = str(PATCHES / "shop-v2")
V3 = str(PATCHES / "shop-v3")


_generated: List[str] = []


def _generated_dir() -> str:
    """Build the failure-case bundles from shop-v2 once per test process (tests/bundles/regenerate.py)."""
    if not _generated:
        import importlib.util
        import tempfile

        spec = importlib.util.spec_from_file_location("_du_regenerate", BUNDLES / "regenerate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import atexit
        import shutil

        out = tempfile.mkdtemp(prefix="du-bundles-")
        atexit.register(shutil.rmtree, out, True)
        module.main(out)
        _generated.append(out)
    return _generated[0]


def bundle(name: str) -> str:
    """A helper bundle kept in tests/bundles, or a failure case built from shop-v2."""
    kept = BUNDLES / name
    if kept.is_dir():
        return str(kept)
    return os.path.join(_generated_dir(), name)


class HTTPError(AssertionError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Shop:
    """A running shop (or plain) target: pid, port and JSON-over-HTTP calls."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pid = target.pid
        self.port = int(target.ready_value())

    def get(self, path: str, timeout: float = 30.0, **params: Any) -> Dict[str, Any]:
        """GET path?params; return the JSON body; raise HTTPError unless 200."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                body = json.loads(body)
            except ValueError:
                pass
            raise HTTPError(exc.code, body) from None

    def get_async(self, path: str, **params: Any) -> "Call":
        """Start a request in a background thread (e.g. a call in flight)."""
        return Call(self, path, params)

    # -- the CLI, against this target --------------------------------------
    def apply(self, bundle_dir: str, *extra: str, timeout: float = 120) -> tuple:
        return dynupdate_json("apply", "--pid", str(self.pid), bundle_dir, *extra, timeout=timeout)

    def rollback(self, *extra: str, timeout: float = 120) -> tuple:
        return dynupdate_json("rollback", "--pid", str(self.pid), *extra, timeout=timeout)

    def status(self) -> Dict[str, Any]:
        code, data = dynupdate_json("status", "--pid", str(self.pid))
        assert code == 0, data
        return data

    def version(self) -> str:
        return self.status()["version"]

    def factory(self, name: str = "shop.cart.Cart") -> Dict[str, Any]:
        rows = [f for f in self.status()["factories"] if f["class"] == name]
        assert len(rows) == 1, f"expected exactly one factory {name}, got {self.status()['factories']}"
        return rows[0]


class Call:
    """One HTTP request running in a thread; records when it returned."""

    def __init__(self, shop: Shop, path: str, params: Dict[str, Any]) -> None:
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None
        self.started = time.monotonic()
        self.finished: Optional[float] = None
        self._thread = threading.Thread(target=self._run, args=(shop, path, params), daemon=True)
        self._thread.start()

    def _run(self, shop: Shop, path: str, params: Dict[str, Any]) -> None:
        try:
            self.result = shop.get(path, timeout=60, **params)
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self.finished = time.monotonic()

    def done(self) -> bool:
        return self.finished is not None

    def wait(self, timeout: float = 60) -> Dict[str, Any]:
        self._thread.join(timeout)
        assert self.done(), "request still running"
        if self.error is not None:
            raise self.error
        return self.result


class Command:
    """A CLI command running in the background (to do something while it waits)."""

    def __init__(self, *args: str) -> None:
        import subprocess

        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "dynupdate", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.finished: Optional[float] = None

    def wait(self, timeout: float = 60) -> tuple:
        out, err = self.proc.communicate(timeout=timeout)
        self.finished = time.monotonic()
        try:
            data = json.loads(out) if "--json" in self.args else None
        except ValueError:
            raise AssertionError(f"not JSON (exit {self.proc.returncode}):\n{out}\n{err}")
        return self.proc.returncode, data, out, err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def start_shop(start: Any, server: Path = SHOP_SERVER, with_agent: bool = True) -> Shop:
    """Start the shop with `dynupdate run` (same pid as the program) and wait for READY."""
    if with_agent:
        argv = [sys.executable, "-m", "dynupdate", "run", str(server)]
    else:
        argv = [sys.executable, str(server)]
    return Shop(start(argv))


# -- fixtures ------------------------------------------------------------------

_module_targets: Dict[str, List[Target]] = {}


@pytest.fixture(scope="module")
def start_module_target(request):
    """Like conftest's start_target, but the targets live for the whole test module."""
    mine: List[Target] = []
    _module_targets[request.node.nodeid] = mine

    def start(argv, *, env=None, ready="READY", timeout=20.0):
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        target = Target(argv, env=full_env)
        mine.append(target)
        if ready:
            target.wait_for(ready, timeout)
        return target

    yield start
    for target in mine:
        target.stop()
    _module_targets.pop(request.node.nodeid, None)


@pytest.fixture(autouse=False)
def attach_module_output(request):
    """Use (autouse in a module: `pytestmark = usefixtures(...)`) to get module targets' output on failure."""
    yield
    outputs = []
    for nodeid, targets in _module_targets.items():
        if nodeid.endswith(request.node.fspath.basename):
            outputs += [(t.argv, t.output()) for t in targets]
    existing = getattr(request.node, "_targets_output", [])
    request.node._targets_output = existing + outputs


def snapshot(shop: Shop, bulk: bool = False) -> Dict[str, Any]:
    """Everything observable about the shop's code and state, for before/after comparisons."""
    params = {"raw": 1}
    if bulk:
        params["bulk"] = 1
    return {
        "state": shop.get("/state", **params),
        "price": shop.get("/price", item="pear"),
        "modattr": shop.get("/modattr", item="pear"),
        "callback": shop.get("/callback", item="pear"),
        "bound": shop.get("/bound"),
        "total_c2": shop.get("/total", cart="c2"),
        "total_g1": shop.get("/total", cart="g1"),
        "total_v1": shop.get("/total", cart="v1"),
        "label": shop.get("/label", cart="c2"),
        "classmethod": shop.get("/classmethod", cart="g1"),
        "static": shop.get("/static", cents=1999),
        "vat": shop.get("/vat", cents=1000),
        "money": shop.get("/money", cents=7),
        "version": shop.get("/version"),
    }


def assert_unchanged(before: Dict[str, Any], after: Dict[str, Any]) -> None:
    """Compare two snapshots key by key (decorated-call counters excluded)."""
    for key in before:
        b, a = before[key], after[key]
        if key == "state":
            b = json.loads(json.dumps(b))
            a = json.loads(json.dumps(a))
            b["module"].get("STATS", {}).pop("decorated_calls", None)
            a["module"].get("STATS", {}).pop("decorated_calls", None)
        assert a == b, f"{key} changed: before={b!r} after={a!r}"


RESULT_KEYS = set(_RESULT_KEYS)


def assert_result_shape(data: Dict[str, Any], ok: bool) -> None:
    """The published --json shape of apply/rollback (extra keys allowed, e.g. dry_run/plan)."""
    missing = RESULT_KEYS - set(data)
    assert not missing, f"missing keys {missing} in {data}"
    assert data["ok"] is ok, data
    assert isinstance(data["pid"], int)
    assert isinstance(data["phases"], dict)
    assert all(isinstance(v, (int, float)) and v >= 0 for v in data["phases"].values()), data["phases"]
    assert isinstance(data["warnings"], list)
    updated = data["updated"]
    assert set(UPDATED_KEYS) <= set(updated), updated
    for key in ("functions", "classes", "instances"):
        assert isinstance(updated[key], int) and updated[key] >= 0, updated
    assert isinstance(updated["modules"], list)
    if ok:
        assert data["error"] is None, data
    else:
        err = data["error"]
        assert isinstance(err, dict) and set(ERROR_KEYS) <= set(err), data
        assert err["type"] and err["message"], err


def wait_update_waiting(shop: Shop, generation_before: int, timeout: float = 20) -> None:
    """Poll `status` until the engine has opened a new generation: an update has started
    its wait for a safe point (no side effects, unlike probing with a second apply)."""
    wait_until(lambda: shop.status()["generation"] > generation_before, timeout=timeout, interval=0.05,
               message="the update to open a new generation (start waiting for a safe point)")


def wait_in_activity(shop: Shop, timeout: float = 20) -> None:
    """Poll `status` until a request thread is inside an activity (a call in flight)."""
    wait_until(lambda: any(t["in_activity"] for t in shop.status()["threads"]), timeout=timeout, interval=0.05,
               message="a request in flight")
