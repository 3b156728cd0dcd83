"""Rehearsal: perform the whole update on a forked copy of the process first (Mvedsua's idea).

`apply --rehearse` forks the target inside the agent. The child — a
copy-on-write image of the live process, every real instance included — runs
the complete update: prepare, safe point, veto hooks, swap, every transfer hook
on every instance, module hooks. It sends back the outcome (ok, timings, the
first failure with its traceback) through a pipe and leaves with `os._exit`,
so it runs none of the parent's exit handlers and flushes none of its file
buffers. Only if the rehearsal passed does the real update run.

What the parent keeps: its threads, fds, memory and code are untouched; the
agent thread only waits on the pipe, bounded by the deadline, and then kills
and reaps the child, so no zombie, thread or fd remains.

What a rehearsal cannot protect against: hooks that do I/O on descriptors the
child shares with the parent (sockets, database connections, files opened
before the fork) act on the real peers; and a hook that needs a lock another
thread of the parent held at the instant of the fork waits in the child until
the deadline (only the forking thread exists there), which fails the
rehearsal although the real update might pass.
"""
from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
import warnings
from typing import Any, Callable, Dict

#: what runs the update in the child: (request, peer) -> reply, raising on failure
Runner = Callable[[Dict[str, Any], Any], Dict[str, Any]]

_MAX_REPORT = 4 * 1024 * 1024


class _SilentPeer:
    """The child must never write to the parent's client connection."""

    def send(self, event: Dict[str, Any]) -> None:
        pass

    def alive(self) -> bool:
        return True


def _child(write_fd: int, request: Dict[str, Any], run: Runner, describe: Callable[[BaseException], Dict]) -> None:
    """In the forked copy: run the update for real, report, leave without any cleanup of the parent's."""
    status = 0
    try:
        started = time.monotonic()
        try:
            result = run(request, _SilentPeer())
            report: Dict[str, Any] = {"ok": True, "result": result}
        except BaseException as exc:  # every failure is the rehearsal's answer
            report = {"ok": False, "error": describe(exc)}
        report["seconds"] = time.monotonic() - started
        data = json.dumps(report, default=repr).encode()[:_MAX_REPORT]
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:
        status = 70
    finally:
        os._exit(status)


def rehearse(request: Dict[str, Any], timeout: float, run: Runner,
             describe: Callable[[BaseException], Dict[str, Any]], fork: Callable[[], int]) -> Dict[str, Any]:
    """Fork, run the update in the child, return its report; the child is killed at the deadline.

    `fork` makes the copy (the runtime's, so that no agent starts in it).
    Returns {"ok", "seconds", "result" | "error"}.
    """
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
            pid = fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return {"ok": False, "seconds": 0.0, "error": {"type": "RehearsalError", "message":
                f"could not fork a copy of the process to rehearse in: {exc}", "traceback": ""}}
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        try:
            os.close(read_fd)
        except BaseException:
            os._exit(71)
        _child(write_fd, request, run, describe)
    os.close(write_fd)
    chunks = []
    size = 0
    timed_out = False
    try:
        deadline = started + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size <= _MAX_REPORT:
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)
    seconds = time.monotonic() - started
    if timed_out:
        return {"ok": False, "seconds": seconds, "error": {
            "type": "RehearsalTimeout", "traceback": "",
            "message": f"the rehearsal did not finish within {timeout:g}s and its copy was killed (a hook may wait "
                       f"for a lock another thread held at the fork, or for I/O)"}}
    try:
        report = json.loads(b"".join(chunks).decode())
    except ValueError:
        return {"ok": False, "seconds": seconds, "error": {
            "type": "RehearsalError", "traceback": "",
            "message": "the rehearsal's copy of the process died without a report"}}
    report["seconds"] = seconds
    return report


def _reap(pid: int) -> None:
    """Wait for the child; after a SIGKILL this returns promptly. Bounded all the same."""
    for _ in range(200):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def describe_error(exc: BaseException) -> Dict[str, Any]:
    """An UpdateError's kind/message/traceback, or any exception's."""
    kind = getattr(exc, "kind", type(exc).__name__)
    message = getattr(exc, "message", str(exc))
    tb = getattr(exc, "tb", "") or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": kind, "message": message, "traceback": tb}
