"""How results look in a terminal (rich). Only the CLI imports this module."""
from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def error(exc: Exception) -> None:
    from .errors import DynupdateError

    err.print(f"[bold red]error:[/] {getattr(exc, 'message', str(exc))}", markup=True)
    if isinstance(exc, DynupdateError):
        if exc.remote and exc.remote.get("traceback"):
            err.print("[dim]target-side traceback:[/]", markup=True)
            err.print(exc.remote["traceback"].rstrip(), markup=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {exc.hint}", markup=True)


def _update_state(update: Dict[str, Any]) -> None:
    """The running update and any stuck hook (target strings: printed as text, never markup)."""
    running = update.get("running")
    if running:
        doing = f", running {running.get('running')}" if running.get("running") else ""
        out.print(f"update in progress: {running.get('action')} {running.get('bundle')!r}, phase "
                  f"{running.get('phase')}{doing}, {running.get('seconds')}s, {running.get('held')} call(s) held",
                  markup=False, highlight=False)
    for stuck in update.get("stuck") or []:
        out.print(f"stuck hook (updates refused until it returns): {stuck}", markup=False, highlight=False,
                  style="red")


def status(data: Dict[str, Any]) -> None:
    agent = data.get("agent", {})
    out.print(f"[bold]pid {data['pid']}[/]  version [bold green]{data['version']}[/]  "
              f"generation {data['generation']}", markup=True)
    out.print(f"agent {agent.get('version')} on Python {agent.get('python')}, started {_when(agent.get('started_at'))}, "
              f"socket {agent.get('socket')}")
    _update_state(data.get("update") or {})
    hist = Table(title="Version history", title_justify="left")
    for col in ("#", "version", "bundle", "applied at"):
        hist.add_column(col)
    for i, row in enumerate(data.get("history", [])):
        hist.add_row(str(i), row["version"], row["name"], _when(row.get("applied_at")))
    out.print(hist)
    threads = Table(title="Threads", title_justify="left")
    for col in ("id", "name", "generation", "in activity"):
        threads.add_column(col)
    for t in data.get("threads", []):
        threads.add_row(str(t["id"]), t["name"], str(t["generation"]), "yes" if t["in_activity"] else "no")
    out.print(threads)
    facts = Table(title="Factories (updatable classes)", title_justify="left")
    for col in ("class", "live instances", "pending lazy transfer"):
        facts.add_column(col)
    for f in data.get("factories", []):
        facts.add_row(f["class"], str(f["instances"]), str(f["pending"]))
    if not data.get("factories"):
        facts.add_row("[dim](none: the program has no @updatable classes)[/]", "", "")
    out.print(facts)


def processes(rows: List[Dict[str, Any]]) -> None:
    table = Table(title="Python processes", title_justify="left")
    for col in ("pid", "user", "agent", "command"):
        table.add_column(col)
    for r in rows:
        agent = f"yes ({r['agent_version']})" if r["agent"] else "no"
        table.add_row(str(r["pid"]), str(r["user"]), agent, r["cmdline"][:100])
    out.print(table)


def update_summary(result: Dict[str, Any], *, action: str) -> None:
    updated = result.get("updated") or {}
    if result.get("dry_run"):
        out.print(f"[bold]dry run[/]: {action} would take pid {result['pid']} from "
                  f"[bold]{result.get('previous_version')}[/] to [bold]{result.get('planned_version')}[/]; "
                  f"nothing was changed", markup=True)
    else:
        out.print(f"[bold green]{action} done[/]: pid {result['pid']} "
                  f"{result.get('previous_version')} -> [bold]{result.get('version')}[/]", markup=True)
    table = Table(show_header=False, box=None)
    table.add_row("modules", ", ".join(updated.get("modules", [])) or "-")
    table.add_row("functions", str(updated.get("functions", 0)))
    table.add_row("classes", str(updated.get("classes", 0)))
    table.add_row("instances", str(updated.get("instances", 0)) +
                  (f" ({updated.get('lazy_pending')} pending lazy transfer)" if updated.get("lazy_pending") else ""))
    phases = result.get("phases") or {}
    table.add_row("phases", ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in phases.items()))
    out.print(table)
    for w in result.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {w}", markup=True)


def describe_progress(event: Dict[str, Any]) -> str:
    """One line for a progress event; the engine decides the fields, we only phrase them."""
    phase = event.get("phase", "?")
    if phase == "safepoint":
        waiting = event.get("waiting_on") or []
        held = event.get("held", 0)
        detail = "; ".join(waiting[:3]) + (" ..." if len(waiting) > 3 else "")
        return (f"waiting for a safe point ({event.get('elapsed', 0):.1f}s"
                f"{', ' + str(held) + ' call(s) held' if held else ''})" + (f": {detail}" if detail else ""))
    if phase == "transfer" and "done" in event:
        return f"transferring state: {event.get('done', 0)}/{event.get('total', 0)} instances"
    return event.get("message") or phase
