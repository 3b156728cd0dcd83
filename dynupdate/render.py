"""How results look in a terminal (rich). Only the CLI imports this module."""
from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import streams

#: width when the output is not a terminal and COLUMNS is unset: long values (digests, paths) stay on one line
UNWRAPPED = 4096


def _width(stream: streams.Guarded) -> Optional[int]:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if stream.isatty() else UNWRAPPED


out = Console(file=streams.stdout, highlight=False, width=_width(streams.stdout))  # type: ignore[arg-type]
err = Console(file=streams.stderr, highlight=False, width=_width(streams.stderr))  # type: ignore[arg-type]


def emit_json(obj: Any) -> None:
    streams.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    streams.stdout.flush()


def _when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')


def _is_agent_file(path: str) -> bool:
    import dynupdate_agent

    folder = os.path.dirname(path)
    return folder == os.path.dirname(os.path.abspath(dynupdate_agent.__file__)) or \
        os.path.basename(folder) == "dynupdate_agent"


def user_traceback(text: str, verbose: bool = False) -> str:
    """A target-side traceback with the agent's own frames folded into one line (all of them if verbose).

    What the user can act on are the frames of their bundle and application;
    the engine's frames around them are noise unless debugging dynupdate itself.
    """
    if verbose:
        return text.rstrip()
    lines, hidden, skipping = [], 0, False
    for line in text.rstrip().splitlines():
        match = _FRAME.match(line)
        if match:
            skipping = _is_agent_file(match.group("file"))
            if skipping:
                hidden += 1
                continue
        elif skipping and line.startswith("    "):
            continue
        else:
            skipping = False
        if hidden:
            lines.append(f"  [{hidden} dynupdate agent frame(s) hidden; --verbose shows them]")
            hidden = 0
        lines.append(line)
    return "\n".join(lines)


def error(exc: Exception, verbose: bool = False) -> None:
    from .errors import DynupdateError

    err.print(f"[bold red]error:[/] {getattr(exc, 'message', str(exc))}", markup=True)
    if isinstance(exc, DynupdateError):
        if exc.remote and exc.remote.get("traceback"):
            err.print("[dim]target-side traceback:[/]", markup=True)
            err.print(user_traceback(exc.remote["traceback"], verbose), markup=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {exc.hint}", markup=True)


def status(data: Dict[str, Any]) -> None:
    agent = data.get("agent", {})
    out.print(f"[bold]pid {data['pid']}[/]  version [bold green]{data['version']}[/]  "
              f"generation {data['generation']}", markup=True)
    out.print(f"agent {agent.get('version')} on Python {agent.get('python')}, started {_when(agent.get('started_at'))}, "
              f"socket {agent.get('socket')}")
    hist = Table(title="Version history", title_justify="left")
    for col in ("#", "version", "bundle", "applied at", "rolled back at"):
        hist.add_column(col)
    for i, row in enumerate(data.get("history", [])):
        hist.add_row(str(i), row["version"], row["name"], _when(row.get("applied_at")),
                     _when(row.get("rolled_back_at")) if row.get("rolled_back_at") else "")
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
    """One row per process; the command (the program, launcher hidden) is cut to fit the width, never wrapped."""
    cells = [(str(r["pid"]), str(r["user"]), f"yes ({r['agent_version']})" if r["agent"] else "no",
              str(r.get("program") or r["cmdline"])) for r in rows]
    widths = [max([len(col)] + [len(c[i]) for c in cells]) for i, col in enumerate(("pid", "user", "agent"))]
    table = Table(title="Python processes", title_justify="left")
    for col, width in zip(("pid", "user", "agent"), widths):
        table.add_column(col, no_wrap=True, min_width=width)
    borders = 3 * 4 + 1  # "│ x " per column and the closing "│"
    table.add_column("command", no_wrap=True, overflow="ellipsis",
                     max_width=max(12, out.width - sum(widths) - borders))
    for row in cells:
        table.add_row(*row)
    out.print(table)


_PLAN_ORDER = ("updated", "replaced", "added", "removed", "kept", "new_modules")


def _plan(summary: Dict[str, Any], instances: int) -> None:
    """The human form of a dry run's plan: each category with its names."""
    out.print("plan:")
    for key in _PLAN_ORDER:
        names = summary.get(key) or []
        label = key.replace("_", " ")
        out.print(f"  {label:<12} {len(names):>4}  {', '.join(names) if names else '-'}", markup=False,
                  highlight=False)
    if summary.get("references_redirected"):
        out.print(f"  {'redirected':<12} {summary['references_redirected']:>4}  references to replaced functions",
                  markup=False)
    out.print(f"  {'instances':<12} {instances:>4}  to transfer", markup=False)


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
    if result.get("dry_run") and result.get("plan_summary"):
        _plan(result["plan_summary"], int(updated.get("instances", 0)))
    for w in result.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {escape(str(w))}", markup=True)


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


class PhaseMarks:
    """Progress of an update on stderr: a live line on a terminal, and a mark per finished phase.

    Each finished phase is marked once. Phases that change nothing in the
    target (prepare, safepoint) are marked as they finish; phases that do
    (swap, transfer) only once the target confirms the update landed, since
    a later failure undoes them. A failed update marks the phase it failed
    in with ✗ and nothing after it.
    """

    _HARMLESS = ("prepare", "safepoint")

    def __init__(self, console: Console) -> None:
        self.console = console
        self.marked: List[str] = []
        self.current: Optional[str] = None
        self._live = console.status("contacting the target…") if console.is_terminal else None

    def __enter__(self) -> "PhaseMarks":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def _mark(self, phase: str, symbol: str = "[green]✓[/]") -> None:
        if phase not in self.marked:
            self.marked.append(phase)
            self.console.print(f"  {symbol} {phase}", markup=True)

    def on_progress(self, event: Dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(describe_progress(event))
        done = event.get("done_phase")
        if done in self._HARMLESS:
            self._mark(done)
        self.current = event.get("phase") or self.current

    def succeeded(self, result: Dict[str, Any]) -> None:
        for phase in result.get("phases") or {}:
            self._mark(phase)

    def failed(self) -> None:
        if self.current and self.current not in self.marked:
            self._mark(self.current, "[red]✗[/]")
