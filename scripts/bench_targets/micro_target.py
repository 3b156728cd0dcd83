"""Steady-state costs, measured inside a real target whose agent runs (started by `dynupdate run`).

argv: MODULE_DIR. The module `bench_micromod` (written by bench.py) defines the
same class twice (plain and `@updatable`) and the same function twice
(`updated`, which bench.py patches 10 times, and `control`, never touched).
Commands on stdin: `measure ROUNDS` -> RESULT {json}; `quit`.
"""
import gc
import random
import statistics
import sys
import time

from _common import commands, result, say, setup_path

setup_path()
import dynupdate_agent  # noqa: E402
import bench_micromod as m  # noqa: E402

ns = time.perf_counter_ns


def t_call(obj, n):
    meth_loop = range(n)
    t = ns()
    for _ in meth_loop:
        obj.value(); obj.value(); obj.value(); obj.value(); obj.value()
        obj.value(); obj.value(); obj.value(); obj.value(); obj.value()
    return ns() - t


def t_func(fn, n):
    t = ns()
    for _ in range(n):
        fn(1); fn(1); fn(1); fn(1); fn(1); fn(1); fn(1); fn(1); fn(1); fn(1)
    return ns() - t


def t_create_release(cls, n):
    """Create and drop at once: the full life cycle (for `updatable`, the weak-list add and remove)."""
    t = ns()
    for _ in range(n):
        cls(1); cls(1); cls(1); cls(1); cls(1); cls(1); cls(1); cls(1); cls(1); cls(1)
    return ns() - t


def t_create_keep(cls, n):
    """Create and keep alive (creation alone; the instances are dropped after the clock stops)."""
    keep = []
    append = keep.append
    t = ns()
    for _ in range(n):
        append(cls(1)); append(cls(1)); append(cls(1)); append(cls(1)); append(cls(1))
        append(cls(1)); append(cls(1)); append(cls(1)); append(cls(1)); append(cls(1))
    dt = ns() - t
    del keep
    return dt


def t_activity(n):
    activity = dynupdate_agent.activity
    t = ns()
    for _ in range(n):
        with activity():
            pass
    return ns() - t


def t_empty_loop(n):
    t = ns()
    for _ in range(n):
        pass
    return ns() - t


def interleaved(fa, fb, rounds):
    """Median of per-round ratios a/b, the order flipping every round (A B, B A, ...)."""
    ratios, a_ns, b_ns = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a = fa(); b = fb()
        else:
            b = fb(); a = fa()
        ratios.append(a / b)
        a_ns.append(a); b_ns.append(b)
    return statistics.median(ratios), statistics.median(a_ns), statistics.median(b_ns)


def measure(rounds):
    gc.disable()  # collections would land in random rounds; re-enabled below
    try:
        plain, upd = m.Plain(1), m.Tracked(1)
        n_call = 20000
        call = interleaved(lambda: t_call(upd, n_call), lambda: t_call(plain, n_call), rounds)
        func = interleaved(lambda: t_func(m.updated, n_call), lambda: t_func(m.control, n_call), rounds)
        n_new = 5000
        create = interleaved(lambda: t_create_release(m.Tracked, n_new),
                             lambda: t_create_release(m.Plain, n_new), rounds)
    finally:
        gc.enable()
    create_keep = interleaved(lambda: t_create_keep(m.Tracked, n_new), lambda: t_create_keep(m.Plain, n_new),
                              rounds)
    gc.collect()
    n_act = 50000
    acts, empties = [], []
    for _ in range(rounds):
        acts.append(t_activity(n_act))
        empties.append(t_empty_loop(n_act))
    activity_ns = (statistics.median(acts) - statistics.median(empties)) / n_act
    per = lambda total, n: total / (n * 10)  # noqa: E731
    return {
        "call_overhead_ratio": call[0],
        "call_ns": {"updatable": per(call[1], n_call), "plain": per(call[2], n_call)},
        "function_call_ratio_after_update": func[0],
        "function_call_ns": {"updated": per(func[1], n_call), "control": per(func[2], n_call)},
        "create_overhead_ratio": create[0],
        "create_ns": {"updatable": per(create[1], n_new), "plain": per(create[2], n_new)},
        "create_keep_ratio": create_keep[0],
        "create_keep_ns": {"updatable": per(create_keep[1], n_new), "plain": per(create_keep[2], n_new)},
        "activity_ns": activity_ns,
        "updated_version": dynupdate_agent.current_version(),
        "updated_source_ok": m.updated(1) == m.control(1),
    }


say("READY")
for cmd in commands():
    if cmd[0] == "measure":
        result(measure(int(cmd[1])))
    elif cmd[0] == "quit":
        break
