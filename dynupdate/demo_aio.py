"""`dynupdate demo --async`: an asyncio service updated with requests in flight.

Starts dynupdate/demo_aio_app/server.py (standard-library asyncio) under
`dynupdate run`, puts orders in flight (each one's task suspended inside
`kitchen.cook`), applies kitchen-v2 (whose `recipe()` takes a new argument, so
a request that mixed versions would fail), and checks: the in-flight orders
finish on v1, the loop kept answering /ping while the update waited, new
orders run v2; then rolls back with a v2 order in flight and checks again.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from . import render
from .bundle import load_bundle
from .client import Client
from .demo import DemoFailed, _expect, _get, _leave_or_stop, _wait_for_agent

APP = Path(__file__).resolve().parent / "demo_aio_app" / "server.py"
BUNDLE = APP.parent / "kitchen-v2"
COOK_S = 2.0


def _start() -> tuple:
    proc = subprocess.Popen([sys.executable, "-m", "dynupdate", "run", str(APP)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise DemoFailed("the asyncio demo service did not start", hint=f"run `dynupdate run {APP}` to see why")


class _Orders:
    """Orders sent in background threads; their answers once served."""

    def __init__(self, port: int, dishes: List[str], seconds: float) -> None:
        self.answers: Dict[str, Any] = {}
        self.threads = [threading.Thread(target=self._order, args=(port, d, seconds), daemon=True) for d in dishes]
        for t in self.threads:
            t.start()

    def _order(self, port: int, dish: str, seconds: float) -> None:
        try:
            self.answers[dish] = _get(port, f"/order?dish={dish}&seconds={seconds}")
        except Exception as exc:
            self.answers[dish] = {"error": f"{type(exc).__name__}: {exc}"}

    def wait(self) -> Dict[str, Any]:
        for t in self.threads:
            t.join(30)
        return self.answers


def _pings(port: int, stop: threading.Event, worst: List[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        _get(port, "/ping")
        worst[0] = max(worst[0], time.perf_counter() - start)
        time.sleep(0.01)


def _update_with_orders_in_flight(client: Client, port: int, action: str, dishes: List[str]) -> Dict[str, Any]:
    orders = _Orders(port, dishes, COOK_S)
    time.sleep(0.3)  # the orders are suspended in kitchen.cook now
    stop, worst = threading.Event(), [0.0]
    pinger = threading.Thread(target=_pings, args=(port, stop, worst), daemon=True)
    pinger.start()

    def progress(event: Dict[str, Any]) -> None:
        render.out.print(f"  … {render.describe_progress(event)}")

    try:
        if action == "apply":
            result = client.apply(load_bundle(str(BUNDLE)), timeout=15, on_progress=progress)
        else:
            result = client.rollback(timeout=15, on_progress=progress)
    finally:
        stop.set()
        pinger.join(10)
    render.update_summary(result, action=action)
    waited = result.get("phases", {}).get("safepoint", 0.0)
    render.out.print(f"  the update waited {waited:.2f} s for the orders in flight; meanwhile the slowest "
                     f"/ping took {worst[0] * 1000:.1f} ms (the event loop never stopped)")
    if worst[0] > 0.5:
        raise DemoFailed(f"/ping took {worst[0]:.2f} s while the update waited: the event loop was blocked")
    return orders.wait()


def run_async_demo(keep: bool = False) -> None:
    render.out.print("[bold]1. start[/] an asyncio service (standard-library HTTP on asyncio) "
                     "under `dynupdate run`", markup=True)
    proc, port = _start()
    try:
        render.out.print(f"  service pid {proc.pid} on port {port}")
        with _wait_for_agent(proc.pid) as client:
            _steps(client, port)
    finally:
        _leave_or_stop(proc, keep, f"http://127.0.0.1:{port}/order?dish=soup")
    render.out.print("[bold green]demo finished: requests in flight finished on the version they started on, "
                     "the event loop never stopped, no restart[/]", markup=True)


def _steps(client: Client, port: int) -> None:
    _expect("an order on v1", _get(port, "/order?dish=tea&seconds=0")["served"], "tea (v1 recipe)")
    render.out.print(f"[bold]2. apply[/] {BUNDLE.name} while 3 orders simmer ({COOK_S:g} s each, suspended in "
                     "`await` inside the code being replaced)", markup=True)
    answers = _update_with_orders_in_flight(client, port, "apply", ["soup", "stew", "curry"])
    for dish, answer in sorted(answers.items()):
        _expect(f"order {dish} in flight: started and served on v1", (answer.get("started"), answer.get("served")),
                (f"{dish} (v1 recipe)", f"{dish} (v1 recipe)"))
    _expect("version", _get(port, "/version")["version"], "2")
    _expect("a new order runs v2", _get(port, "/order?dish=tea&seconds=0")["served"], "tea (v2 recipe, pepper)")
    render.out.print("[bold]3. status[/]", markup=True)
    render.status({k: v for k, v in client.status().items() if k not in ("ok", "id")})
    render.out.print("[bold]4. rollback[/] while a v2 order simmers", markup=True)
    answers = _update_with_orders_in_flight(client, port, "rollback", ["ramen"])
    _expect("order ramen in flight: started and served on v2", (answers["ramen"].get("started"),
            answers["ramen"].get("served")), ("ramen (v2 recipe, pepper)", "ramen (v2 recipe, pepper)"))
    _expect("version after rollback", _get(port, "/version")["version"], "base")
    _expect("a new order runs v1 again", _get(port, "/order?dish=tea&seconds=0")["served"], "tea (v1 recipe)")
