"""The `dynupdate` command line: a thin layer over the client library.

Every command raises dynupdate.errors types; `main()` is the one place that
turns them into messages and exit codes (0 ok, 1 failed in target, 2 usage,
3 unreachable, 4 no safe point in time).
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Dict, Optional

import click

from . import errors, streams

_json_output: Dict[str, Any] = {"enabled": False, "command": None, "pid": None, "verbose": False}



def pid_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--pid PID or --pidfile PATH (e.g. gunicorn's -p): the command receives the resolved `pid`."""
    @functools.wraps(command)
    def resolved(*args: Any, pid: Optional[int] = None, pidfile: Optional[str] = None, **kwargs: Any) -> Any:
        if pid is not None and pidfile is None:
            return command(*args, pid=pid, **kwargs)
        from .tree import resolve_pid

        return command(*args, pid=resolve_pid(pid, pidfile), **kwargs)

    resolved = click.option("--pidfile", type=click.Path(dir_okay=False), default=None,
                            help="Read the target's pid from this file (e.g. gunicorn's -p).")(resolved)
    return click.option("--pid", "-p", type=click.IntRange(min=1), default=None,
                        help="Process id of the target.")(resolved)


tree_option = click.option("--tree", is_flag=True, help="The process and all its descendants (a pre-fork "
                           "server's master and workers): master first, then workers until none is new.")


def rollout_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--canary/--canary-wait/--check/--keep-going (meaningful with --tree), passed as `rollout`."""
    @functools.wraps(command)
    def gathered(*args: Any, canary: int, canary_wait: float, check: Optional[str], keep_going: bool,
                 **kwargs: Any) -> Any:
        from .tree import RolloutOptions

        return command(*args, rollout=RolloutOptions(canary, canary_wait, check, keep_going), **kwargs)

    for decorator in (
        click.option("--keep-going", is_flag=True, help="With --tree: do not roll back on a failure, go on."),
        click.option("--check", metavar="CMD", default=None,
                     help="With --tree: a shell command that must exit 0 after the canary and at the end "
                          "(DYNUPDATE_PIDS in its environment); else everything is rolled back."),
        click.option("--canary-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="With --canary: seconds to wait after the canary workers before the rest."),
        click.option("--canary", type=click.IntRange(min=0), default=0, show_default=True,
                     help="With --tree: update this many workers first, then wait/check before the rest."),
    ):
        gathered = decorator(gathered)
    return gathered


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def _finite(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if value != value:  # NaN passes every range check
        raise click.BadParameter("must be a number of seconds")
    return value


timeout_option = click.option("--timeout", type=click.FloatRange(min=0.01, max=86400), default=10.0,
                              show_default=True, callback=_finite,
                              help="Seconds to wait for a safe point before giving up (exit 4, nothing changed).")
hook_timeout_option = click.option(
    "--hook-timeout", type=click.FloatRange(min=0.01, max=86400), default=None,
    help="Seconds the new module bodies, and separately the swap with every state transfer hook, may take "
         "(default 10); past it the update is undone, held calls continue on the old code (exit 1, HookTimeout).")
allow_stdlib_option = click.option("--allow-stdlib", is_flag=True,
                                   help="Allow patching standard-library modules (refused by default; "
                                        "the agent's own modules and msgpack are never allowed).")
verbose_option = click.option("--verbose", "-v", is_flag=True,
                              help="Show the agent's own frames in target-side tracebacks too.")
key_option = click.option("--key-file", type=click.Path(dir_okay=False), default=None,
                          help="Sign the bundle with this key (targets started with DYNUPDATE_KEY_FILE require it).")


def _set_json(as_json: bool, command: str, pid: Optional[int] = None, verbose: bool = False) -> None:
    _json_output.update(enabled=as_json, command=command, pid=pid, verbose=verbose)


def _notifier(as_json: bool) -> Callable[[str], None]:
    """What the CLI does to a process besides the request (an injection) is said on stderr, in every mode."""
    def notify(message: str) -> None:
        from . import render  # only when there is something to say: JSON runs never load rich otherwise

        render.err.print(render.txt(f"dynupdate: {message}", "cyan", multiline=True))
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
    Forms (pid, signals and exit status stay the program's own):
      dynupdate run app.py [args]
      dynupdate run -m pkg.mod [args]
      dynupdate run -c CODE [args]
      dynupdate run -- PYTHON [interpreter options] (app.py | -m pkg.mod | -c CODE) [args]
    Examples:
      dynupdate run app.py --port 8000
      dynupdate run -- /usr/bin/python3 -X dev -m myservice --port 8000
    The interpreter may be any CPython >= 3.9, even one without dynupdate installed.
    """
    from . import runner

    runner.run(list(args))


@cli.command()
@pid_option
@click.option("--inject-timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Seconds to wait for the injected agent to answer.")
@json_option
def attach(pid: int, inject_timeout: float, as_json: bool) -> None:
    """Get the agent into a running process (injection with gdb if needed).

    A no-op if the agent already runs. Injection waits for a thread at a safe
    point; success is confirmed by a hello over the agent's socket.

    \b
    Example:  dynupdate attach --pid 4242
    """
    from . import attach as attach_mod

    _set_json(as_json, "attach", pid)
    client, injected = attach_mod.connect(pid, notify=_notifier(as_json), inject_timeout=inject_timeout)
    with client:
        hello = client.hello()
    if as_json:
        streams.emit_json({"ok": True, "pid": pid, "injected": injected, "agent": hello})
    else:
        from . import render

        state = "injected and listening" if injected else "already running"
        render.out.print(render.line(f"agent {state} in pid {pid} (agent ", render.txt(hello.get("agent_version")),
                                     ", Python ", render.txt(hello.get("python")), ", socket ",
                                     render.txt(hello.get("socket")), ")"))


@cli.command()
@pid_option
@json_option
@click.option("--no-inject", is_flag=True, help="Fail (exit 3) instead of injecting an agent.")
@tree_option
def status(pid: int, as_json: bool, no_inject: bool, tree: bool) -> None:
    """Show a target's version, history, generation, threads and factories.

    Like `attach`, this injects an agent into a process that has none (said on
    stderr, in every mode); --no-inject looks without changing the process.

    \b
    Examples:
      dynupdate status --pid 4242
      dynupdate status --pid 4242 --json --no-inject | jq .version
      dynupdate status --pidfile /run/gunicorn.pid --tree    # one row per process, flags version skew
    """
    from . import attach as attach_mod

    _set_json(as_json, "status", pid)
    if tree:
        from . import tree as tree_mod

        return tree_mod.status_cli(pid, as_json=as_json, inject=not no_inject)
    client, _ = attach_mod.connect(pid, inject=not no_inject, notify=_notifier(as_json))
    with client:
        data = client.status()
    data.pop("ok", None)
    data.pop("id", None)
    if as_json:
        streams.emit_json(status_json(data))
    else:
        from . import render

        render.status(data)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects instead of a table.")
def ps(as_json: bool) -> None:
    """List the Python processes you can see, and which run an agent.

    The command column shows the program (for `dynupdate run app.py`, the
    launcher is hidden) and is cut to the terminal width. --json prints a list
    of objects. Sockets left by processes that no longer exist are removed
    from your own socket folders.

    \b
    Examples:
      dynupdate ps
      dynupdate ps --json | jq '.[] | select(.agent) | .pid'
    """
    from . import procs, stale

    _set_json(as_json, "ps")
    removed = stale.remove_stale_sockets()
    if removed:
        _notifier(as_json)(f"removed {len(removed)} socket(s) left by processes that no longer exist")
    rows = procs.python_processes()
    if as_json:
        streams.emit_json(rows)
    else:
        from . import render

        render.processes(rows)


@cli.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--pid", "-p", type=int, default=None,
              help="Also dry-run it in this process and report the callers at risk (changes nothing).")
@key_option
@allow_stdlib_option
@json_option
def check(bundle: str, pid: Optional[int], key_file: Optional[str], allow_stdlib: bool, as_json: bool) -> None:
    """Validate a patch bundle without contacting any process (exit 2 if invalid).

    With --pid, the bundle is also prepared in that process (a dry run) and
    the callers at risk are listed: functions, methods and classes the bundle
    removes or whose signature becomes incompatible, and the places outside
    the bundle that still refer to them.

    \b
    Examples:
      dynupdate check patches/cart-v2
      dynupdate check patches/cart-v2 --pid 4242 --json
    """
    from . import render
    from .bundle import load_bundle, read_key

    _set_json(as_json, "check", pid)
    loaded = load_bundle(bundle, key=read_key(key_file) if key_file else None, allow_stdlib=allow_stdlib)
    summary = {"ok": True, "name": loaded["name"], "version": loaded["version"], "requires": loaded["requires"],
               "lazy": loaded["lazy"], "new_modules": loaded.get("new_modules") or [],
               "modules": {m["name"]: m["sha256"] for m in loaded["modules"]},
               "signed": loaded["signature"] is not None}
    if pid is not None:
        from . import attach as attach_mod

        client, _ = attach_mod.connect(pid, notify=_notifier(as_json))
        with client:
            result = client.apply(loaded, dry_run=True)
        summary["target"] = update_json(result, pid)
    if as_json:
        streams.emit_json(summary)
        return
    if pid is not None:
        render.update_summary(summary["target"], action="apply")
    else:
        render.out.print(render.line("bundle ", render.txt(loaded["name"], "bold"), " -> version ",
                                     render.txt(loaded["version"], "bold"), " is valid"))
        for m in loaded["modules"]:
            render.out.print(render.txt(f"  {m['name']:<30} {m['file']:<24} sha256 {m['sha256'][:16]}…"))


@cli.command()
@click.argument("trees", nargs=-1, type=click.Path(file_okay=False, exists=True))
@click.option("--from", "from_rev", default=None, metavar="REV", help="Old revision (in a git checkout).")
@click.option("--to", "to_rev", default=None, metavar="REV", help="New revision [default: the working tree].")
@click.option("--root", "roots", multiple=True, metavar="DIR",
              help="A source root modules are imported from (repeatable) [default: src/ if present, else the top].")
@click.option("--name", default=None, help="Bundle name [default: build-VERSION].")
@click.option("--version", "version", default=None,
              help="Version label the process reports after apply [default: the new revision's short hash].")
@click.option("--requires", default=None, help="Refuse unless the process runs this version.")
@click.option("-o", "--output", "output", default=None, type=click.Path(), metavar="BUNDLE",
              help="Folder to write the bundle to (must not exist or be empty). Without it: report only.")
@click.option("--strict", is_flag=True, help="Exit 1, and write nothing, when any item of the report needs action.")
@click.option("--stub-transfer", is_flag=True,
              help="Write a commented __dynupdate_transfer__ skeleton into each class that needs one.")
@json_option
def build(trees: tuple, from_rev: Optional[str], to_rev: Optional[str], roots: tuple, name: Optional[str],
          version: Optional[str], requires: Optional[str], output: Optional[str], strict: bool,
          stub_transfer: bool, as_json: bool) -> None:
    """Build a bundle from a source diff, with a compatibility report.

    Changed .py files become bundle modules, named the way the program imports
    them. The report lists, per module, the functions changed/added/removed,
    classes whose __init__ sets attributes existing instances lack (with no
    __dynupdate_transfer__), module-level values that keep their live value,
    incompatible signatures, and changes the engine refuses.

    \b
    Examples:
      dynupdate build --from v1.4.0 -o /tmp/fix-bundle             # v1.4.0 -> working tree
      dynupdate build --from v1.4.0 --to v1.4.1 --requires base -o b
      dynupdate build old_src/ new_src/ --root . --version 2 -o b --strict
    """
    from . import build as build_mod
    from . import render

    _set_json(as_json, "build")
    if len(trees) not in (0, 2):
        raise errors.UsageError("give two folders OLD_TREE NEW_TREE, or --from REV [--to REV] in a git checkout")
    result = build_mod.build(from_rev=from_rev, to_rev=to_rev, old_tree=trees[0] if trees else None,
                             new_tree=trees[1] if trees else None, roots=roots, name=name, version=version,
                             requires=requires, out=output, stub=stub_transfer, strict=strict)
    if as_json:
        streams.emit_json(result.as_json())
    else:
        render.build_report(result)
    if strict and result.needs_action:
        raise errors.BuildNeedsAction(f"{result.needs_action} item(s) of the report need action; "
                                      f"no bundle was written (--strict)")


def _run_update(pid: int, as_json: bool, action: str, call: Callable[..., Dict[str, Any]],
                verbose: bool = False) -> None:
    """Send one update request and report the outcome the target has, whatever happens to us meanwhile."""
    from contextlib import ExitStack

    from . import attach as attach_mod
    from . import interrupt

    _set_json(as_json, action, pid, verbose)
    client, _ = attach_mod.connect(pid, notify=_notifier(as_json))
    if not as_json:
        from . import render
    marks = None if as_json else render.PhaseMarks(render.err)
    ctrl_c = interrupt.arm(client)
    with ExitStack() as stack:
        stack.enter_context(client)
        if marks is not None:
            stack.enter_context(marks)
        try:
            result = call(client, marks.on_progress if marks else None)
        except errors.RemoteError as exc:
            ctrl_c.finished = True
            if marks is not None:
                marks.failed()
            if ctrl_c.requested and (exc.remote or {}).get("type") == "ClientDisconnected":
                version = (exc.result or {}).get("version")
                raise errors.Interrupted(
                    f"interrupted (Ctrl-C): the {action} was abandoned; pid {pid} runs {version!r} unchanged",
                    remote=exc.remote, result=exc.result) from None
            raise
        except KeyboardInterrupt:
            ctrl_c.finished = True
            raise errors.Interrupted(
                f"interrupted again before pid {pid} answered: the outcome of the {action} is unknown",
                hint=f"check it with `dynupdate status --pid {pid}`") from None
        finally:
            ctrl_c.finished = True
        if marks is not None:
            marks.succeeded(result)
    if as_json:
        streams.emit_json(update_json(result, pid))
    else:
        render.update_summary(result, action=action)
    if ctrl_c.requested:
        from . import render

        render.err.print(render.line(("interrupted too late:", "yellow"),
                                     f" the {action} had already landed; pid {pid} runs ",
                                     render.txt(repr(result.get("version")))))


@cli.command()
@pid_option
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--lazy", is_flag=True, default=None,
              help="Transfer each instance's state on its first use instead of during the update.")
@timeout_option
@hook_timeout_option
@click.option("--dry-run", is_flag=True, help="Prepare and check everything in the target, report, change nothing.")
@click.option("--rehearse", is_flag=True,
              help="First run the whole update on a forked copy of the target; apply only if it passed.")
@click.option("--rehearse-only", is_flag=True, help="Rehearse on a forked copy and stop there (nothing changes).")
@key_option
@allow_stdlib_option
@json_option
@tree_option
@rollout_options
@verbose_option
def apply(pid: int, bundle: str, lazy: Optional[bool], timeout: float, hook_timeout: Optional[float], dry_run: bool,
          rehearse: bool, rehearse_only: bool, key_file: Optional[str], allow_stdlib: bool, as_json: bool, tree: bool,
          rollout: Any, verbose: bool) -> None:
    """Apply a patch bundle to a running process at a safe point.

    The bundle is validated here first (exit 2 if invalid). The agent is
    injected if none runs. Any failure leaves the target on its previous
    version with its state intact (exit 1; exit 4 if no safe point in time).
    Ctrl-C abandons the update if it has not landed yet and says which
    happened (exit 130 if abandoned). --dry-run prints the plan.

    \b
    Examples:
      dynupdate apply --pid 4242 patches/cart-v2
      dynupdate apply --pid 4242 patches/cart-v2 --lazy --timeout 30
      dynupdate apply --pid 4242 patches/cart-v2 --dry-run --json
      dynupdate apply --pidfile gunicorn.pid --tree --canary 1 --check 'curl -fs localhost:8000/health' patches/cart-v2
      dynupdate apply --pid 4242 patches/cart-v2 --rehearse      # try it on a forked copy first
    """
    from .bundle import load_bundle, read_key

    _set_json(as_json, "apply", pid, verbose)
    loaded = load_bundle(bundle, key=read_key(key_file) if key_file else None, lazy=lazy,
                         allow_stdlib=allow_stdlib)
    if dry_run and (rehearse or rehearse_only):
        raise errors.UsageError("--dry-run and --rehearse exclude each other")
    mode = "only" if rehearse_only else "first" if rehearse else None
    from . import tree as tree_mod

    tree_mod.require_tree(tree, rollout)
    if tree:
        _set_json(False, "tree", pid)  # the tree prints its own JSON object
        step = tree_mod.apply_step(loaded, lazy=lazy, timeout=timeout, dry_run=dry_run, allow_stdlib=allow_stdlib,
                                   rehearse=mode, hook_timeout=hook_timeout)
        return tree_mod.run_cli("apply", pid, step, rollout, as_json=as_json, timeout=timeout)
    _run_update(pid, as_json, "apply", lambda c, p: c.apply(
        loaded, lazy=lazy, timeout=timeout, dry_run=dry_run, on_progress=p, allow_stdlib=allow_stdlib,
        rehearse=mode, hook_timeout=hook_timeout), verbose)


@cli.command()
@pid_option
@click.option("--to", "to_version", default=None, help="Roll back every update after this version.")
@timeout_option
@hook_timeout_option
@json_option
@tree_option
@rollout_options
@verbose_option
def rollback(pid: int, to_version: Optional[str], timeout: float, hook_timeout: Optional[float], as_json: bool,
             tree: bool, rollout: Any, verbose: bool) -> None:
    """Undo the last update (or all updates back to --to VERSION; a no-op if already there).

    \b
    Examples:
      dynupdate rollback --pid 4242
      dynupdate rollback --pid 4242 --to base
      dynupdate rollback --pidfile gunicorn.pid --tree       # master first, then every worker
    """
    from . import tree as tree_mod

    tree_mod.require_tree(tree, rollout)
    step = tree_mod.rollback_step(to_version, timeout, hook_timeout)
    if tree:
        _set_json(False, "tree", pid)  # the tree prints its own JSON object
        return tree_mod.run_cli("rollback", pid, step, rollout, as_json=as_json, timeout=timeout)
    _run_update(pid, as_json, "rollback", step, verbose)


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo service running at the end (prints its pid).")
@click.option("--async", "use_async", is_flag=True,
              help="Demo an asyncio service instead: updated with requests in flight, the event loop never stops.")
def demo(keep: bool, use_async: bool) -> None:
    """Run the whole job on a bundled demo service: serve, patch, verify, roll back.

    Works from any install: the demo service and its bundle ship inside the
    package. Exits non-zero if any step misbehaves.

    \b
    Examples:
      dynupdate demo
      dynupdate demo --keep      # leave the service running to try the commands yourself
      dynupdate demo --async     # an asyncio service updated with requests in flight
    """
    from .demo import run_demo

    run_demo(keep=keep, use_async=use_async)


def _parse_duration(text: Optional[str]) -> Optional[float]:
    """'30s', '5m', '2h', '1d' or plain seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise errors.UsageError(f"--for {text!r}: give a duration such as 30s, 5m, 2h") from None
    if value <= 0:
        raise errors.UsageError("--for must be positive")
    return value


@cli.group()
def probe() -> None:
    """Live probes: log, count, time or capture calls of a running process, then remove them.

    \b
    Examples:
      dynupdate probe add --pid 4242 shop.cart:Cart.add --log "add {item} x{qty} -> {return}"
      dynupdate probe add --pid 4242 shop.cart:total --time --for 5m
      dynupdate probe add --pid 4242 pkg.views:Handler.get --capture --when "exception is not None"
      dynupdate probe list --pid 4242
      dynupdate probe show --pid 4242 p1 --follow
      dynupdate probe remove --pid 4242 --all
    """


@probe.command("add")
@pid_option
@click.argument("target")
@click.option("--log", "template", default=None, metavar="TEMPLATE",
              help="A record per call, formatted from the arguments by name, return, exception, duration_ms, "
                   "thread, task (e.g. \"add {item} -> {return}\").")
@click.option("--count", is_flag=True, help="Count calls, returns and exceptions.")
@click.option("--time", "timing", is_flag=True, help="Latency distribution (p50, p90, p99, max).")
@click.option("--capture", is_flag=True, help="Snapshot of arguments and locals at return or exception.")
@click.option("--when", default=None, metavar="EXPR", help="Record only calls where EXPR is true (same names; "
              "`result` for the return value).")
@click.option("--rate", type=click.FloatRange(min=0.001, max=100000), default=None,
              help="At most N log/capture records per second [default: 100]; the rest are counted as dropped.")
@click.option("--for", "duration", default=None, metavar="DURATION", help="Remove the probe after 30s, 5m, 2h...")
@key_option
@json_option
def probe_add(pid: int, target: str, template: Optional[str], count: bool, timing: bool, capture: bool,
              when: Optional[str], rate: Optional[float], duration: Optional[str], key_file: Optional[str],
              as_json: bool) -> None:
    """Install a probe on MODULE:QUALNAME (function, method, static/class method, property accessor).

    \b
    Example:  dynupdate probe add --pid 4242 shop.cart:Cart.add --count --time
    """
    from dynupdate_agent import probes as probes_mod

    from . import render
    from .bundle import read_key

    _set_json(as_json, "probe", pid)
    if not (template or count or timing or capture):
        raise errors.UsageError("say what to record: --log TEMPLATE, --count, --time and/or --capture")
    if when is not None:
        try:
            compile(when, "--when", "eval")
        except SyntaxError as exc:
            raise errors.UsageError(f"--when does not compile: {exc.msg}") from None
    spec = {"target": target, "log": template, "count": count, "time": timing, "capture": capture, "when": when,
            "rate": rate, "duration": _parse_duration(duration)}
    signature = probes_mod.sign(read_key(key_file), spec) if key_file else None
    reply = _probe_request(pid, as_json, "add", probe=spec, signature=signature)
    if as_json:
        streams.emit_json(reply)
    else:
        render.probe_added(reply["probe"])


def _probe_request(pid: int, as_json: bool, action: str, **fields: Any) -> Dict[str, Any]:
    from . import attach as attach_mod

    client, _ = attach_mod.connect(pid, notify=_notifier(as_json))
    with client:
        reply = client.probe(action, **fields)
    reply.pop("id", None)
    return reply


@probe.command("list")
@pid_option
@json_option
def probe_list(pid: int, as_json: bool) -> None:
    """List the probes of a process (active, and the last ones that ended).

    \b
    Example:  dynupdate probe list --pid 4242 --json
    """
    from . import render

    _set_json(as_json, "probe", pid)
    reply = _probe_request(pid, as_json, "list")
    if as_json:
        streams.emit_json(reply)
    else:
        render.probe_table(reply["probes"])


@probe.command("show")
@pid_option
@click.argument("probe_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they happen, until Ctrl-C.")
@json_option
def probe_show(pid: int, probe_id: str, follow: bool, as_json: bool) -> None:
    """Show a probe's counters, timings and records.

    \b
    Examples:
      dynupdate probe show --pid 4242 p1
      dynupdate probe show --pid 4242 p1 --follow --json    # one JSON record per line
    """
    import time as time_mod

    from . import attach as attach_mod
    from . import render

    _set_json(as_json, "probe", pid)
    client, _ = attach_mod.connect(pid, notify=_notifier(as_json))
    with client:
        reply = client.probe("show", probe_id=probe_id, since=0)
        reply.pop("id", None)
        if not follow:
            if as_json:
                streams.emit_json(reply)
            else:
                render.probe_detail(reply["probe"], reply["records"])
            return
        last = 0
        try:
            while True:
                for record in reply["records"]:
                    render.probe_record(record, as_json)
                    last = max(last, record["seq"])
                if reply["probe"]["state"] != "active":
                    render.err.print(f"probe {probe_id} ended: {reply['probe']['reason']}", markup=False)
                    return
                time_mod.sleep(0.2)
                reply = client.probe("show", probe_id=probe_id, since=last)
        except KeyboardInterrupt:
            return


@probe.command("remove")
@pid_option
@click.argument("probe_ids", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every probe.")
@json_option
def probe_remove(pid: int, probe_ids: tuple, remove_all: bool, as_json: bool) -> None:
    """Remove probes; each function gets back its exact original code object.

    \b
    Examples:
      dynupdate probe remove --pid 4242 p1 p3
      dynupdate probe remove --pid 4242 --all
    """
    from . import render

    _set_json(as_json, "probe", pid)
    if bool(probe_ids) == remove_all:
        raise errors.UsageError("give probe ids, or --all")
    reply = _probe_request(pid, as_json, "remove", ids="all" if remove_all else list(probe_ids))
    if as_json:
        streams.emit_json(reply)
    else:
        render.out.print(f"removed {', '.join(reply['removed']) or 'nothing (no probes)'}", markup=False)


def status_json(data: Dict[str, Any]) -> Dict[str, Any]:
    """The published JSON shape of `status --json`: exactly the keys of the schema (agent/wire.py)."""
    from dynupdate_agent import wire

    def pick(row: Any, keys: tuple) -> Dict[str, Any]:
        row = row if isinstance(row, dict) else {}
        return {key: row.get(key) for key in keys}

    def rows(value: Any, keys: tuple) -> list:
        return [pick(row, keys) for row in value] if isinstance(value, list) else []

    obj = pick(data, wire.STATUS_KEYS)
    obj["history"] = rows(data.get("history"), wire.HISTORY_KEYS)
    update: Dict[str, Any] = data["update"] if isinstance(data.get("update"), dict) else {}
    running, stuck = update.get("running"), update.get("stuck")
    obj["update"] = {"running": pick(running, wire.RUNNING_UPDATE_KEYS) if isinstance(running, dict) else None,
                     "stuck": [str(s) for s in stuck] if isinstance(stuck, list) else []}
    obj["threads"] = [dict(t, in_activity=bool(t["in_activity"])) for t in rows(data.get("threads"), wire.THREAD_KEYS)]
    obj["factories"] = [dict(f, pending=f["pending"] or 0) for f in rows(data.get("factories"), wire.FACTORY_KEYS)]
    obj["agent"] = pick(data.get("agent"), wire.STATUS_AGENT_KEYS)
    obj["tasks"] = rows(data.get("tasks"), wire.TASK_KEYS)
    obj["probes"] = rows(data.get("probes"), wire.PROBE_KEYS)
    return obj


def update_json(result: Optional[Dict[str, Any]], pid: Optional[int],
                error: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The published JSON shape of apply/rollback, for success and failure alike (keys: wire.RESULT_KEYS)."""
    from dynupdate_agent import wire

    result = result or {}
    values: Dict[str, Any] = {
        "ok": error is None and bool(result.get("ok", True)),
        "pid": pid,
        "version": result.get("version"),
        "previous_version": result.get("previous_version"),
        "phases": result.get("phases") or {},
        "updated": result.get("updated") or {"functions": 0, "classes": 0, "instances": 0, "modules": []},
        "warnings": result.get("warnings") or [],
        "error": error,
    }
    obj = {key: values[key] for key in wire.RESULT_KEYS}
    for key in ("dry_run", "plan", "plan_summary", "planned_version", "bundle", "rehearsal", "rehearsal_only",
                "callers_at_risk"):
        if key in result:
            obj[key] = result[key]
    return obj


def _report(exc: errors.DynupdateError) -> None:
    from . import render

    if _json_output["enabled"]:
        if _json_output["command"] in ("apply", "rollback"):
            streams.emit_json(update_json(exc.result, _json_output["pid"], error=exc.as_json()))
        else:
            streams.emit_json({"ok": False, "pid": _json_output["pid"], "error": exc.as_json()})
    render.error(exc, verbose=bool(_json_output["verbose"]))


def _exit_code(argv: Optional[list]) -> int:
    try:
        cli.main(args=argv, prog_name="dynupdate", standalone_mode=False)
    except errors.DynupdateError as exc:
        _report(exc)
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except click.ClickException as exc:
        exc.show(file=streams.stderr)  # type: ignore[arg-type]
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        _report(errors.Interrupted("interrupted (Ctrl-C) before any update request was sent",
                                   hint="no update was sent; if an agent was being injected, "
                                        "`dynupdate status --pid PID --no-inject` tells whether it runs"))
        return 130
    return 0


def main(argv: Optional[list] = None) -> None:
    """Console entry point: run the CLI and map errors to exit codes, here and only here.

    The exit code describes the target: output streams that went away (a pipe
    closed by `head`) are silenced, never allowed to change it.
    """
    code = _exit_code(argv)
    streams.settle()
    sys.exit(code)
