"""Helpers for the reference-rule and leak tests (issue 8 items 3, 5, 6): the
refs_app target, which answers GET /eval?expr=... so a test can look at any
reference the target holds, from outside, over HTTP."""
from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from conftest import ROOT, TARGETS, dynupdate_json

from dynupdate_agent import signing

REFS_SERVER = TARGETS / "refs_app" / "server.py"
REFS_V2 = str(ROOT / "tests" / "bundles" / "refs_v2")


class App:
    """A running refs_app target (started under `dynupdate run`, same pid)."""

    def __init__(self, target) -> None:
        self.target = target
        self.pid = target.pid
        self.port = int(target.ready_value())

    def eval(self, expr: str, timeout: float = 60.0) -> Any:
        url = f"http://127.0.0.1:{self.port}/eval?" + urllib.parse.urlencode({"expr": expr})
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr}: HTTP {exc.code}: {exc.read()[:2000]!r}") from None

    def eval_async(self, expr: str) -> "Pending":
        return Pending(self, expr)

    def apply(self, bundle: str, *extra: str, env: Optional[dict] = None) -> tuple:
        return dynupdate_json("apply", "--pid", str(self.pid), bundle, *extra, env=env)

    def rollback(self, *extra: str) -> tuple:
        return dynupdate_json("rollback", "--pid", str(self.pid), *extra)

    def status(self) -> dict:
        code, data = dynupdate_json("status", "--pid", str(self.pid))
        assert code == 0, data
        return data


class Pending:
    """One /eval request running in a thread (a call the mediator may hold)."""

    def __init__(self, app: App, expr: str) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(app, expr), daemon=True)
        self._thread.start()

    def _run(self, app: App, expr: str) -> None:
        try:
            self.value = app.eval(expr, timeout=120)
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float = 120) -> Any:
        self._thread.join(timeout)
        assert self.done(), "the request is still running"
        if self.error is not None:
            raise self.error
        return self.value


def start_app(start, python: Optional[str] = None) -> App:
    """Start refs_app under `dynupdate run` (with another interpreter if `python` is given)."""
    program = ["--", python, str(REFS_SERVER)] if python else [str(REFS_SERVER)]
    return App(start([sys.executable, "-m", "dynupdate", "run", *program]))


def raw_bundle(module: str, source: str = "X = 1\n") -> dict:
    """The bundle as the CLI would send it, built without the CLI's validation."""
    manifest = f'name = "sys-{module}"\nversion = "9"\n[modules]\n"{module}" = "m.py"\n'
    return {"name": f"sys-{module}", "version": "9", "description": "", "requires": None, "lazy": False,
            "manifest": manifest, "signature": None,
            "modules": [{"name": module, "file": "m.py", "source": source,
                         "sha256": signing.digest(source.encode())}]}
