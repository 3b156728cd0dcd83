"""Unit tests of the injector's thread classification (dynupdate/inject/threads.py).

The backtraces are real (32 threads: select, epoll_wait, accept4, read, sleep, a CPython lock
wait, a GIL wait, CPU-bound), recorded by tests/fixtures/record_backtraces.py with
gdb from targets/inj_kinds.py under pyenv 3.9/3.11/3.13 (DWARF) and Debian's
stripped python3.11 (dynamic symbols only, so many frames are "??"). Each
fixture names the state the injector must give that thread.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

from dynupdate.inject import threads

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "backtraces",
                                         "*.json")))


def load(name: str) -> dict:
    with open(next(f for f in FIXTURES if os.path.basename(f) == name)) as fh:
        return json.load(fh)


def test_fixtures_cover_every_kind():
    kinds = {json.load(open(f))["kind"] for f in FIXTURES}
    assert {"main_select", "sleeper", "event_wait", "acceptor", "epoller", "reader", "gil_wait", "cpu_bound"} <= kinds
    assert any("debian" in f for f in FIXTURES), "a stripped interpreter's backtraces must be among them"


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_recorded_backtrace(path):
    with open(path) as fh:
        data = json.load(fh)
    assert threads.classify_names(data["frames"], data["in_syscall"]) == data["expected"], data["frames"][:8]


def test_gil_waiter_is_never_safe_even_if_its_syscall_looks_like_a_sleep():
    """take_gil / pthread_cond_timedwait anywhere on the stack wins over a safe innermost name."""
    frames = ["clock_nanosleep"] + load("3.11.7-gil_wait.json")["frames"][1:]
    assert threads.classify_names(frames, True) == "unsafe"
    stripped = ["poll"] + load("debian-gil_wait.json")["frames"][1:]
    assert threads.classify_names(stripped, True) == "unsafe"


def test_unknown_syscall_is_blocked_and_no_syscall_is_running():
    frames = load("3.11.7-reader.json")["frames"]
    assert threads.classify_names(["ioctl"] + frames[1:], True) == "blocked"
    assert threads.classify_names(frames, False) == "running"
    assert threads.classify_names([], True) == "unsafe"


@pytest.mark.parametrize("inner", ["malloc", "__libc_malloc", "_int_free", "_dl_open_worker", "__fork",
                                   "PyEval_RestoreThread", "_Py_MakePendingCalls", "Py_FinalizeEx",
                                   "pthread_mutex_lock@plt", "__GI___lll_lock_wait"])
def test_unsafe_frames_anywhere(inner):
    frames = load("3.11.7-sleeper.json")["frames"]
    assert threads.classify_names(frames[:3] + [inner] + frames[3:], True) == "unsafe"


@pytest.mark.parametrize("raw,norm", [("__GI___poll", "poll"), ("__libc_read", "read"), ("epoll_wait64", "epoll_wait"),
                                      ("__select_nocancel", "select"), ("accept4@plt", "accept4"),
                                      ("__clock_nanosleep_time64", "clock_nanosleep"), (None, "??")])
def test_normalise(raw, norm):
    assert threads.normalise(raw) == norm


def states(*pairs):
    """[(lwp, state, names)] from (fixture, lwp) pairs; the first lwp given is used as main by the tests."""
    out = []
    for name, lwp in pairs:
        data = load(name)
        out.append((lwp, threads.classify_names(data["frames"], data["in_syscall"]), data["frames"]))
    return out


def test_choose_prefers_the_main_thread_when_safe():
    s = states(("3.11.7-main_select.json", 100), ("3.11.7-sleeper.json", 101))
    assert threads.choose(s, 100) == ("sync", 100)


def test_choose_other_safe_thread_when_main_is_busy():
    s = states(("3.11.7-cpu_bound.json", 100), ("3.11.7-gil_wait.json", 101), ("debian-acceptor.json", 102))
    assert threads.choose(s, 100) == ("sync", 102)


def test_choose_pending_call_when_everything_runs_or_waits_for_the_gil():
    s = states(("3.11.7-cpu_bound.json", 100), ("3.11.7-gil_wait.json", 101))
    mode, lwp = threads.choose(s, 100)
    assert mode == "pending" and lwp in (100, 101)


def test_choose_looks_again_when_main_is_in_an_unknown_syscall():
    """The case of issue #8 item 7: nothing safe, main blocked in a call we do not know -> (None, None)."""
    data = load("debian-reader.json")
    main = (100, threads.classify_names(["ioctl"] + data["frames"][1:], True), ["ioctl"] + data["frames"][1:])
    s = [main] + states(("debian-gil_wait.json", 101))
    assert main[1] == "blocked"
    assert threads.choose(s, 100) == (None, None)


def test_choose_never_issues_a_pending_call_from_inside_malloc():
    frames = ["_int_malloc", "malloc"] + load("3.11.7-cpu_bound.json")["frames"]
    s = [(100, threads.classify_names(frames, False), frames)]
    assert s[0][1] == "unsafe"
    assert threads.choose(s, 100) == (None, None)
