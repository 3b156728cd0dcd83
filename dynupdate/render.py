"""How results look in a terminal (rich). Only the CLI imports this module."""
from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

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


def status(data: Dict[str, Any]) -> None:
    agent = data.get("agent", {})
    out.print(f"[bold]pid {data['pid']}[/]  version [bold green]{data['version']}[/]  "
              f"generation {data['generation']}", markup=True)
    out.print(f"agent {agent.get('version')} on Python {agent.get('python')}, started {_when(agent.get('started_at'))}, "
              f"socket {agent.get('socket')}")
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
    rehearsal = result.get("rehearsal")
    if rehearsal:
        out.print(f"rehearsal on a forked copy passed in {rehearsal.get('seconds', 0) * 1000:.0f} ms", markup=False)
    if result.get("rehearsal_only"):
        out.print(f"rehearsal only: pid {result['pid']} still runs {result.get('previous_version')}; "
                  f"{result.get('planned_version')} would apply", markup=False)
        return
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
    callers_at_risk(result.get("callers_at_risk"))


def callers_at_risk(items: Optional[List[Dict[str, Any]]]) -> None:
    """What the bundle removes or changes incompatibly, and who outside it still refers to it."""
    if items is None:
        return
    if not items:
        out.print("callers at risk: none", markup=False)
        return
    out.print(f"callers at risk ({len(items)}):", style="yellow", markup=False)
    for item in items:
        out.print(f"  {item['name']}: {item['change']}", markup=False)
        for place in item["callers"] or ["(no reference found outside the bundle)"]:
            out.print(f"      {place}", markup=False)


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


def build_report(result: Any) -> None:
    """The compatibility report of `dynupdate build` (strings from the user's own sources: plain text)."""
    for m in result.modules:
        out.print(f"{m.module}  ({m.file}, {m.status})", style="bold", markup=False)
        for label, names in (("changed", m.changed), ("added", m.added), ("removed", m.removed)):
            if names:
                out.print(f"  {label}: {', '.join(names)}", markup=False)
        for item in m.needs_transfer:
            out.print(f"  ! {item['class']}: __init__ now sets {', '.join(item['attributes'])}, which existing "
                      f"instances lack; define __dynupdate_transfer__(self, old)", style="yellow", markup=False)
        for value in m.values_kept:
            out.print(f"  ! {value}: new value in the source, but the live value is kept; migrate it in a "
                      f"module-level __dynupdate_transfer__(old)", style="yellow", markup=False)
        for item in m.incompatible:
            out.print(f"  ! {item['name']}: signature incompatible with existing callers: {item['reason']}",
                      style="yellow", markup=False)
        for item in m.refused:
            out.print(f"  x {item['class']}: {item['reason']} (the engine refuses this change)",
                      style="red", markup=False)
    for item in result.not_carried:
        out.print(f"not carried by the bundle: {item['path']} ({item['reason']})", style="dim", markup=False)
    verdict = f"{result.needs_action} item(s) need action" if result.needs_action else "nothing needs action"
    where = f"bundle written to {result.bundle}" if result.written else "no bundle written"
    out.print(f"{result.name} -> version {result.version}: {len(result.modules)} module(s), {verdict}; {where}",
              markup=False)


def _probe_kinds(p: Dict[str, Any]) -> str:
    kinds = [k for k in ("count", "time", "capture") if p.get(k)]
    if p.get("log"):
        kinds.insert(0, f"log {p['log']!r}")
    return ", ".join(kinds)


def probe_added(p: Dict[str, Any]) -> None:
    out.print(f"probe {p['id']} on {p['target']}: {_probe_kinds(p)}"
              + (f" when {p['when']}" if p.get("when") else "")
              + (f", removed at {_when(p['expires_at'])}" if p.get("expires_at") else ""), markup=False)


def probe_table(rows: List[Dict[str, Any]]) -> None:
    table = Table(title="Probes", title_justify="left")
    for col in ("id", "target", "records", "state", "calls", "errors", "dropped"):
        table.add_column(col)
    for p in rows:
        table.add_row(Text(p["id"]), Text(p["target"]), Text(_probe_kinds(p)),
                      Text(p["state"] + (f" ({p['reason']})" if p.get("reason") else "")), str(p["calls"]),
                      str(p["errors"]), str(p["dropped"]))
    if not rows:
        table.add_row("-", "(no probes)", "", "", "", "", "")
    out.print(table)


def probe_record(record: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
        return
    stamp = datetime.datetime.fromtimestamp(record["time"]).strftime("%H:%M:%S.%f")[:-3]
    head = f"{stamp} #{record['seq']} {record['duration_ms']:.3f} ms [{record['thread']}" + \
        (f" / {record['task']}" if record.get("task") else "") + "]"
    body = record.get("message")
    if body is None and "arguments" in record:
        body = f"args {record['arguments']} locals {record.get('locals')} -> {record.get('return')}"
    if record.get("exception"):
        body = f"{body or ''} raised {record['exception']}"
    out.print(f"{head} {body or ''}", markup=False, soft_wrap=True)


def probe_detail(p: Dict[str, Any], records: List[Dict[str, Any]]) -> None:
    out.print(f"probe {p['id']} on {p['target']}: {_probe_kinds(p)} ({p['state']})", markup=False)
    if p.get("reason"):
        out.print(f"  {p['reason']}", markup=False)
    out.print(f"  calls {p['calls']}, returns {p['returns']}, exceptions {p['exceptions']}, "
              f"records kept {p['records_kept']} (ring of {p['limits']['records']}), dropped {p['dropped']} "
              f"(rate {p['rate']:g}/s), errors {p['errors']}", markup=False)
    if p.get("last_error"):
        out.print(f"  last error: {p['last_error']}", markup=False)
    t = p.get("timing")
    if t and t["count"]:
        out.print(f"  latency over {t['count']} calls: p50 {t['p50_ms']:.3f} ms, p90 {t['p90_ms']:.3f} ms, "
                  f"p99 {t['p99_ms']:.3f} ms, max {t['max_ms']:.3f} ms", markup=False)
    for record in records:
        probe_record(record, False)
