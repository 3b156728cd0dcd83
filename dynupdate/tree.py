"""Process trees: a pre-fork server (master + workers) updated, checked or rolled back as one.

Pre-fork servers (gunicorn, uWSGI) run a master that forks workers, restarts
them when they die or reach --max-requests, and may import the application in
the master first (--preload). A rollout here goes:

1. the master first, so that every worker it forks from then on starts on the
   new code (the agent makes forks during the update safe, see agent/forking.py);
2. then its descendants, found again until a pass finds no new pid, so workers
   forked meanwhile are caught (agents are injected where none runs);
3. with `canary`, after that many workers it stops and waits `canary_wait`
   seconds and/or for the `check` command to exit 0 (DYNUPDATE_PIDS in its
   environment) before the rest; the check runs again at the end;
4. on the first failure (apply error, safe-point timeout, failed check) the pids
   already updated in this run are rolled back to where they were, unless
   `keep_going`. Exit code: 0 all ok, 1 failed (and rolled back), 3 master
   unreachable, 4 no safe point somewhere (and rolled back).

Every step is idempotent: a pid already at the bundle's name and version, or
already at the `--to` version of a rollback, counts as done, so re-running a
rollout after a partial failure converges. Nothing here talks to a target but
through the client library.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from . import errors
from .client import Client

#: how long a --check command may run before it counts as failed (seconds)
CHECK_TIMEOUT = 60.0
#: how long to wait for the agent a newly forked worker inherits to come up (seconds)
AGENT_BIRTH_WAIT = 3.0
#: a worker whose agent is unreachable may be exiting (max-requests): how long to wait to tell (seconds)
EXIT_WAIT = 3.0
#: safety bound on rediscovery passes (each pass only processes pids not seen yet)
MAX_PASSES = 50

Notify = Callable[[str], None]
Step = Callable[[Client, Optional[Callable[[Dict[str, Any]], None]]], Dict[str, Any]]


class TreeFailed(errors.DynupdateError):
    """A tree operation failed somewhere; its exit code is decided by what failed."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RolloutOptions:
    canary: int = 0
    canary_wait: float = 0.0
    check: Optional[str] = None
    keep_going: bool = False


def read_pidfile(path: str) -> int:
    """The pid in a pidfile such as gunicorn's `-p` writes (one integer).

    The pidfile often lies in a folder the target's user can write, so it is
    read like a bundle file: a regular file only (no link, fifo or device, so
    nothing can hang us or make us read another file), at most 64 bytes, and
    its content is never echoed.
    """
    from .bundle import read_regular_file

    data = read_regular_file(path, "the pidfile", 64)
    try:
        pid = int(data.decode("ascii").split()[0])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise errors.UsageError(f"the pidfile {path} does not hold a pid (one decimal number)") from None
    if pid <= 0:
        raise errors.UsageError(f"the pidfile {path} holds an invalid pid {pid}")
    return pid


def resolve_pid(pid: Optional[int], pidfile: Optional[str]) -> int:
    """--pid or --pidfile, exactly one of them."""
    if pid is not None and pidfile is not None:
        raise errors.UsageError("give either --pid or --pidfile, not both")
    if pidfile is not None:
        return read_pidfile(pidfile)
    if pid is None:
        raise errors.UsageError("which process? give --pid PID or --pidfile PATH")
    return pid


def descendants(master: int) -> List[int]:
    """Python processes below `master`, oldest first (gone ones are skipped)."""
    import psutil

    from .attach import _looks_like_python

    try:
        children = psutil.Process(master).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found: List[Tuple[float, int]] = []
    for child in children:
        try:
            exe = ""
            try:
                exe = child.exe()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                pass
            if child.status() == psutil.STATUS_ZOMBIE or not _looks_like_python(child.pid, child.name(), exe):
                continue
            found.append((child.create_time(), child.pid))
        except psutil.NoSuchProcess:
            continue
    return [pid for _, pid in sorted(found)]


def _born_after(pid: int, since: float) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).create_time() >= since - 0.05)
    except psutil.NoSuchProcess:
        return False


def _wait_for_socket(pid: int, timeout: float) -> None:
    from .client import agent_socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        try:
            if os.path.exists(agent_socket(pid)):
                return
        except errors.NoSuchProcess:
            return
        time.sleep(0.02)


@contextlib.contextmanager
def _watch(pid: int, client: Client) -> Iterator[None]:
    """While talking to pid: if it exits (a worker restarted by its server), end the wait at once."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            if not _alive(pid):
                _hang_up(client)
                return

    watcher = threading.Thread(target=watch, name=f"dynupdate-watch-{pid}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _hang_up(client: Client) -> None:
    """Unblock a request in progress on `client` (its reader then sees the connection end)."""
    sock = getattr(client, "_sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _exits_within(pid: int, timeout: float) -> bool:
    """True if pid is gone now or within `timeout` (a worker that lost its agent while exiting)."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- one pid --------------------------------------------------------------------------

def apply_step(bundle: Dict[str, Any], **kwargs: Any) -> Step:
    """Apply `bundle` to one pid; a pid whose last update is this bundle is already done."""
    def step(client: Client, on_progress: Optional[Callable[[Dict[str, Any]], None]]) -> Dict[str, Any]:
        status = client.status()
        if _runs(status, bundle["name"], bundle["version"]):
            return {"ok": True, "pid": client.pid, "version": status.get("version"),
                    "previous_version": status.get("version"), "already": True}
        return client.apply(bundle, on_progress=on_progress, **kwargs)
    return step


def _runs(status: Dict[str, Any], name: str, version: str) -> bool:
    """Whether the process runs this bundle now: its version, and its latest update still in
    effect (history entries that were rolled back stay listed, marked `rolled_back_at`)."""
    live = [h for h in status.get("history") or [] if not h.get("rolled_back_at")]
    last = live[-1] if live else {}
    return status.get("version") == version and last.get("name") == name and last.get("version") == version


def rollback_step(to: Optional[str], timeout: float, hook_timeout: Optional[float] = None) -> Step:
    """Roll one pid back (to `to`); a pid already at `to` is already done."""
    def step(client: Client, on_progress: Optional[Callable[[Dict[str, Any]], None]]) -> Dict[str, Any]:
        if to is not None:
            version = client.status().get("version")
            if version == to:
                return {"ok": True, "pid": client.pid, "version": version, "previous_version": version,
                        "already": True}
        return client.rollback(to=to, timeout=timeout, on_progress=on_progress, hook_timeout=hook_timeout)
    return step


# --- the tree ---------------------------------------------------------------------------

class Rollout:
    """One apply or rollback over a master and its descendants; `run()` returns the JSON object."""

    def __init__(self, master: int, action: str, step: Step, options: RolloutOptions, *,
                 connect: Callable[[int], Client], timeout: float, notify: Notify,
                 on_progress: Optional[Callable[[int, str, Dict[str, Any]], None]] = None,
                 undo_timeout: float = 10.0) -> None:
        self.master, self.action, self.step, self.options = master, action, step, options
        self.connect, self.timeout, self.notify = connect, timeout, notify
        self.on_progress = on_progress
        self.undo_timeout = undo_timeout
        self.rows: Dict[int, Dict[str, Any]] = {}
        self.changed: List[int] = []       # pids this run moved to another version, in order
        self.rolled_back: List[int] = []
        self.exit_code = 0
        self.master_changed = False
        self.master_previous: Optional[str] = None
        self.master_version: Optional[str] = None
        self.failure: Optional[str] = None  # the first failed step or check, in words
        self.master_agent_since: Optional[float] = None  # when the master's agent started (wall clock)

    # -- per pid -------------------------------------------------------------------------
    def _do(self, pid: int, role: str) -> bool:
        """Run the step on pid; record its row; True if ok (or gone)."""
        from .cli import update_json

        def progress(event: Dict[str, Any]) -> None:
            if self.on_progress is not None:
                self.on_progress(pid, role, event)

        try:
            with self._client(pid) as client, _watch(pid, client):
                if role == "master":
                    self.master_agent_since = client.hello().get("started_at")
                result = self.step(client, progress)
        except errors.DynupdateError as exc:
            if role != "master" and _exits_within(pid, EXIT_WAIT if exc.exit_code == 3 else 0.0):
                self.rows[pid] = dict(update_json(None, pid), role=role, ok=True, outcome="gone")
                self.notify(f"{role} {pid} exited meanwhile (skipped)")
                return True
            row = update_json(exc.result, pid, error=exc.as_json())
            self.rows[pid] = dict(row, role=role, outcome="failed")
            self.failure = self.failure or f"{role} {pid}: {exc.message}"
            self.notify(f"✗ {role} {pid}: {exc.message}")
            code = exc.exit_code if exc.exit_code in (3, 4) else 1
            if role != "master" and code == 3:
                code = 1  # only an unreachable master makes the whole tree unreachable
            self.exit_code = 4 if 4 in (code, self.exit_code) else max(self.exit_code, code)
            return False
        already = bool(result.get("already"))
        # a dry run or a rehearsal changed nothing in the process: nothing to roll back there
        unchanged = already or bool(result.get("dry_run") or result.get("rehearsal_only"))
        if role == "master":
            self.master_changed = not unchanged
            self.master_previous = result.get("previous_version")
            self.master_version = result.get("version")
        # a worker forked from the master after this run updated it was updated by this run too
        born_changed = already and self.master_changed and role != "master" and self.action == "apply"
        if not unchanged or born_changed:
            self.changed.append(pid)
        row = dict(update_json(result, pid), role=role, outcome="already" if already else "done")
        if born_changed:
            row["previous_version"] = self.master_previous
        self.rows[pid] = row
        word = "already at" if already else ("now at" if self.action == "apply" else "back at")
        self.notify(f"✓ {role} {pid} {word} {result.get('version')}")
        return True

    def _client(self, pid: int) -> Client:
        """Connect to pid's agent. A worker forked after the master's agent started inherits
        one that comes up within moments: wait for it rather than inject a second one."""
        if pid != self.master and self.master_agent_since is not None and _born_after(pid, self.master_agent_since):
            _wait_for_socket(pid, AGENT_BIRTH_WAIT)
        return self.connect(pid)

    # -- gates -------------------------------------------------------------------------
    def _check(self, when: str) -> bool:
        if self.options.check is None:
            return True
        pids = [p for p in self.rows if self.rows[p].get("outcome") in ("done", "already")]
        env = dict(os.environ, DYNUPDATE_PIDS=" ".join(map(str, pids)))
        self.notify(f"running the check ({when}): {self.options.check}")
        try:
            done = subprocess.run(self.options.check, shell=True, env=env, timeout=CHECK_TIMEOUT,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        except subprocess.TimeoutExpired:
            self.failure = f"the check did not finish within {CHECK_TIMEOUT:g}s ({when})"
            return False
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            self.failure = f"the check exited {done.returncode} ({when})" + (f": {' / '.join(tail)}" if tail else "")
            return False
        return True

    def _gate(self) -> bool:
        if self.options.canary_wait > 0:
            self.notify(f"canary: waiting {self.options.canary_wait:g}s before the other workers")
            time.sleep(self.options.canary_wait)
        return self._check("after the canary")

    # -- the run -----------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        ok = self._do(self.master, "master")
        if not ok:
            return self._finish(rollback=False)
        if self.action == "rollback" and self.master_version is not None:
            # workers must end where the master is now, whatever their own history
            self.step = rollback_step(self.master_version, self.timeout)
        seen: Set[int] = {self.master}
        canary_left = self.options.canary
        gate_passed = self.options.canary <= 0
        for _ in range(MAX_PASSES):
            new = [p for p in descendants(self.master) if p not in seen]
            if not new:
                break
            for pid in new:
                seen.add(pid)
                if not self._do(pid, "worker"):
                    if not self.options.keep_going:
                        return self._finish(rollback=True)
                    continue
                if not gate_passed and self.rows[pid]["outcome"] != "gone":
                    canary_left -= 1
                    if canary_left <= 0:
                        gate_passed = True
                        if not self._gate():
                            return self._failed_check()
        if not gate_passed and not self._gate():  # fewer workers than --canary
            return self._failed_check()
        if not self._check("after every pid"):
            return self._failed_check()
        return self._finish(rollback=False)

    def _failed_check(self) -> Dict[str, Any]:
        self.notify(f"✗ {self.failure}")
        self.exit_code = max(self.exit_code, 1)
        if self.options.keep_going:
            return self._finish(rollback=False)
        return self._finish(rollback=True)

    def _finish(self, rollback: bool) -> Dict[str, Any]:
        if rollback and self.action == "apply":
            self._undo()
        pids = [dict(self.rows[p], pid=p) for p in self.rows]
        versions = {r.get("version") for r in pids if r.get("outcome") not in ("gone",) and r.get("version")}
        ok = self.exit_code == 0 and self.failure is None and all(r.get("ok") for r in pids)
        if not ok and self.exit_code == 0:
            self.exit_code = 1
        return {"ok": ok, "action": self.action, "master": self.master, "pids": pids,
                "rolled_back": list(self.rolled_back), "skew": len(versions) > 1,
                "error": self.failure}

    def _undo(self) -> None:
        """Put every pid this run changed back where it was, newest first, then catch late forks."""
        todo = list(reversed(self.changed))
        if self.master_changed and self.master in todo:  # the master first: later forks start on the old code
            todo.remove(self.master)
            todo.insert(0, self.master)
        for pid in todo:
            self._undo_one(pid, self.rows[pid].get("previous_version"))
        if self.master_changed:  # workers forked from the updated master before its rollback
            for _ in range(MAX_PASSES):
                late = [p for p in descendants(self.master) if p not in self.rows]
                if not late:
                    break
                for pid in late:
                    self.rows[pid] = {"pid": pid, "role": "worker", "ok": True, "outcome": "skipped",
                                      "version": None, "previous_version": None, "error": None}
                    self._undo_one(pid, self.master_previous)

    def _undo_one(self, pid: int, to: Optional[str]) -> None:
        if not _alive(pid):
            return
        self.notify(f"rolling back {self.rows[pid].get('role', 'worker')} {pid} to {to}")
        try:
            with self._client(pid) as client:
                result = rollback_step(to, self.undo_timeout)(client, None)
        except errors.DynupdateError as exc:
            self.rows[pid]["rollback_error"] = exc.as_json()
            self.notify(f"✗ could not roll back {pid}: {exc.message}")
            return
        self.rows[pid]["version"] = result.get("version")
        if not result.get("already"):
            self.rolled_back.append(pid)
            self.rows[pid]["outcome"] = "rolled_back"


# --- status -----------------------------------------------------------------------------

def tree_status(master: int, connect: Callable[[int], Client]) -> Dict[str, Any]:
    """One row per pid (master first); raises TargetUnreachable if the master is."""
    rows = []
    for role, pid in [("master", master)] + [("worker", p) for p in descendants(master)]:
        try:
            with connect(pid) as client:
                data = client.status()
            agent = data.get("agent") or {}
            rows.append({"pid": pid, "role": role, "version": data.get("version"),
                         "generation": data.get("generation"), "agent": agent.get("version"),
                         "history": [h.get("version") for h in data.get("history") or []], "error": None})
        except errors.DynupdateError as exc:
            if role == "master":
                raise
            if not _alive(pid):
                continue
            rows.append({"pid": pid, "role": role, "version": None, "generation": None, "agent": None,
                         "history": [], "error": exc.as_json()})
    versions = {r["version"] for r in rows if r["version"] is not None}
    return {"ok": all(r["error"] is None for r in rows), "master": master, "pids": rows,
            "skew": len(versions) > 1, "versions": sorted(versions)}


# --- the CLI's view (rich progress, JSON, exit code) ----------------------------------

def run_cli(action: str, master: int, step: Step, options: RolloutOptions, *, as_json: bool,
            timeout: float) -> None:
    """`apply|rollback --tree`: run the rollout with live progress; raise TreeFailed on failure."""
    from rich.markup import escape

    from . import render
    from .attach import connect

    def notify(message: str) -> None:
        if not as_json:
            render.err.print(render.txt(f"  {message}", multiline=True))

    def announce(message: str) -> None:  # injecting an agent changes a process: said in every mode
        render.err.print(render.txt(f"dynupdate: {message}", "cyan", multiline=True))

    status_line = None if as_json else render.err.status(f"{action} on the tree of pid {master}…")

    def on_progress(pid: int, role: str, event: Dict[str, Any]) -> None:
        if status_line is not None:
            finished = [p for p, row in rollout.rows.items() if row.get("outcome") in ("done", "already")]
            status_line.update(escape(f"{action} tree of {master} · done: {' '.join(map(str, finished)) or '-'} · "
                                      f"waiting on {role} {pid}: {render.describe_progress(event)}"))

    def connect_one(pid: int) -> Client:
        if status_line is not None:
            status_line.update(escape(f"{action} tree of {master} · connecting to {pid}…"))
        return connect(pid, notify=announce)[0]

    rollout = Rollout(master, action, step, options, connect=connect_one, timeout=timeout, notify=notify,
                      on_progress=on_progress)
    if status_line is None:
        result = rollout.run()
    else:
        with status_line:
            result = rollout.run()
    if as_json:
        render.emit_json(result)
    else:
        _summary(result)
    if rollout.exit_code:
        outcomes = ", ".join(f"{r['pid']} {r.get('outcome')}" for r in result["pids"])
        why = f": {result['error']}" if result.get("error") else ""
        undone = f"rolled back {', '.join(map(str, result['rolled_back']))}; " if result["rolled_back"] else ""
        raise TreeFailed(f"{action} on the tree of pid {master} failed{why}; {undone}outcome per pid: {outcomes}",
                         rollout.exit_code)


def require_tree(tree: bool, options: RolloutOptions) -> None:
    if not tree and (options.canary or options.canary_wait or options.check or options.keep_going):
        raise errors.UsageError("--canary, --canary-wait, --check and --keep-going apply to a tree: add --tree")


def _summary(result: Dict[str, Any]) -> None:
    from rich.table import Table

    from . import render

    table = Table(title=f"{result.get('action', 'status')} — tree of pid {result['master']}", title_justify="left")
    for col in ("pid", "role", "outcome", "version", "previous"):
        table.add_column(col)
    for row in result["pids"]:
        table.add_row(str(row["pid"]), str(row.get("role")), str(row.get("outcome", "")), str(row.get("version")),
                      str(row.get("previous_version")))
    render.out.print(table)
    _skew_warning(result)


def _skew_warning(result: Dict[str, Any]) -> None:
    from . import render

    if result.get("skew"):
        versions = sorted({str(r.get("version")) for r in result["pids"] if r.get("version") is not None})
        render.err.print(render.line(("VERSION SKEW:", "bold red"), " the tree runs ", render.txt(", ".join(versions)),
                                     "; re-run the same command to converge"))


def status_cli(master: int, *, as_json: bool, inject: bool) -> None:
    """`status --tree`: one row per pid, and a loud line on version skew."""
    from rich.table import Table

    from . import render
    from .attach import connect

    def announce(message: str) -> None:  # injecting an agent changes a process: said in every mode
        render.err.print(render.txt(f"dynupdate: {message}", "cyan", multiline=True))

    result = tree_status(master, lambda pid: connect(pid, inject=inject, notify=announce)[0])
    if as_json:
        render.emit_json(result)
        return
    table = Table(title=f"tree of pid {master}", title_justify="left")
    for col in ("pid", "role", "version", "generation", "agent"):
        table.add_column(col)
    for row in result["pids"]:
        agent = row["agent"] or ("-" if row["error"] is None else f"unreachable: {row['error'].get('message', '')}")
        table.add_row(str(row["pid"]), row["role"], render.txt(row["version"]), str(row["generation"]),
                      render.txt(agent))
    render.out.print(table)
    _skew_warning(result)
