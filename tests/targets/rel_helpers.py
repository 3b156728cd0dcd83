"""Helpers shared by the reliability and security tests (tests/test_fault_*,
test_fuzz_*, test_security_*, test_soak): the rel_app target over HTTP, the
CLI against it, and a module-scoped target fixture.

    sys.path.insert(0, str(TARGETS)); from rel_helpers import ...
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Dict, Optional


from conftest import (ROOT, TARGETS, Command, Target, dynupdate_json,  # noqa: F401 (re-exported)
                      http_json, module_output, start_module_target, wait_until)

REL_SERVER = TARGETS / "rel_app" / "server.py"
REL_BLOCKED = TARGETS / "rel_blocked.py"
BUNDLES = ROOT / "tests" / "bundles"
V2 = str(BUNDLES / "rel_v2")


def bundle(name: str) -> str:
    return str(BUNDLES / name)


class Rel:
    """A running rel_app target: HTTP calls, the CLI against its pid, fault switches."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pid = target.pid
        self.port = int(target.ready_value())

    # -- HTTP ------------------------------------------------------------------
    def call(self, path: str, timeout: float = 60.0, **params: Any) -> tuple:
        """GET path?params -> (HTTP status, JSON body)."""
        return http_json(self.port, path, timeout, **params)

    def get(self, path: str, **params: Any) -> Any:
        status, body = self.call(path, **params)
        assert status == 200, f"GET {path} {params}: HTTP {status}: {body}"
        return body

    def get_async(self, path: str, **params: Any) -> "Call":
        return Call(self, path, params)

    def faults(self, fail: Optional[Dict[str, int]] = None, block: Optional[Dict[str, int]] = None) -> Dict:
        return self.get("/faults", set=json.dumps({"fail": fail or {}, "block": block or {}}))

    def gate(self, name: str, op: str) -> Dict:
        return self.get("/gate", name=name, op=op)

    # -- CLI -------------------------------------------------------------------
    def apply(self, bundle_dir: str = V2, *extra: str, timeout: float = 120) -> tuple:
        return dynupdate_json("apply", "--pid", str(self.pid), bundle_dir, *extra, timeout=timeout)

    def rollback(self, *extra: str, timeout: float = 120) -> tuple:
        return dynupdate_json("rollback", "--pid", str(self.pid), *extra, timeout=timeout)

    def status(self) -> Dict[str, Any]:
        code, data = dynupdate_json("status", "--pid", str(self.pid), "--no-inject")
        assert code == 0, data
        return data

    def pending(self) -> int:
        rows = [f for f in self.status()["factories"] if f["class"] == "relapp.items.Item"]
        assert len(rows) == 1, rows
        return rows[0]["pending"]

    def raw(self, iid: str) -> Dict[str, Any]:
        return self.get("/state")["items"][iid]


class Call:
    """One HTTP request in a background thread (a call in flight, or one the mediator holds)."""

    def __init__(self, rel: Rel, path: str, params: Dict[str, Any]) -> None:
        self.result: Optional[tuple] = None
        self.error: Optional[BaseException] = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(rel, path, params), daemon=True)
        self._thread.start()

    def _run(self, rel: Rel, path: str, params: Dict[str, Any]) -> None:
        try:
            self.result = rel.call(path, timeout=90, **params)
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self.finished.set()

    def done(self) -> bool:
        return self.finished.is_set()

    def wait(self, timeout: float = 60) -> Any:
        assert self.finished.wait(timeout), "request still running"
        if self.error is not None:
            raise self.error
        status, body = self.result
        assert status == 200, f"HTTP {status}: {body}"
        return body


def start_rel(start: Any, *options: str, agent: str = "run", env: Optional[dict] = None) -> Rel:
    """Start rel_app: agent="run" (dynupdate run), "start" (start() in the program) or "none"."""
    if agent == "run":
        argv = [sys.executable, "-m", "dynupdate", "run", str(REL_SERVER), *options]
    elif agent == "start":
        argv = [sys.executable, str(REL_SERVER), "--start-agent", *options]
    else:
        argv = [sys.executable, str(REL_SERVER), *options]
    return Rel(start(argv, env=env))


def snapshot(rel: Rel) -> Dict[str, Any]:
    """Code and state as observed over HTTP (raw instance dicts, module state, every function)."""
    return {
        "state": rel.get("/state"),
        "label": rel.get("/label"),
        "total": rel.get("/total"),
        "i7": rel.get("/item", iid="i7"),
    }


def assert_at_base(rel: Rel, before: Dict[str, Any]) -> None:
    """The target runs its base version with its state exactly as in `before`."""
    after = snapshot(rel)
    assert after["state"]["version"] == "base", after["state"]["version"]
    assert after["label"] == {"label": "v1"}, after["label"]
    for key in before:
        assert after[key] == before[key], f"{key} changed:\nbefore={before[key]!r}\nafter={after[key]!r}"
    status = rel.status()
    assert status["version"] == "base", status
    live = [h["version"] for h in status["history"] if h.get("rolled_back_at") is None]
    assert live == ["base"], status["history"]


def wait_generation_above(rel: Rel, generation: int, timeout: float = 20) -> None:
    """Poll status until an update has opened a new generation (it is waiting for a safe point)."""
    wait_until(lambda: rel.status()["generation"] > generation, timeout=timeout, interval=0.05,
               message="the update to start waiting for a safe point")


def wait_blocked(rel: Rel, name: str, count: int = 1, timeout: float = 20) -> None:
    wait_until(lambda: rel.get("/faults")["blocked"].get(name, 0) >= count, timeout=timeout, interval=0.02,
               message=f"a thread parked on gate {name!r}")


def wait_not_busy(pid: int, timeout: float = 10.0) -> float:
    """Poll with dry-run applies until the agent takes a request again; returns the seconds it took."""
    from dynupdate import errors
    from dynupdate.bundle import load_bundle
    from dynupdate.client import Client

    loaded = load_bundle(V2)
    start = time.monotonic()

    def free() -> bool:
        with Client.connect(pid) as client:
            try:
                client.apply(loaded, dry_run=True)
            except errors.Busy:
                return False
        return True

    wait_until(free, timeout=timeout, interval=0.05, message="the agent to give up the abandoned update")
    return time.monotonic() - start


# -- module-scoped targets ---------------------------------------------------------
