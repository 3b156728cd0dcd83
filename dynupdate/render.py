"""How results look in a terminal (rich). Only the CLI imports this module.

Everything a target (or another user's process) supplies — argv, versions,
bundle and module names, thread names, error messages, tracebacks — is
untrusted: it is shown as text, never parsed as rich markup, and its control
characters are shown as escapes (`\\x1b`), so it can neither crash the CLI
(`[/]`) nor drive the terminal (escape sequences). The consoles default to
`markup=False`; the CLI's own styled words are built with `Text.assemble`.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Union

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import streams

#: width when the output is not a terminal and COLUMNS is unset: long values (digests, paths) stay on one line
UNWRAPPED = 4096


def _width(stream: streams.Guarded) -> Optional[int]:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if stream.isatty() else UNWRAPPED


# target-supplied strings are printed as text, never as markup (see `txt`); our own styling uses Text too
out = Console(file=streams.stdout, highlight=False, markup=False, emoji=False,  # type: ignore[arg-type]
              width=_width(streams.stdout))
err = Console(file=streams.stderr, highlight=False, markup=False, emoji=False,  # type: ignore[arg-type]
              width=_width(streams.stderr))

# C0 and C1 controls, DEL, and the invisible characters that reorder or hide text
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_CONTROL_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                                    "\u2060-\u2069\ufeff]")


def _escape_char(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: Any, multiline: bool = False) -> str:
    """A target-supplied value as a printable string: control characters become escapes."""
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL_KEEP_NEWLINES if multiline else _CONTROL).sub(_escape_char, text)


def txt(value: Any, style: str = "", multiline: bool = False) -> Text:
    """A target-supplied value as a rich Text: never markup, control characters escaped."""
    return Text(clean(value, multiline), style=style)


Part = Union[str, Text, tuple]


def line(*parts: Part) -> Text:
    """Our own words (str, or (str, style)) and untrusted values (Text from `txt`) on one line."""
    return Text.assemble(*parts)


def _dict(value: Any) -> Dict[str, Any]:
    """A reply part that should be a map; anything else (a hostile or broken agent) counts as empty."""
    return value if isinstance(value, dict) else {}


def _rows(value: Any) -> List[Dict[str, Any]]:
    """A reply part that should be a list of maps; other entries are shown as empty rows."""
    return [_dict(row) for row in value] if isinstance(value, list) else []


emit_json = streams.emit_json


def _when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    try:
        return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return clean(ts)


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

    err.print(line(("error:", "bold red"), " ", txt(getattr(exc, "message", str(exc)), multiline=True)))
    if isinstance(exc, DynupdateError):
        if exc.remote and exc.remote.get("traceback"):
            err.print(Text("target-side traceback:", style="dim"))
            err.print(txt(user_traceback(str(exc.remote["traceback"]), verbose).rstrip(), multiline=True))
        if exc.hint:
            err.print(line(("hint:", "yellow"), " ", txt(exc.hint, multiline=True)))


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
    data = _dict(data)
    agent = _dict(data.get("agent"))
    out.print(line((f"pid {clean(data.get('pid'))}", "bold"), "  version ",
                   txt(data.get("version"), "bold green"), f"  generation {clean(data.get('generation'))}"))
    out.print(line("agent ", txt(agent.get("version")), " on Python ", txt(agent.get("python")),
                   f", started {_when(agent.get('started_at'))}, socket ", txt(agent.get("socket"))))
    _update_state(data.get("update") or {})
    hist = Table(title="Version history", title_justify="left")
    for col in ("#", "version", "bundle", "applied at", "rolled back at"):
        hist.add_column(col)
    for i, row in enumerate(_rows(data.get("history"))):
        hist.add_row(str(i), txt(row.get("version")), txt(row.get("name")), _when(row.get("applied_at")),
                     _when(row.get("rolled_back_at")) if row.get("rolled_back_at") else "")
    out.print(hist)
    threads = Table(title="Threads", title_justify="left")
    for col in ("id", "name", "generation", "in activity"):
        threads.add_column(col)
    for t in _rows(data.get("threads")):
        threads.add_row(txt(t.get("id")), txt(t.get("name")), txt(t.get("generation")),
                        "yes" if t.get("in_activity") else "no")
    out.print(threads)
    if data.get("tasks"):  # asyncio: live tasks and activities per generation
        tasks = Table(title="asyncio tasks", title_justify="left")
        for col in ("generation", "tasks", "in activity"):
            tasks.add_column(col)
        for t in data["tasks"]:
            tasks.add_row(str(t["generation"]), str(t["tasks"]), str(t["activities"]))
        out.print(tasks)
    facts = Table(title="Factories (updatable classes)", title_justify="left")
    for col in ("class", "live instances", "pending lazy transfer"):
        facts.add_column(col)
    for f in _rows(data.get("factories")):
        facts.add_row(txt(f.get("class")), txt(f.get("instances")), txt(f.get("pending")))
    if not data.get("factories"):
        facts.add_row(Text("(none: the program has no @updatable classes)", style="dim"), "", "")
    out.print(facts)


def processes(rows: List[Dict[str, Any]]) -> None:
    """One row per process; the command (the program, launcher hidden) is cut to fit the width from the
    left, keeping the script and its arguments, never wrapped."""
    cells = [(str(r["pid"]), clean(r["user"]), clean(f"yes ({r['agent_version']})") if r["agent"] else "no",
              clean(r["version"]) if r.get("version") is not None else "-",
              clean(r.get("program") or r["cmdline"])) for r in rows]
    widths = [max([len(col)] + [len(c[i]) for c in cells])
              for i, col in enumerate(("pid", "user", "agent", "version"))]
    table = Table(title="Python processes", title_justify="left")
    for col, width in zip(("pid", "user", "agent", "version"), widths):
        table.add_column(col, no_wrap=True, min_width=width)
    borders = 3 * 5 + 1  # "│ x " per column and the closing "│"
    room = max(12, out.width - sum(widths) - borders)
    table.add_column("command", no_wrap=True, overflow="ellipsis", max_width=room)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row[:-1]), Text(_keep_end(row[-1], room)))
    out.print(table)


def _keep_end(command: str, room: int) -> str:
    """A command cut from the left: the script and its arguments are what tells processes apart."""
    return command if len(command) <= room else "…" + command[len(command) - room + 1:]


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
    result = _dict(result)
    updated = _dict(result.get("updated"))
    rehearsal = _dict(result.get("rehearsal"))
    if rehearsal:
        out.print(f"rehearsal on a forked copy passed in {float(rehearsal.get('seconds') or 0) * 1000:.0f} ms")
    if result.get("rehearsal_only"):
        out.print(line(f"rehearsal only: pid {clean(result.get('pid'))} still runs ",
                       txt(result.get("previous_version")), "; ", txt(result.get("planned_version")),
                       " would apply"))
        return
    if result.get("dry_run"):
        out.print(line(("dry run", "bold"), f": {action} would take pid {clean(result.get('pid'))} from ",
                       txt(result.get("previous_version"), "bold"), " to ",
                       txt(result.get("planned_version"), "bold"), "; nothing was changed"))
    else:
        out.print(line((f"{action} done", "bold green"), f": pid {clean(result.get('pid'))} ",
                       txt(result.get("previous_version")), " -> ", txt(result.get("version"), "bold")))
    table = Table(show_header=False, box=None)
    modules = updated.get("modules")
    table.add_row("modules", txt(", ".join(map(str, modules if isinstance(modules, list) else [])) or "-"))
    table.add_row("functions", txt(updated.get("functions", 0)))
    table.add_row("classes", txt(updated.get("classes", 0)))
    table.add_row("instances", txt(str(updated.get("instances", 0)) +
                  (f" ({updated.get('lazy_pending')} pending lazy transfer)" if updated.get("lazy_pending") else "")))
    phases = _dict(result.get("phases"))
    try:
        shown = ", ".join(f"{k} {float(v) * 1000:.1f} ms" for k, v in phases.items())
    except (TypeError, ValueError):
        shown = str(phases)
    table.add_row("phases", txt(shown))
    out.print(table)
    if result.get("dry_run") and isinstance(result.get("plan_summary"), dict):
        _plan(result["plan_summary"], int(updated.get("instances", 0)))
    warnings = result.get("warnings")
    for w in warnings if isinstance(warnings, list) else []:
        err.print(line(("warning:", "yellow"), " ", txt(w, multiline=True)))
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
        out.print(txt(f"  {item['name']}: {item['change']}"))
        for place in item["callers"] or ["(no reference found outside the bundle)"]:
            out.print(txt(f"      {place}"))


def describe_progress(event: Dict[str, Any]) -> Text:
    """One line for a progress event, as Text (never markup: names in it come from the target)."""
    try:
        return txt(_progress_words(event))
    except (TypeError, ValueError, AttributeError):  # a malformed event from a hostile target
        return txt(event.get("phase", "?"))


def _progress_words(event: Dict[str, Any]) -> str:
    """The engine decides the fields, we only phrase them."""
    phase = event.get("phase", "?")
    if phase == "safepoint":
        waiting = event.get("waiting_on") or []
        held = event.get("held", 0)
        detail = "; ".join(map(str, waiting[:3])) + (" ..." if len(waiting) > 3 else "")
        return (f"waiting for a safe point ({event.get('elapsed', 0):.1f}s"
                f"{', ' + str(held) + ' call(s) held' if held else ''})" + (f": {detail}" if detail else ""))
    if phase == "transfer" and "done" in event:
        return f"transferring state: {event.get('done', 0)}/{event.get('total', 0)} instances"
    return str(event.get("message") or phase)


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

    def _mark(self, phase: str, symbol: str = "✓", style: str = "green") -> None:
        if phase not in self.marked:
            self.marked.append(phase)
            self.console.print(line("  ", (symbol, style), " ", txt(phase)))

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
            self._mark(self.current, "✗", "red")


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
