"""Which target thread may run Python code: classification of a thread from its backtrace.

This module is pure (no gdb, no I/O) so that it runs both inside gdb's
embedded Python (imported by gdb_program.py, whatever version gdb links, >= 3.6)
and in the unit tests, which feed it backtraces recorded from real targets.

A thread is judged only by function names that exist without debug info
(libc's and libpython's dynamic or ELF symbols), innermost frame first:

* **safe**: blocked in a known system call (sleep, poll, accept, read, a
  semaphore wait, ...) and nothing on its stack that holds or waits for a
  lock we would need: no GIL wait (``take_gil``, ``pthread_cond_*``,
  ``PyEval_RestoreThread``), no malloc, no dynamic loader, no fork, no
  finalisation, no pending-call bookkeeping. Such a thread has released the
  GIL, so ``PyGILState_Ensure`` in it is what any C thread does to call
  Python.
* **unsafe**: one of those frames is on the stack (or no stack at all).
* **blocked**: in a system call we do not know; it may never return, so it
  is neither used nor trusted to run a pending call.
* **running**: not in a system call (CPU-bound, or between calls).
"""

__all__ = [
    "SAFE",
    "UNSAFE_EXACT",
    "UNSAFE_PREFIX",
    "choose",
    "classify_names",
    "is_unsafe",
    "normalise",
    "pythonish",
]

# Innermost functions of a thread blocked in a syscall with the GIL released
# (names normalised: leading underscores, __GI_/__libc_ and 64/_nocancel dropped).
SAFE = frozenset({
    "clock_nanosleep", "nanosleep", "sleep", "usleep", "poll", "ppoll", "select", "pselect", "pselect6",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "accept", "accept4", "recv", "recvfrom", "recvmsg",
    "recvmmsg", "read", "readv", "pread", "preadv", "wait4", "waitpid", "waitid", "wait",
    "sem_wait", "sem_timedwait", "sem_clockwait", "new_sem_wait_slow", "do_futex_wait",
    "sigwait", "sigwaitinfo", "sigtimedwait", "sigsuspend", "pause", "connect", "send", "sendto",
    "sendmsg", "write", "writev", "pwrite", "kevent", "flock", "fcntl", "lockf", "msgrcv", "semop",
    "semtimedop", "io_getevents", "openat", "open", "futex_abstimed_wait_common",
    "futex_abstimed_wait_cancelable",
})
# CPython's own lock waits (3.13+: parking-lot semaphores); when one of these
# blocks in a syscall the thread has normally detached from the GIL.
PY_BLOCKING = frozenset({"PyThread_acquire_lock_timed", "PyThread_acquire_lock", "PySemaphore_PlatformWait"})
# Anywhere on the stack, these make a thread unusable for PyGILState_Ensure:
# a GIL wait (condvar/mutex), malloc or the loader (locks we would re-enter),
# fork, finalisation, or pending-call bookkeeping.
UNSAFE_EXACT = frozenset({
    "malloc", "free", "cfree", "calloc", "realloc", "memalign", "posix_memalign", "valloc",
    "pvalloc", "aligned_alloc", "sysmalloc", "int_malloc", "int_free", "int_realloc", "malloc_consolidate",
    "fork", "Fork", "vfork", "clone", "exit", "run_exit_handlers", "dlopen", "dlclose", "dlsym",
    "dlmopen", "take_gil", "drop_gil", "PyEval_RestoreThread", "PyEval_AcquireThread",
    "PyEval_AcquireLock", "PyGILState_Ensure", "PyGILState_Release", "PyEval_SaveThread",
    "PyOS_AfterFork", "PyOS_AfterFork_Child", "PyOS_BeforeFork", "Py_FinalizeEx", "Py_Finalize",
    "Py_Exit", "make_pending_calls", "Py_MakePendingCalls", "Py_AddPendingCall", "PyEval_AddPendingCall",
    "lll_lock_wait", "lll_lock_wait_private", "lll_lock_wake",
})
UNSAFE_PREFIX = ("pthread_cond_", "pthread_mutex_lock", "pthread_mutex_timedlock", "pthread_mutex_clocklock",
                 "pthread_rwlock_", "dl_", "malloc_", "pthread_once", "PyEval_AcquireThread")
# How many innermost named frames may stand between the syscall and the blocking call we know.
_NAMED_WINDOW = 8


def normalise(name):
    """Canonical libc/CPython name: drop @plt, leading underscores, __GI_/__libc_, 64/_nocancel."""
    name = (name or "??").split("@")[0]
    while True:
        old = name
        name = name.lstrip("_")
        for prefix in ("GI_", "libc_"):
            if name.startswith(prefix):  # noqa: FURB188 - str.removeprefix needs 3.9; gdb's Python may be older
                name = name[len(prefix):]
        for suffix in ("_nocancel", "_time64", "64"):
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
        if name == old:
            return name


def is_unsafe(name):
    """Whether a normalised frame name anywhere on a stack rules the thread out."""
    return name in UNSAFE_EXACT or name.startswith(UNSAFE_PREFIX)


def classify_names(names, in_syscall):
    """State of a thread from its frame names (innermost first) and whether it sits on a syscall.

    Returns "safe", "unsafe", "blocked" or "running" (see the module docstring).
    Stripped libcs show their internal wait helpers as ``??``: the thread is
    judged by the innermost *named* frame, which is then the exported
    blocking call (or CPython's lock wait, always entered with the GIL
    released when it blocks).
    """
    norm = [normalise(n) for n in names]
    if not names or any(is_unsafe(n) for n in norm):
        return "unsafe"
    named = [n for n in norm[:_NAMED_WINDOW] if n != "??"]
    if in_syscall and named and (named[0] in SAFE or named[0] in PY_BLOCKING):
        return "safe"
    return "blocked" if in_syscall else "running"


def pythonish(names):
    """A thread created by (or running) the interpreter, rather than a foreign C thread."""
    return any("PyEval" in n or "pythread" in n or "Py_RunMain" in n or "Py_BytesMain" in n
               for n in (x or "" for x in names))


def choose(states, main_lwp):
    """(mode, lwp) by preference: safe main thread, other safe Python thread, pending call; or (None, None).

    `states` is a list of (lwp, state, names). A pending call
    (``Py_AddPendingCall``) is used only when the main thread should soon
    reach an eval-breaker check (it runs bytecode, or waits for the GIL or
    another short lock); it is issued preferably from another thread, since
    only the main thread ever holds the pending-calls lock while running
    them, and never from a thread inside malloc or the loader. (None, None)
    means "no good moment now": the caller looks again a little later.
    """
    main = [s for s in states if s[0] == main_lwp]
    others = sorted((s for s in states if s[0] != main_lwp), key=lambda s: not pythonish(s[2]))
    if main and main[0][1] == "safe":
        return "sync", main_lwp
    for lwp, state, _names in others:
        if state == "safe":
            return "sync", lwp
    if not main or main[0][1] not in ("running", "unsafe"):
        return None, None  # main blocked in an unknown syscall: it may never run a pending call
    for lwp, state, names in others + main:
        norm = [normalise(n) for n in names]
        if any("ending" in n for n in norm):
            continue  # might hold the pending-calls lock
        if state != "unsafe" or not any(n in ("malloc", "int_malloc", "free", "int_free") or n.startswith("dl_")
                                        for n in norm):
            return "pending", lwp
    return None, None
