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
import re
import sys
from typing import Any, Dict, List, Optional, Union

from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(highlight=False, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

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


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    try:
        return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return clean(ts)


def error(exc: Exception) -> None:
    from .errors import DynupdateError

    err.print(line(("error:", "bold red"), " ", txt(getattr(exc, "message", str(exc)), multiline=True)))
    if isinstance(exc, DynupdateError):
        if exc.remote and exc.remote.get("traceback"):
            err.print(Text("target-side traceback:", style="dim"))
            err.print(txt(str(exc.remote["traceback"]).rstrip(), multiline=True))
        if exc.hint:
            err.print(line(("hint:", "yellow"), " ", txt(exc.hint, multiline=True)))


def status(data: Dict[str, Any]) -> None:
    data = _dict(data)
    agent = _dict(data.get("agent"))
    out.print(line((f"pid {clean(data.get('pid'))}", "bold"), "  version ",
                   txt(data.get("version"), "bold green"), f"  generation {clean(data.get('generation'))}"))
    out.print(line("agent ", txt(agent.get("version")), " on Python ", txt(agent.get("python")),
                   f", started {_when(agent.get('started_at'))}, socket ", txt(agent.get("socket"))))
    hist = Table(title="Version history", title_justify="left")
    for col in ("#", "version", "bundle", "applied at"):
        hist.add_column(col)
    for i, row in enumerate(_rows(data.get("history"))):
        hist.add_row(str(i), txt(row.get("version")), txt(row.get("name")), _when(row.get("applied_at")))
    out.print(hist)
    threads = Table(title="Threads", title_justify="left")
    for col in ("id", "name", "generation", "in activity"):
        threads.add_column(col)
    for t in _rows(data.get("threads")):
        threads.add_row(txt(t.get("id")), txt(t.get("name")), txt(t.get("generation")),
                        "yes" if t.get("in_activity") else "no")
    out.print(threads)
    facts = Table(title="Factories (updatable classes)", title_justify="left")
    for col in ("class", "live instances", "pending lazy transfer"):
        facts.add_column(col)
    for f in _rows(data.get("factories")):
        facts.add_row(txt(f.get("class")), txt(f.get("instances")), txt(f.get("pending")))
    if not data.get("factories"):
        facts.add_row(Text("(none: the program has no @updatable classes)", style="dim"), "", "")
    out.print(facts)


def processes(rows: List[Dict[str, Any]]) -> None:
    table = Table(title="Python processes", title_justify="left")
    for col in ("pid", "user", "agent", "version", "command"):
        table.add_column(col)
    for r in rows:
        agent = line("yes (", txt(r["agent_version"]), ")") if r["agent"] else Text("no")
        version = txt(r["version"]) if r.get("version") is not None else Text("-")
        table.add_row(str(r["pid"]), txt(r["user"]), agent, version, txt(clean(r["cmdline"])[:200]))
    out.print(table)


def update_summary(result: Dict[str, Any], *, action: str) -> None:
    result = _dict(result)
    updated = _dict(result.get("updated"))
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
    warnings = result.get("warnings")
    for w in warnings if isinstance(warnings, list) else []:
        err.print(line(("warning:", "yellow"), " ", txt(w, multiline=True)))


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
