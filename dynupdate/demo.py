"""`dynupdate demo`: the whole job on a bundled service, in a few seconds.

Starts the demo HTTP service under `dynupdate run`, builds some state, applies
its bundle demo_app/demo-v2 (new code + state transfer), checks the answers, shows
`status`, rolls back, checks again, and stops the service. Any step that
misbehaves makes the demo fail with a non-zero exit.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict

from . import errors, render
from .bundle import load_bundle
from .client import Client

APP = Path(__file__).resolve().parent / "demo_app" / "server.py"
BUNDLE = Path(__file__).resolve().parent / "demo_app" / "demo-v2"  # package data: ships with every install


class DemoFailed(errors.DynupdateError):
    """A demo step did not behave as expected."""


def _get(port: int, path: str) -> Dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _expect(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise DemoFailed(f"demo step failed: {what}: expected {want!r}, got {got!r}")
    render.out.print(f"  [green]✓[/] {what}: {got}", markup=True)


def _start_service() -> tuple:
    proc = subprocess.Popen([sys.executable, "-m", "dynupdate", "run", str(APP)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise DemoFailed("the demo service did not start", hint="run `dynupdate run " + str(APP) + "` to see why")


def _wait_for_agent(pid: int) -> Client:
    deadline = time.monotonic() + 10
    while True:
        try:
            return Client.connect(pid)
        except errors.TargetUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_demo(keep: bool = False, use_async: bool = False) -> None:
    if use_async:  # `dynupdate demo --async`: dynupdate/demo_aio.py
        from .demo_aio import run_async_demo
        return run_async_demo(keep=keep)
    if not BUNDLE.is_dir():
        raise errors.UsageError(f"the demo bundle is missing ({BUNDLE})",
                                hint="reinstall dynupdate; the demo bundle is part of the package")
    bundle = load_bundle(str(BUNDLE))
    render.out.print("[bold]1. start[/] the demo shop under `dynupdate run`", markup=True)
    proc, port = _start_service()
    try:
        render.out.print(f"  service pid {proc.pid} on port {port}")
        client = _wait_for_agent(proc.pid)
        with client:
            _steps(client, proc.pid, port, bundle)
    finally:
        _leave_or_stop(proc, keep, f"http://127.0.0.1:{port}/basket")
    render.out.print("[bold green]demo finished: code replaced, state carried over, rolled back, "
                     "no restart[/]", markup=True)


def _leave_or_stop(proc: "subprocess.Popen[Any]", keep: bool, url: str) -> None:
    """End of a demo: leave the service running for the user (--keep), or stop it (killed after 5 s)."""
    if keep:
        render.out.print(f"service left running: pid {proc.pid}, {url}")
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _steps(client: Client, pid: int, port: int, bundle: Dict[str, Any]) -> None:
    render.out.print("[bold]2. use[/] it: put apple, apple, pear in the basket", markup=True)
    for item in ("apple", "apple", "pear"):
        _get(port, f"/add?item={item}")
    before = _get(port, "/basket")
    _expect("basket on v1", (before["items"], before["total"], before["pricing"]),
            (["apple", "apple", "pear"], 3.0, "flat 1.00"))
    render.out.print(f"[bold]3. apply[/] {BUNDLE.name} (new pricing, list -> quantities)", markup=True)
    result = client.apply(bundle, timeout=10,
                          on_progress=lambda e: render.out.print(f"  … {render.describe_progress(e)}"))
    render.update_summary(result, action="apply")
    after = _get(port, "/basket")
    _expect("same basket, new code", (after["items"], after["total"], after["pricing"]),
            (["apple", "apple", "pear"], 1.75, "price table"))
    _expect("version reported by the service", _get(port, "/version")["version"], "2")
    _get(port, "/add?item=kiwi")
    _expect("new requests run v2", _get(port, "/basket")["total"], 3.75)
    render.out.print("[bold]4. status[/]", markup=True)
    render.status({k: v for k, v in client.status().items() if k not in ("ok", "id")})
    render.out.print("[bold]5. rollback[/]", markup=True)
    result = client.rollback(timeout=10)
    render.update_summary(result, action="rollback")
    back = _get(port, "/basket")
    _expect("state carried back to v1", (back["items"], back["total"], back["pricing"]),
            (["apple", "apple", "kiwi", "pear"], 4.0, "flat 1.00"))
    _expect("version after rollback", _get(port, "/version")["version"], "base")
