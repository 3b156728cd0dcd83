"""The `dynupdate` command line: a thin layer over the client library.

Every command raises dynupdate.errors types; `main()` is the one place that
turns them into messages and exit codes (0 ok, 1 failed in target, 2 usage,
3 unreachable, 4 no safe point in time).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional

import click

from . import errors

_json_output = {"enabled": False, "command": None, "pid": None}

pid_option = click.option("--pid", "-p", type=int, required=True, help="Process id of the target.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0.01), default=10.0, show_default=True,
                              help="Seconds to wait for a safe point before giving up (exit 4, nothing changed).")
hook_timeout_option = click.option(
    "--hook-timeout", type=click.FloatRange(min=0.01, max=86400), default=None,
    help="Seconds the new module bodies, and separately the swap with every state transfer hook, may take "
         "(default 10); past it the update is undone, held calls continue on the old code (exit 1, HookTimeout).")
key_option = click.option("--key-file", type=click.Path(dir_okay=False), default=None,
                          help="Sign the bundle with this key (targets started with DYNUPDATE_KEY_FILE require it).")


def _set_json(as_json: bool, command: str, pid: Optional[int] = None) -> None:
    _json_output.update(enabled=as_json, command=command, pid=pid)


def _notifier(as_json: bool) -> Callable[[str], None]:
    from . import render

    def notify(message: str) -> None:
        if not as_json:
            render.err.print(f"[cyan]{message}[/]", markup=True)
    return notify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynupdate")
def cli() -> None:
    """Live-patch running Python processes: new code in, state kept, no restart.

    \b
    Typical session:
      dynupdate run -m myservice --port 8000     # or: dynupdate attach --pid PID
      dynupdate ps                               # find the pid
      dynupdate check patches/cart-v2            # validate a bundle offline
      dynupdate apply --pid PID patches/cart-v2  # hot-swap at a safe point
      dynupdate status --pid PID                 # version, history, threads
      dynupdate rollback --pid PID               # back to the previous version
      dynupdate demo                             # see it all on a demo service

    Exit codes: 0 ok, 1 rejected/failed in the target (unchanged), 2 usage or
    invalid input, 3 target unreachable, 4 no safe point within --timeout.
    """


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def run(args: tuple) -> None:
    """Run a Python program with the agent listening before its code starts.

    \b
    Three forms (pid, signals and exit status stay the program's own):
      dynupdate run app.py [args]
      dynupdate run -m pkg.mod [args]
      dynupdate run -- PYTHON [interpreter options] (app.py | -m pkg.mod) [args]
    e.g. dynupdate run -- /usr/bin/python3 -X dev -m myservice --port 8000
    The interpreter may be any CPython >= 3.9, even one without dynupdate installed.
    """
    from . import runner

    runner.run(list(args))


@cli.command()
@pid_option
@click.option("--inject-timeout", type=float, default=20.0, show_default=True,
              help="Seconds to wait for the injected agent to answer.")
@json_option
def attach(pid: int, inject_timeout: float, as_json: bool) -> None:
    """Get the agent into a running process (injection with gdb if needed).

    A no-op if the agent already runs. Injection waits for a thread at a safe
    point; success is confirmed by a hello over the agent's socket.

    \b
    Example:  dynupdate attach --pid 4242
    """
    from . import attach as attach_mod, render

    _set_json(as_json, "attach", pid)
    client, injected = attach_mod.connect(pid, notify=_notifier(as_json), inject_timeout=inject_timeout)
    with client:
        hello = client.hello()
    if as_json:
        render.emit_json({"ok": True, "pid": pid, "injected": injected, "agent": hello})
    else:
        state = "injected and listening" if injected else "already running"
        render.out.print(f"agent {state} in pid {pid} (agent {hello['agent_version']}, "
                         f"Python {hello['python']}, socket {hello['socket']})")


@cli.command()
@pid_option
@json_option
@click.option("--no-inject", is_flag=True, help="Fail (exit 3) instead of injecting an agent.")
def status(pid: int, as_json: bool, no_inject: bool) -> None:
    """Show a target's version, history, generation, threads and factories.

    \b
    Example:  dynupdate status --pid 4242 --json | jq .version
    """
    from . import attach as attach_mod, render

    _set_json(as_json, "status", pid)
    client, _ = attach_mod.connect(pid, inject=not no_inject, notify=_notifier(as_json))
    with client:
        data = client.status()
    data.pop("ok", None)
    data.pop("id", None)
    if as_json:
        render.emit_json(status_json(data))
    else:
        render.status(data)


@cli.command()
@json_option
def ps(as_json: bool) -> None:
    """List the Python processes you can see, and which run an agent."""
    from . import procs, render

    _set_json(as_json, "ps")
    rows = procs.python_processes()
    if as_json:
        render.emit_json(rows)
    else:
        render.processes(rows)


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@key_option
@json_option
def check(bundle: str, key_file: Optional[str], as_json: bool) -> None:
    """Validate a patch bundle without contacting any process (exit 2 if invalid).

    \b
    Example:  dynupdate check patches/cart-v2
    """
    from . import render
    from .bundle import load_bundle, read_key

    _set_json(as_json, "check")
    loaded = load_bundle(bundle, key=read_key(key_file) if key_file else None)
    summary = {"ok": True, "name": loaded["name"], "version": loaded["version"], "requires": loaded["requires"],
               "lazy": loaded["lazy"], "modules": {m["name"]: m["sha256"] for m in loaded["modules"]},
               "signed": loaded["signature"] is not None}
    if as_json:
        render.emit_json(summary)
    else:
        render.out.print(f"bundle [bold]{loaded['name']}[/] -> version [bold]{loaded['version']}[/] is valid",
                         markup=True)
        for m in loaded["modules"]:
            render.out.print(f"  {m['name']:<30} {m['file']:<24} sha256 {m['sha256'][:16]}…")


def _progress_printer(as_json: bool):
    from . import render

    if as_json:
        return None, None
    status_line = render.err.status("contacting the target…")

    def on_progress(event: Dict[str, Any]) -> None:
        text = render.describe_progress(event)
        status_line.update(text)
        if event.get("done_phase"):
            render.err.print(f"  [green]✓[/] {event['done_phase']}", markup=True)
    return status_line, on_progress


def _run_update(pid: int, as_json: bool, action: str, call: Callable[..., Dict[str, Any]]) -> None:
    from . import attach as attach_mod, render

    _set_json(as_json, action, pid)
    client, _ = attach_mod.connect(pid, notify=_notifier(as_json))
    status_line, on_progress = _progress_printer(as_json)
    with client:
        if status_line is None:
            result = call(client, on_progress)
        else:
            with status_line:
                result = call(client, on_progress)
    if as_json:
        render.emit_json(update_json(result, pid))
    else:
        render.update_summary(result, action=action)


@cli.command()
@pid_option
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--lazy", is_flag=True, default=None,
              help="Transfer each instance's state on its first use instead of during the update.")
@timeout_option
@hook_timeout_option
@click.option("--dry-run", is_flag=True, help="Prepare and check everything in the target, report, change nothing.")
@key_option
@json_option
def apply(pid: int, bundle: str, lazy: Optional[bool], timeout: float, hook_timeout: Optional[float],
          dry_run: bool, key_file: Optional[str], as_json: bool) -> None:
    """Apply a patch bundle to a running process at a safe point.

    The bundle is validated here first (exit 2 if invalid). The agent is
    injected if none runs. Any failure leaves the target on its previous
    version with its state intact (exit 1; exit 4 if no safe point in time).

    \b
    Examples:
      dynupdate apply --pid 4242 patches/cart-v2
      dynupdate apply --pid 4242 patches/cart-v2 --lazy --timeout 30
      dynupdate apply --pid 4242 patches/cart-v2 --dry-run --json
    """
    from .bundle import load_bundle, read_key

    _set_json(as_json, "apply", pid)
    loaded = load_bundle(bundle, key=read_key(key_file) if key_file else None)
    _run_update(pid, as_json, "apply", lambda c, p: c.apply(
        loaded, lazy=lazy, timeout=timeout, hook_timeout=hook_timeout, dry_run=dry_run, on_progress=p))


@cli.command()
@pid_option
@click.option("--to", "to_version", default=None, help="Roll back every update after this version.")
@timeout_option
@hook_timeout_option
@json_option
def rollback(pid: int, to_version: Optional[str], timeout: float, hook_timeout: Optional[float],
             as_json: bool) -> None:
    """Undo the last update (or all updates back to --to VERSION).

    \b
    Examples:
      dynupdate rollback --pid 4242
      dynupdate rollback --pid 4242 --to base
    """
    _run_update(pid, as_json, "rollback", lambda c, p: c.rollback(to=to_version, timeout=timeout,
                                                                  hook_timeout=hook_timeout, on_progress=p))


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo service running at the end (prints its pid).")
def demo(keep: bool) -> None:
    """Run the whole job on a bundled demo service: serve, patch, verify, roll back."""
    from .demo import run_demo

    run_demo(keep=keep)


def status_json(data: Dict[str, Any]) -> Dict[str, Any]:
    """The published JSON shape of `status --json`: exactly these keys, whatever else the agent sends."""
    agent = data.get("agent") or {}
    return {
        "pid": data.get("pid"),
        "version": data.get("version"),
        "history": [{"name": h.get("name"), "version": h.get("version"), "applied_at": h.get("applied_at")}
                    for h in data.get("history") or []],
        "generation": data.get("generation"),
        "update": data.get("update") or {"running": None, "stuck": []},
        "threads": [{"id": t.get("id"), "name": t.get("name"), "generation": t.get("generation"),
                     "in_activity": bool(t.get("in_activity"))} for t in data.get("threads") or []],
        "factories": [{"class": f.get("class"), "instances": f.get("instances"), "pending": f.get("pending", 0)}
                      for f in data.get("factories") or []],
        "agent": {"version": agent.get("version"), "python": agent.get("python"),
                  "started_at": agent.get("started_at"), "socket": agent.get("socket")},
    }


def update_json(result: Optional[Dict[str, Any]], pid: Optional[int],
                error: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The published JSON shape of apply/rollback, for success and failure alike."""
    result = result or {}
    obj: Dict[str, Any] = {
        "ok": error is None and bool(result.get("ok", True)),
        "pid": pid,
        "version": result.get("version"),
        "previous_version": result.get("previous_version"),
        "phases": result.get("phases") or {},
        "updated": result.get("updated") or {"functions": 0, "classes": 0, "instances": 0, "modules": []},
        "warnings": result.get("warnings") or [],
        "error": error,
    }
    for key in ("dry_run", "plan", "planned_version", "bundle"):
        if key in result:
            obj[key] = result[key]
    return obj


def _report(exc: errors.DynupdateError) -> None:
    from . import render

    if _json_output["enabled"]:
        if _json_output["command"] in ("apply", "rollback"):
            render.emit_json(update_json(exc.result, _json_output["pid"], error=exc.as_json()))
        else:
            render.emit_json({"ok": False, "pid": _json_output["pid"], "error": exc.as_json()})
    render.error(exc)


def main(argv: Optional[list] = None) -> None:
    """Console entry point: run the CLI and map errors to exit codes, here and only here."""
    try:
        cli.main(args=argv, prog_name="dynupdate", standalone_mode=False)
    except errors.DynupdateError as exc:
        _report(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
