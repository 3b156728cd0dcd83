"""The program gdb runs (``gdb -x gdb_program.py``) to run a few lines of Python in a target thread.

Executed by gdb's embedded Python (gdb's own interpreter, >= 3.6), never
imported by dynupdate itself. Its settings come from the JSON file named by
``DYNUPDATE_INJECT_CONFIG`` (written by driver.py); it writes its outcome as
JSON to the config's ``result`` path, after it has detached.

Steps, and why in this order:

1. **Symbols before the stop.** gdb starts unattached, loads the target's
   executable and the libraries it maps (libpython with its DWARF stripped
   when the driver could, see symbols.py) at their load addresses, and turns
   off its own shared-library reading. Attaching then costs little more than
   the ptrace stops, so the target is frozen for milliseconds, not for the
   whole session (issue #14: 0.5-0.75 s before).
2. **Sample, and look again.** Attach, classify every thread (threads.py). If
   no thread is at a safe point now (e.g. a CPU-bound main thread caught in
   a short system call), detach, let the target run a little and sample
   again, until the deadline. Each sample stops the target only for the
   classification.
3. **One call sequence under a lock.** The driver may terminate gdb only
   while it can take the lock file that this program holds around the
   inferior calls, so gdb is never killed inside a call.
"""
import fcntl
import importlib.util
import json
import os
import time

import gdb  # type: ignore[import-not-found]  # only exists inside gdb

with open(os.environ["DYNUPDATE_INJECT_CONFIG"]) as _fh:
    CFG = json.load(_fh)
RESULT = {"ok": False, "reason": "failed", "message": "gdb program did not finish", "threads": [],
          "samples": 0, "stops_ms": [], "ms": {}}
_T0 = time.monotonic()
RESULT["t0"] = _T0  # CLOCK_MONOTONIC, shared with the driver: lines the marks up with outside observations


def mark(name):
    """Record when a step ended (ms since gdb started the program), for diagnostics and the benchmark."""
    RESULT["ms"][name] = round((time.monotonic() - _T0) * 1e3, 1)

_spec = importlib.util.spec_from_file_location("dynupdate_inject_threads", CFG["threads_module"])
threads = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(threads)

SYMBOLS = ("PyGILState_Ensure", "PyGILState_Release", "PyRun_SimpleStringFlags", "PyRun_SimpleString",
           "Py_AddPendingCall", "mmap", "munmap")
ADDR = {}  # name in SYMBOLS -> address in the target (see resolve)


class Failure(Exception):
    """Ends the program with RESULT's reason and message."""

    def __init__(self, reason, message):
        Exception.__init__(self, message)
        self.reason = reason


def phase(text):
    """Tell the driver (and tests) where we are; best effort."""
    try:
        with open(CFG["phase"], "w") as fh:
            fh.write(text)
    except OSError:
        pass


def quiet(command):
    try:
        gdb.execute(command, to_string=True)
        return True
    except gdb.error:
        return False


def preload_symbols():
    """Load the target's symbol files at their load addresses before attaching (step 1).

    Any failure falls back to gdb's own shared-library reading at attach
    (slower stop, same result).
    """
    plan = CFG.get("symbols")
    if not plan:
        return False
    try:
        gdb.execute("file " + plan["exe"], to_string=True)
        for path, base in plan["libs"]:
            gdb.execute(f"add-symbol-file {path} -o {base}", to_string=True)
        gdb.execute("set auto-solib-add off", to_string=True)
        return True
    except gdb.error as exc:
        RESULT["symbols_error"] = str(exc)[:300]
        quiet("symbol-file")
        quiet("set auto-solib-add on")
        return False


def attach(pid):
    """Attach (stopping the target); returns the monotonic time of the stop."""
    start = time.monotonic()
    try:
        gdb.execute(f"attach {pid}", to_string=True)
    except gdb.error as exc:
        text = str(exc)
        if "not permitted" in text:
            raise Failure("permission", f"gdb may not ptrace pid {pid}: {text}")
        if "No such process" in text or "no such process" in text:
            raise Failure("no-process", f"pid {pid} went away during injection")
        raise Failure("failed", f"gdb could not attach: {text}")
    if gdb.selected_inferior().pid == 0:
        raise Failure("failed", "gdb could not attach")
    return start


def detach(stopped_at):
    quiet("detach")
    RESULT["stops_ms"].append(round((time.monotonic() - stopped_at) * 1e3, 1))


def resolve(attached):
    """Fill ADDR with the target address of every name in SYMBOLS (calls then need no lookup).

    Before the attach (symbols preloaded) a name is taken only where its
    address is already final: in a shared library, or in an executable that
    is not position-independent (a PIE executable is relocated by the
    attach); the rest is looked up once attached. Once attached, a missing
    name is fatal: this is not the Python we expect.
    """
    plan = CFG.get("symbols") or {}
    for sym in SYMBOLS:
        if sym in ADDR:
            continue
        try:
            addr = int(gdb.parse_and_eval("(long)&" + sym))
        except gdb.error:
            if not attached:
                continue
            raise Failure("not-python" if sym.startswith("Py") else "failed",
                          f"symbol {sym} not found in the target") from None
        if not attached and plan.get("exe_pie"):
            where = gdb.execute(f"info symbol {addr}", to_string=True)
            if " of " not in where or where.rsplit(" of ", 1)[1].strip() == plan["exe"]:
                continue
        ADDR[sym] = addr


def in_syscall(frame):
    """True when the thread sits right after a syscall instruction (x86-64 / aarch64)."""
    try:
        arch = frame.architecture().name()
        pc = int(frame.pc())
        mem = gdb.selected_inferior()
        if "x86-64" in arch:
            return bytes(mem.read_memory(pc - 2, 2)) == b"\x0f\x05"
        if "aarch64" in arch:
            return bytes(mem.read_memory(pc - 4, 4)) == b"\x01\x00\x00\xd4"
    except Exception:  # noqa: BLE001, S110 - unreadable pc or memory: "not in a syscall" is the safe answer
        pass
    return False


def backtrace(thread):
    """(frame names innermost first, whether the innermost frame sits on a syscall)."""
    thread.switch()
    names = []
    first = None
    try:
        frame = gdb.newest_frame()
        first = frame
        while frame is not None and len(names) < 256:
            names.append(frame.name() or "??")
            frame = frame.older()
    except gdb.error:
        pass
    return names, first is not None and in_syscall(first)


def sample(inferior, main_lwp):
    """[(lwp, state, names)] and the gdb thread objects by lwp.

    The main thread is looked at first: when it is safe (a server blocked in
    accept/poll/epoll, the usual case) the others cannot change the choice,
    so their stacks are not walked and the stop stays short however many
    threads the target has.
    """
    states, by_lwp, took = [], {}, []
    ordered = sorted(inferior.threads(), key=lambda t: (t.ptid[1] != main_lwp, t.num))
    for thread in ordered:
        start = time.monotonic()
        names, syscall = backtrace(thread)
        took.append(round((time.monotonic() - start) * 1e3, 1))
        lwp = thread.ptid[1]
        by_lwp[lwp] = thread
        states.append((lwp, threads.classify_names(names, syscall), names))
        if lwp == main_lwp and states[-1][1] == "safe":
            break
    RESULT["threads"] = [{"lwp": lwp, "state": state, "frames": names[:12], "ms": ms}
                         for (lwp, state, names), ms in zip(states, took)]
    RESULT["threads_total"] = len(ordered)
    return states, by_lwp


def call(expr):
    return int(gdb.parse_and_eval(expr))


def write_page(src):
    """Copy src (NUL-terminated) into a fresh page of the target (mmap takes no lock)."""
    size = (len(src) + 1 + 4095) // 4096 * 4096
    addr = call(f"(long)((void *(*)(void *, unsigned long, int, int, int, long)){ADDR['mmap']})"
                f"((void *)0, {size}, 3, 0x22, -1, 0)")
    if addr in (-1, 0) or -4096 < addr < 0:
        raise RuntimeError(f"mmap in the target failed ({addr})")
    gdb.selected_inferior().write_memory(addr, src + b"\0")
    return addr, size


def run_sync(thread, src):
    """Ensure / run / release in a thread blocked with the GIL released."""
    thread.switch()
    addr, size = write_page(src)
    state = call(f"(int)((int (*)(void)){ADDR['PyGILState_Ensure']})()")
    try:
        rc = call(f"(int)((int (*)(const char *, void *)){ADDR['PyRun_SimpleStringFlags']})"
                  f"((const char *){addr}, (void *)0)")
    finally:
        call(f"(int)(((void (*)(int)){ADDR['PyGILState_Release']})({state}), 0)")
    call(f"(int)((int (*)(void *, unsigned long)){ADDR['munmap']})((void *){addr}, {size})")
    return rc


def run_pending(thread, src):
    """Queue the code for the main thread with Py_AddPendingCall (no GIL taken here)."""
    thread.switch()
    addr, _ = write_page(src)
    return call(f"(int)((int (*)(void *, void *)){ADDR['Py_AddPendingCall']})"
                f"((void *){ADDR['PyRun_SimpleString']}, (void *){addr})")


def run_call(mode, thread, deadline):
    """The inferior call sequence, under the lock the driver checks before it kills gdb."""
    with open(CFG["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if time.monotonic() > deadline - CFG["margin"]:
                raise Failure("timeout", "out of time before running the code")
            phase("call")
            src = CFG["source"].encode("utf-8")
            rc = run_sync(thread, src) if mode == "sync" else run_pending(thread, src)
            phase("called")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if rc != 0:
        called = "PyRun_SimpleStringFlags" if mode == "sync" else "Py_AddPendingCall"
        raise Failure("failed", f"{called} returned {rc}")


def main():
    pid, deadline = CFG["pid"], CFG["deadline"]
    RESULT["preloaded"] = preload_symbols()
    mark("preloaded")
    pause = CFG.get("resample_s", 0.02)
    if RESULT["preloaded"]:
        resolve(attached=False)  # from the preloaded files: no lookups while the target is stopped
        mark("resolved")
    while True:
        phase("attach")
        stopped_at = attach(pid)
        mark("attached")
        try:
            if len(ADDR) < len(SYMBOLS):
                resolve(attached=True)
                mark("checked")
            phase("classify")
            states, by_lwp = sample(gdb.selected_inferior(), pid)
            mark("classified")
            RESULT["samples"] += 1
            mode, lwp = threads.choose(states, pid)
            if mode is not None:
                RESULT["mode"], RESULT["lwp"] = mode, lwp
                run_call(mode, by_lwp[lwp], deadline)
                mark("called")
                return
        finally:
            detach(stopped_at)
        # No good moment now: let the target run, then look again (step 2).
        if time.monotonic() + pause > deadline - CFG["margin"]:
            raise Failure("no-safe-thread", "no thread of the target reached a point where running Python code "
                          f"is safe in {RESULT['samples']} samples (all wait for locks, or the main thread stays "
                          "blocked in an unknown system call)")
        phase("wait")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.2)


try:
    for command in ("set pagination off", "set confirm off", "set unwindonsignal on",
                    "set print thread-events off", "set print inferior-events off",
                    "handle all nostop noprint pass",
                    "handle SIGSEGV SIGBUS SIGILL SIGFPE SIGABRT stop print nopass"):
        quiet(command)
    main()
    RESULT.update(ok=True, reason=None, message="")
except Failure as exc:
    RESULT.update(ok=False, reason=exc.reason, message=str(exc))
except BaseException as exc:  # noqa: BLE001 - whatever happens, report it and detach below
    RESULT.update(ok=False, reason="failed", message=f"gdb: {exc}")
finally:
    if gdb.selected_inferior().pid:
        quiet("detach")
    try:
        with open(CFG["result"] + ".tmp", "w") as fh:
            json.dump(RESULT, fh)
        os.rename(CFG["result"] + ".tmp", CFG["result"])
    except OSError:
        pass  # the injector gave up and removed its files; gdb detached cleanly anyway
    phase("detached")
