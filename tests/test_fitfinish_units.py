"""Pure logic behind issue 15's output, in addition to (never instead of) the real-CLI tests."""
from __future__ import annotations

import importlib

import pytest

from dynupdate import render, runner


@pytest.fixture
def history():
    from dynupdate_agent import history as module

    saved_entries, saved_log = list(module._entries), list(module._log)
    module._entries.clear()
    module._log.clear()
    yield module
    module._entries[:] = saved_entries
    module._log[:] = saved_log


def test_rolled_back_entries_stay_in_the_history(history):
    a = history.Entry("a", "1", 10.0, undo=object())
    b = history.Entry("b", "2", 20.0, undo=object())
    history.push(a)
    history.push(b)
    popped = history.pop()
    assert popped is b and history.current_version() == "1"
    rows = history.describe()
    assert [r["version"] for r in rows] == ["base", "1", "2"]
    assert rows[1]["rolled_back_at"] is None and rows[2]["rolled_back_at"] >= 20.0
    assert rows[2]["rollback"] is False, "a rolled-back version cannot be rolled back again"
    assert history.entries() == [a], "rollback still sees only the active updates"


def test_an_undone_rollback_makes_the_entry_live_again(history):
    a = history.Entry("a", "1", 10.0, undo=object())
    history.push(a)
    history.pop()
    history.push(a)  # the engine re-records an entry whose rollback failed
    rows = history.describe()
    assert len(rows) == 2 and rows[1]["rolled_back_at"] is None and rows[1]["rollback"] is True


def test_rolled_back_records_are_bounded_and_release_old_code(history, monkeypatch):
    monkeypatch.setattr(history, "MAX_ROLLED_BACK", 3)
    for i in range(6):
        history.push(history.Entry(f"e{i}", str(i), float(i), undo=object()))
        history.pop()
    history.push(history.Entry("live", "live", 99.0, undo=object()))
    rolled = [e for e in history._log if e.rolled_back_at is not None]
    assert len(rolled) == 3 and all(e.undo is None for e in rolled)
    assert history.current_version() == "live"


TRACEBACK = '''Traceback (most recent call last):
  File "/x/site-packages/dynupdate_agent/updater.py", line 280, in _apply
    _transfer(tx, modules, transfers)
  File "/x/site-packages/dynupdate_agent/updater.py", line 390, in _transfer
    mp.module_hook(dict(old))
    ~~~~~~~~~~~~~~^^^^^^^^^^^
  File "<dynupdate ff-v2>/ffmod.py", line 14, in __dynupdate_transfer__
    migrate(old)
  File "/srv/app/helpers.py", line 3, in migrate
    raise ValueError("cannot migrate")
ValueError: cannot migrate
'''


def test_user_traceback_folds_agent_frames():
    text = render.user_traceback(TRACEBACK)
    assert "updater.py" not in text and "module_hook" not in text and "~~~" not in text
    assert "[2 dynupdate agent frame(s) hidden; --verbose shows them]" in text
    assert '"<dynupdate ff-v2>/ffmod.py", line 14' in text and '"/srv/app/helpers.py", line 3' in text
    assert text.splitlines()[0] == "Traceback (most recent call last):"
    assert text.splitlines()[-1] == "ValueError: cannot migrate"
    assert render.user_traceback(TRACEBACK, verbose=True) == TRACEBACK.rstrip()


def test_program_of_hides_the_launcher():
    argv = ["/usr/bin/python3", "-X", "dev", "/venv/lib/dynupdate_agent/launch.py", "/venv/lib/site-packages",
            "app.py", "--port", "1"]
    assert runner.program_of(argv) == ["/usr/bin/python3", "-X", "dev", "app.py", "--port", "1"]
    assert runner.program_of(["python", "other/launch.py", "x"]) == ["python", "other/launch.py", "x"]


def test_guarded_stream_swallows_write_errors():
    streams = importlib.import_module("dynupdate.streams")

    class Closed:
        def write(self, _text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self):
            return False

    guarded = streams.Guarded(lambda: Closed())
    assert guarded.write("x") == 1 and guarded.broken
    guarded.flush()
