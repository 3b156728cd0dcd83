"""Shared fixtures: real target processes, started and always killed.

`start_target(...)` launches a program from tests/targets (or any argv), waits
for the line it prints when ready (never a fixed sleep), and registers it for
teardown. A failing test gets each target's output appended to its report.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "tests" / "targets"
PATCHES = ROOT / "patches"


class Target:
    """A running target program whose output we collect in the background."""

    def __init__(self, argv: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 user: Optional[int] = None) -> None:
        self.argv = list(argv)
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=cwd, user=user, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """Block until a line containing `text` appears; return that line."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"target never printed {text!r}; output so far:\n" + self.output())
                self._cond.wait(min(remaining, 0.2))

    def ready_value(self, prefix: str = "READY", timeout: float = 20.0) -> str:
        """For targets that print `READY <value>` (e.g. a port): return the value."""
        return self.wait_for(prefix, timeout).split(prefix, 1)[1].strip()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


_started: List[Target] = []


@pytest.fixture
def start_target(request):
    """Factory fixture: start_target(argv, env=..., ready="READY") -> Target."""
    mine: List[Target] = []

    def start(argv: Sequence[str], *, env: Optional[dict] = None, ready: Optional[str] = "READY",
              timeout: float = 20.0, cwd: Optional[str] = None, user: Optional[int] = None) -> Target:
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        target = Target(argv, env=full_env, cwd=cwd, user=user)
        mine.append(target)
        _started.append(target)
        if ready:
            target.wait_for(ready, timeout)
        return target

    yield start
    for target in mine:
        target.stop()
        if target in _started:
            _started.remove(target)
    request.node._targets_output = [(t.argv, t.output()) for t in mine]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown" and getattr(item, "_failed_call", False):
        for argv, output in getattr(item, "_targets_output", []):
            report.sections.append((f"target output: {' '.join(map(str, argv))[:120]}", output or "(none)"))
    if report.when == "call" and report.failed:
        item._failed_call = True


def dynupdate(*args: str, timeout: float = 120, env: Optional[dict] = None, user: Optional[int] = None,
              input: Optional[str] = None, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run the real CLI as a subprocess (`python -m dynupdate ...`)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "dynupdate", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, user=user, input=input, cwd=cwd)


def dynupdate_json(*args: str, **kwargs) -> tuple:
    """Run the CLI with --json; return (exit code, parsed object)."""
    proc = dynupdate(*args, "--json", **kwargs)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\nstdout={proc.stdout}\nstderr={proc.stderr}")
    return proc.returncode, data


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll `predicate` until truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def runtime_env():
    """A private DYNUPDATE_RUNTIME_DIR (short path under /tmp): pass it to targets AND the CLI.

    Returns the env dict {"DYNUPDATE_RUNTIME_DIR": base}; the socket folder is
    `<base>/dynupdate-<uid>`. Removed at teardown.
    """
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="du-", dir="/tmp")
    yield {"DYNUPDATE_RUNTIME_DIR": base}
    shutil.rmtree(base, ignore_errors=True)


# --- targets that live for a whole test module, and the CLI in the background -------------------

_module_targets: Dict[str, List[Target]] = {}


@pytest.fixture(scope="module")
def start_module_target(request):
    """Like start_target, but the targets live for the whole test module (shared by its tests)."""
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


@pytest.fixture
def module_output(request):
    """Attach module targets' output to a failing test's report (use via pytestmark)."""
    yield
    outputs = []
    for nodeid, targets in _module_targets.items():
        if nodeid.endswith(request.node.fspath.basename):
            outputs += [(t.argv, t.output()) for t in targets]
    request.node._targets_output = getattr(request.node, "_targets_output", []) + outputs


class Command:
    """The CLI running in the background, to act on the target while it waits (or to kill it)."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "dynupdate", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.finished: Optional[float] = None

    def wait(self, timeout: float = 90) -> tuple:
        """(exit code, parsed JSON or None, stdout, stderr)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.finished = time.monotonic()
        try:
            data = json.loads(out) if "--json" in self.args else None
        except ValueError:
            raise AssertionError(f"not JSON (exit {self.proc.returncode}):\n{out}\n{err}") from None
        return self.proc.returncode, data, out, err

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.communicate(timeout=30)


def http_json(port: int, path: str, timeout: float = 60.0, **params) -> tuple:
    """GET http://127.0.0.1:port/path?params -> (HTTP status, JSON body), for the targets' JSON APIs."""
    import urllib.error
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode(params)
    url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")

