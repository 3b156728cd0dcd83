"""Run a few lines of Python inside another running CPython process, safely.

`inject(pid, code)` attaches gdb to the target and makes one of its threads run
`code` at a point where that cannot deadlock, crash or corrupt the interpreter.
It is the bootstrap step of `dynupdate attach`: the caller's code only starts a
thread that loads the agent, and the caller confirms success over the agent's
socket.

Why not pyrasite's approach (call ``PyGILState_Ensure`` from whichever thread
gdb happened to stop): if that thread was itself waiting for the GIL, the
nested wait deadlocks the target for good; if gdb is killed during a call the
target dies on the dummy return breakpoint; and on a stripped interpreter the
unresolved symbols make it silently run nothing. What we do instead:

* **Checks first, from /proc only.** Gone, zombie, non-Python and CPython < 3.9
  targets (``unsupported-python``) are refused before gdb is started; so is a
  ptrace that would be refused (with the fix in the message).
* **A short stop.** The gdb program (gdb_program.py) loads the target's
  symbol files before it attaches (symbols.py), and when no thread is at a
  safe point it detaches, lets the target run and samples again until the
  deadline, instead of giving up on the first sample.
* **Thread choice** (threads.py). Every thread is classified from its backtrace, using only
  names that exist without debug info (libc's and libpython's dynamic
  symbols). A thread is *safe* when it is blocked in a known syscall
  (``clock_nanosleep``, ``sem_clockwait``, ``accept4``, ``epoll_wait``, ...)
  and has no frame of a GIL wait (``pthread_cond_*``, ``pthread_mutex_lock``,
  ``PyEval_RestoreThread``, ...), malloc, the dynamic loader, fork or
  finalization anywhere on its stack. Such a thread does not hold the GIL (or,
  if a C extension blocks while holding it, ``PyGILState_Ensure`` sees that and
  does not wait), so the sequence ``PyGILState_Ensure`` /
  ``PyRun_SimpleStringFlags`` / ``PyGILState_Release`` is the same thing a
  C-created thread does to call into Python. gdb's scheduler-locking stays off,
  so other threads run meanwhile and the GIL holder hands it over on the
  normal 5 ms switch request.
* **No safe thread** (e.g. every thread runs bytecode): the code is queued with
  ``Py_AddPendingCall``, which takes no GIL and returns at once; the main
  thread runs it at its next eval-breaker check. Completion is then confirmed
  through a status file (see below). The code page is leaked in that case
  (one page), because nothing can unmap it after the main thread used it.
* **No gdb-side malloc.** The source is written into a page obtained with an
  inferior call to ``mmap`` (lock-free), with gdb's ``write_memory``; every
  inferior call casts the function to an explicit prototype, so stripped
  interpreters work (``nm -D python3.11`` exports all we need).
* **Never kill gdb inside a call.** gdb runs in its own session (no terminal
  ^C), with stdin from /dev/null and output to a file (so the death of this
  process cannot SIGPIPE it). The gdb program holds an ``flock`` on a lock file
  for the whole inferior-call sequence. On timeout we take that lock without
  blocking: if we get it, gdb is between calls and is terminated (then the
  target gets a SIGCONT in case an attach stop was still pending); if not, gdb
  is inside a call (typically waiting for a GIL that a C extension holds) and
  is left running - it finishes and detaches by itself - and we raise
  ``InjectionError(reason="timeout")``. Signals arriving at the target during
  a call are passed through without stopping gdb; only fatal ones
  (SIGSEGV & co. raised by the call itself) make gdb unwind the call.
* **No bindings in the target.** What runs in ``__main__`` is one expression,
  ``exec(<wrapper>, {fresh dict})``; the wrapper ``exec``s `code` in another
  fresh dict, catches every exception (so a pending call always returns 0 and
  ``SystemExit`` cannot end the target) and writes ``ok`` or the error into a
  status file that we made for the target in a folder we own inside
  ``/proc/PID/root/tmp`` (so it also works across mount namespaces) and read
  back without following links (folders.py). sys.path and sys.modules are not
  touched.

Side effects to know about: a target thread interrupted by the attach while
blocked in a syscall (``epoll_wait``, ``accept``, ``sleep``, ...) may see
``EINTR``; CPython's own wrappers retry those calls (PEP 475), but C
extensions that do not may report an error once. Python >= 3.14 targets are
handled with ``sys.remote_exec`` (PEP 768) run by the target's own interpreter
instead of gdb (not tested here: no 3.14 on the build machine).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time

from . import symbols
from .folders import InjectionFolders, printable

__all__ = ["MIN_PYTHON", "REASONS", "InjectionError", "check_target", "inject"]

REASONS = ("gdb-missing", "permission", "no-process", "not-python", "unsupported-python", "no-safe-thread",
           "timeout", "failed")
#: the oldest CPython a target may run (the agent's own floor)
MIN_PYTHON = (3, 9)
#: a Python whose version neither its executable nor its libpython names; gdb checks its symbols
UNKNOWN_VERSION = (3, 0)

_CAP_SYS_PTRACE = 19
_log = logging.getLogger(__name__)


class InjectionError(Exception):
    """Injection did not happen (or could not be confirmed); the message says what to do next.

    `reason` is one of REASONS so callers can map it onto their own error family.
    """

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- checks before gdb


def _check_code(code: str) -> None:
    """Refuse code that does not even compile here, before touching the target."""
    try:
        compile(code, "<dynupdate-inject>", "exec")
    except (SyntaxError, ValueError) as exc:
        raise InjectionError("failed", f"the code to inject does not compile: {exc}") from None


def _read_proc(pid: int, name: str) -> str:
    """Text of /proc/PID/NAME; no-process when the pid is gone."""
    try:
        with open(f"/proc/{pid}/{name}", "r", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InjectionError("no-process", f"no process with pid {pid} (check the pid)") from None
    except ProcessLookupError:
        raise InjectionError("no-process", f"no process with pid {pid} (check the pid)") from None
    except PermissionError:
        raise InjectionError(
            "permission",
            f"not allowed to inspect pid {pid}: run as the target's user or as root, "
            "or start the program with `dynupdate run` instead") from None


def _status_fields(pid: int) -> dict[str, str]:
    """Parsed /proc/PID/status: the uid, state and tracer of the target."""
    fields = {}
    for line in _read_proc(pid, "status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _python_version(pid: int) -> tuple[int, int] | None:
    """(major, minor) of the target's interpreter, or None when it is not Python.

    Looks at the executable's name and the mapped libpython, which also finds
    interpreters embedded in other programs (uwsgi, ...).
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise InjectionError("no-process", f"no process with pid {pid} (check the pid)") from None
    except PermissionError:
        exe = ""
    maps = _read_proc(pid, "maps")
    for pattern, text in ((r"^python(\d)\.(\d+)", os.path.basename(exe)), (r"/libpython(\d)\.(\d+)", maps),
                          (r"/python(\d)\.(\d+)/", maps)):
        match = re.search(pattern, text)
        if match:
            return int(match.group(1)), int(match.group(2))
    if "python" in os.path.basename(exe).lower() or "libpython" in maps:
        return UNKNOWN_VERSION  # gdb checks the symbols it needs
    return None


def _has_cap_sys_ptrace() -> bool:
    """Whether this process may ptrace any process regardless of uid and yama (e.g. root)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _is_descendant(pid: int) -> bool:
    """Whether pid descends from us (yama ptrace_scope 1 allows tracing only those)."""
    me = os.getpid()
    for _ in range(64):
        try:
            fields = _status_fields(pid)
        except InjectionError:
            return False
        ppid = int(fields.get("PPid", "0") or 0)
        if ppid == me:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


def _check_permission(pid: int, fields: dict[str, str]) -> None:
    """Fail early, with the fix in the message, when ptrace would be refused."""
    hint = ("or start the program with `dynupdate run` instead, which needs no ptrace")
    tracer = int(fields.get("TracerPid", "0") or 0)
    if tracer:
        raise InjectionError("permission", f"pid {pid} is already being traced by pid {tracer} "
                             f"(a debugger?); detach it first, {hint}")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as fh:
            scope = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        raise InjectionError("permission", "ptrace is disabled on this machine "
                             "(/proc/sys/kernel/yama/ptrace_scope is 3, which only a reboot resets); "
                             f"{hint}")
    if _has_cap_sys_ptrace():
        return
    if scope == 2:
        raise InjectionError("permission", "only root may ptrace here (yama ptrace_scope is 2): "
                             f"run dynupdate as root, {hint}")
    uids = fields.get("Uid", "").split()
    if uids and int(uids[0]) != os.getuid():
        raise InjectionError("permission", f"pid {pid} runs as uid {uids[0]}, not as you (uid {os.getuid()}): "
                             f"run dynupdate as that user or as root, {hint}")
    if scope == 1 and not _is_descendant(pid):
        raise InjectionError("permission", "yama ptrace_scope is 1, so only a parent process may ptrace: "
                             "run dynupdate as root, or allow it with "
                             "`echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`, " + hint)


def _find_gdb() -> str:
    """Path of gdb, or gdb-missing with the install hint."""
    path = shutil.which("gdb")
    if not path:
        raise InjectionError("gdb-missing", "gdb is needed to inject into a running process but is not on PATH: "
                             "install it (e.g. `apt-get install gdb`), or start the program with "
                             "`dynupdate run` instead")
    return path


# --------------------------------------------------------------------------- the code run in the target

# Runs in a fresh dict (never in __main__): executes the caller's code in yet
# another fresh dict, swallows every exception (a pending call must return 0,
# and SystemExit must not reach PyErr_Print, which would exit the target), and
# reports the outcome through the status file. Only builtins are used, so
# sys.modules does not change.
_WRAPPER = """\
try:
    exec(compile(_src, '<dynupdate-inject>', 'exec'), {'__name__': '__dynupdate_inject__'})
    _msg = 'ok'
except BaseException as _exc:
    try:
        _msg = 'error %s: %s' % (type(_exc).__name__, _exc)
    except BaseException:
        _msg = 'error (unprintable exception)'
if _status:
    try:
        with open(_status, 'w') as _fh:
            _fh.write(_msg + '\\n')
    except BaseException:
        pass
"""


def _target_source(code: str, status_path: str | None) -> str:
    """The single expression statement run in the target's __main__: binds no names there."""
    namespace = f"{{'__name__': '__dynupdate_inject__', '_src': {code!r}, '_status': {status_path!r}}}"
    return f"exec({_WRAPPER!r}, {namespace})\n"


# --------------------------------------------------------------------------- driving gdb

_HERE = os.path.dirname(os.path.abspath(__file__))
GDB_PROGRAM = os.path.join(_HERE, "gdb_program.py")
THREADS_MODULE = os.path.join(_HERE, "threads.py")


def _gdb_command(gdb: str) -> list[str]:
    """gdb, fast and quiet: no init files, no debuginfod, no auto-loaded helpers; the program attaches itself."""
    return [gdb, "-nx", "-q", "-batch",
            "-iex", "set debuginfod enabled off",
            "-iex", "set auto-load off",
            # only the symbols the files themselves carry: the names we classify by
            # exist on every machine, and loading libc6-dbg would cost ~1 s
            "-iex", "set debug-file-directory /nonexistent-dynupdate",
            "-iex", "set pagination off",
            "-iex", "set confirm off",
            "-x", GDB_PROGRAM]


def _try_lock(path: str) -> int | None:
    """An fd holding the gdb program's lock if it is free now (gdb is between inferior calls)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _stop_gdb(proc: subprocess.Popen[bytes], pid: int, lock_path: str) -> bool:
    """Stop gdb only when it is provably not inside an inferior call; True if stopped.

    With the program's lock held by us gdb cannot start a call, so it can be
    terminated: SIGTERM makes gdb detach, SIGKILL is the last resort (the kernel
    detaches then), and SIGCONT undoes an attach SIGSTOP that gdb had no time
    to consume.
    """
    if proc.poll() is not None:
        return True
    fd = _try_lock(lock_path)
    if fd is None:
        return False
    try:
        proc.terminate()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    finally:
        os.close(fd)
    return True


def _run_gdb(gdb: str, pid: int, source: str, work: InjectionFolders, deadline: float) -> dict:
    """Run the gdb program against pid and return its JSON result."""
    config, result, log = (work.path(n) for n in ("config.json", "result.json", "gdb.log"))
    lock, phase = work.path("lock"), work.path("phase")
    try:
        syms = symbols.plan(pid, _read_proc(pid, "maps"), work.local, timeout=max(0.5, (deadline - time.monotonic()) / 4))
    except InjectionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a best-effort speed-up is never a reason to fail
        _log.debug("symbol preload skipped for pid %d: %s", pid, exc)
        syms = None
    with open(config, "w") as fh:
        json.dump({"pid": pid, "source": source, "deadline": deadline, "margin": 0.5, "lock": lock,
                   "phase": phase, "result": result, "threads_module": THREADS_MODULE, "symbols": syms}, fh)
    env = dict(os.environ, DYNUPDATE_INJECT_CONFIG=config, LC_ALL="C")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(_gdb_command(gdb), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stopped = proc.poll() is None
        if stopped and not _stop_gdb(proc, pid, lock):
            raise InjectionError(
                "timeout", f"gdb (pid {proc.pid}) is still inside a function call in pid {pid}, most likely "
                "waiting for the GIL that a C extension holds; it was left running and will detach by "
                "itself once the call returns (killing it now would crash the target). Retry later, or "
                "start the program with `dynupdate run` instead")
    with open(log, errors="replace") as fh:
        text = fh.read()
    if stopped:
        # We held the lock, so gdb never started the call sequence: nothing ran.
        raise InjectionError("timeout", f"gdb did not get to run the code in pid {pid} in time; nothing was "
                             f"run and gdb was stopped (its last words: {_tail(text, 2)}); retry with a "
                             "longer timeout, or start the program with `dynupdate run` instead")
    try:
        with open(result) as fh:
            return dict(json.load(fh))
    except (OSError, ValueError):
        pass
    if "ptrace: Operation not permitted" in text:
        raise InjectionError("permission", f"gdb may not ptrace pid {pid}: run as the target's user or root, "
                             "check /proc/sys/kernel/yama/ptrace_scope (0 allows it), or start the program "
                             "with `dynupdate run` instead")
    if "No such process" in text:
        raise InjectionError("no-process", f"pid {pid} went away during injection")
    raise InjectionError("failed", f"gdb failed on pid {pid}: {_tail(text)}")


def _tail(text: str, lines: int = 5) -> str:
    """The last lines of gdb's output for a message, control characters escaped."""
    return " | ".join(printable(line) for line in text.strip().splitlines()[-lines:]) or "(no output)"


def _wait_status(work: InjectionFolders, deadline: float) -> str | None:
    """The wrapper's outcome line, waiting for it until deadline."""
    while work.has_status:
        status = work.read_status()
        if status is not None or time.monotonic() >= deadline:
            return status
        time.sleep(0.01)
    return None


def _check_status(pid: int, status: str | None) -> None:
    """Turn an error reported by the wrapper into InjectionError(failed)."""
    if status and status != "ok":
        raise InjectionError("failed", f"the injected code ran in pid {pid} but raised: {status[6:]}")


def _remote_exec(pid: int, source: str, work: InjectionFolders, deadline: float) -> None:
    """Python >= 3.14: PEP 768's sys.remote_exec, run by the target's own interpreter (UNTESTED here).

    The script must be readable by the target, so it goes into the drop folder.
    """
    script_target = work.write_for_target("inject.py", source)
    if not script_target:
        raise InjectionError("failed", f"cannot create a file that pid {pid} can read under its /tmp")
    exe = f"/proc/{pid}/exe"
    try:
        done = subprocess.run([exe, "-I", "-S", "-c", "import sys; sys.remote_exec(int(sys.argv[1]), sys.argv[2])",
                               str(pid), script_target], check=False, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise InjectionError("timeout", f"sys.remote_exec on pid {pid} did not return in time") from None
    if done.returncode != 0:
        text = (done.stderr or done.stdout).strip()
        reason = "permission" if "ermission" in text or "not permitted" in text else "failed"
        raise InjectionError(reason, f"sys.remote_exec on pid {pid} failed: {_tail(text)}")
    status = _wait_status(work, deadline)
    if status is None:
        raise InjectionError("timeout", f"pid {pid} accepted the code but did not run it in time "
                             "(it runs at the next bytecode boundary; it may still run later)")
    _check_status(pid, status)


def check_target(pid: int) -> tuple[dict[str, str], tuple[int, int]]:
    """(/proc status fields, Python version) of a pid we may inject into; InjectionError otherwise.

    Reads only /proc: refuses gone and zombie processes, programs that are not
    Python, and CPython older than MIN_PYTHON (the agent needs 3.9), before
    anything touches the target.
    """
    fields = _status_fields(pid)
    if fields.get("State", "").startswith(("Z", "X")):
        raise InjectionError("no-process", f"pid {pid} has exited (zombie)")
    version = _python_version(pid)
    if version is None:
        raise InjectionError("not-python", f"pid {pid} ({fields.get('Name', '?')}) is not a Python process; "
                             "`dynupdate ps` lists the Python processes you can update")
    if version != UNKNOWN_VERSION and version < MIN_PYTHON:
        raise InjectionError("unsupported-python", f"pid {pid} runs unsupported Python {version[0]}.{version[1]} "
                             f"(dynupdate needs CPython >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} in the target)")
    return fields, version


def inject(pid: int, code: str, *, timeout: float = 15.0) -> None:
    """Run `code` (Python source, a few lines) in the target at a safe point.

    The code runs once, in a fresh namespace (nothing is bound in the
    target's __main__, sys.path and sys.modules are untouched), in a target
    thread that may hold the GIL (blocked in a syscall, or the main thread at
    a bytecode boundary). Keep it tiny and non-blocking: start a thread.

    Returns once the code has run (confirmed by gdb's call returning, or by
    the status file for queued calls). Raises InjectionError with `reason`
    among REASONS otherwise; an exception raised by `code` itself is reported
    as reason "failed" with its message. On "timeout" nothing was run unless
    the message says the code was queued or gdb was left to finish a call.
    """
    deadline = time.monotonic() + timeout
    _check_code(code)
    fields, version = check_target(pid)
    if version < (3, 14):
        gdb = _find_gdb()
    _check_permission(pid, fields)
    with InjectionFolders(pid, fields) as work:
        source = _target_source(code, work.status_target)
        if version >= (3, 14):
            _remote_exec(pid, source, work, deadline)
            return
        result = _run_gdb(gdb, pid, source, work, deadline)
        _log.debug("gdb result for pid %d: %s", pid, json.dumps(result))
        if not result.get("ok"):
            reason = str(result.get("reason")) if result.get("reason") in REASONS else "failed"
            message = result.get("message") or "unknown error"
            hints = {
                "no-safe-thread": "; retry when the program is less busy, or start it with `dynupdate run`",
                "not-python": "; is this a CPython process?",
                "failed": "; start the program with `dynupdate run` instead",
            }
            if reason == "no-safe-thread":
                states = ", ".join(f"{t['lwp']}:{t['state']}" for t in result.get("threads", []))
                message += f" (threads: {states})"
            raise InjectionError(reason, f"injection into pid {pid} failed: {message}{hints.get(reason, '')}")
        if result.get("mode") == "pending":
            status = _wait_status(work, deadline)
            if status is None and work.has_status:
                raise InjectionError("timeout", f"the code was queued in pid {pid} but its main thread did not "
                                     "run it in time; it may still run later")
        else:
            status = _wait_status(work, min(deadline, time.monotonic() + 1.0))
        _check_status(pid, status)
