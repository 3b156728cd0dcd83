"""The veto hook and rehearsal on a forked copy, against a real target with 1500 live instances.

The target (tests/targets/ledger_app) is shared by the module and always
brought back to `base`; the parent's threads, fds and RSS are read from /proc
before and after each rehearsal.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import TARGETS, Target, dynupdate, dynupdate_json

APP = TARGETS / "ledger_app"
SOURCE = (APP / "ledger.py").read_text()


@pytest.fixture(scope="module")
def ledger():
    target = Target([sys.executable, "-m", "dynupdate", "run", str(APP / "app.py")],
                    env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=str(APP))
    try:
        yield target, target.ready_value(timeout=30)
    finally:
        target.stop()


@pytest.fixture
def at_base(ledger):
    yield ledger
    target, _ = ledger
    code, status = dynupdate_json("status", "--pid", str(target.pid))
    if status.get("version") != "base":
        code, data = dynupdate_json("rollback", "--pid", str(target.pid), "--to", "base")
        assert code == 0, data


def _get(port: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        return json.loads(resp.read())


def _bundle(tmp: Path, name: str, source: str, version: str = "2") -> str:
    folder = tmp / name
    folder.mkdir()
    (folder / "ledger.py").write_text(source)
    (folder / "patch.toml").write_text(f'name = "{name}"\nversion = "{version}"\n[modules]\n"ledger" = "ledger.py"\n')
    return str(folder)


MIGRATE = SOURCE.replace('''    def describe(self):
        return f"account {self.n}: {self.balance}"''', '''    def describe(self):
        return f"account {self.n}: {self.cents} cents"

    def __dynupdate_transfer__(self, old):
        if old["n"] == FAIL_AT:
            raise ValueError(f"cannot migrate account {old['n']}")
        self.cents = old["balance"] * 100''').replace("QUEUE = []", "QUEUE = []\nFAIL_AT = -1")


def _proc_state(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {"threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "rss_kb": int(fields["VmRSS"].split()[0]), "children": children}


def test_veto_refuses_with_its_reason_and_changes_nothing(at_base, tmp_path):
    target, port = at_base
    vetoing = _bundle(tmp_path, "veto", MIGRATE + '''

def __dynupdate_check__():
    if QUEUE:
        return f"{len(QUEUE)} job(s) still queued; drain the queue first"
''')
    _get(port, "/queue?add=job1")
    for extra in ((), ("--dry-run",)):
        code, data = dynupdate_json("apply", "--pid", str(target.pid), vetoing, *extra)
        assert code == 1, data
        assert data["error"]["type"] == "Vetoed"
        assert "1 job(s) still queued; drain the queue first" in data["error"]["message"]
        assert data["version"] == "base"
    assert _get(port, "/describe") == {"first": "account 0: 0"}
    # a check that raises vetoes too
    raising = _bundle(tmp_path, "veto-raise", SOURCE + "\n\ndef __dynupdate_check__():\n"
                                                      "    raise RuntimeError('config says no')\n")
    proc = dynupdate("apply", "--pid", str(target.pid), raising)
    assert proc.returncode == 1 and "config says no" in proc.stderr
    # drained: the same bundle applies
    _get(port, "/drain")
    code, data = dynupdate_json("apply", "--pid", str(target.pid), vetoing)
    assert code == 0, data
    assert _get(port, "/describe") == {"first": "account 0: 0 cents"}


def test_rehearsal_catches_the_1000th_instance_and_the_parent_is_untouched(at_base, tmp_path):
    target, port = at_base
    failing = _bundle(tmp_path, "fail-1000", MIGRATE.replace("FAIL_AT = -1", "FAIL_AT = 999"))
    total = _get(port, "/total")
    code, status = dynupdate_json("status", "--pid", str(target.pid))
    history_before = status["history"]
    sockets = Path(status["agent"]["socket"]).parent
    sockets_before = set(os.listdir(sockets))
    before = _proc_state(target.pid)
    for flag in ("--rehearse", "--rehearse-only"):
        code, data = dynupdate_json("apply", "--pid", str(target.pid), failing, flag)
        assert code == 1, data
        assert data["error"]["type"] == "RehearsalFailed"
        message = data["error"]["message"]
        # account 999 is the 1000th created; the message counts in transfer order, "instance K of 1500"
        assert "cannot migrate account 999" in message and " of 1500" in message, message
        assert "cannot migrate account 999" in data["error"]["traceback"]
        assert data["version"] == "base"
    after = _proc_state(target.pid)
    assert _get(port, "/describe") == {"first": "account 0: 0"} and _get(port, "/total") == total
    assert after["children"] == [] and after["threads"] == before["threads"] and after["fds"] == before["fds"]
    assert after["rss_kb"] < before["rss_kb"] * 1.5 + 20_000, (before, after)
    assert not {s for s in set(os.listdir(sockets)) - sockets_before if s.endswith(".sock")
                and not Path(f"/proc/{s[:-5]}").exists()}, "the copy left a socket behind"
    code, status = dynupdate_json("status", "--pid", str(target.pid))
    assert status["version"] == "base" and status["history"] == history_before


def test_rehearsal_that_passes_then_the_real_update(at_base, tmp_path):
    target, port = at_base
    good = _bundle(tmp_path, "good", MIGRATE)
    code, data = dynupdate_json("apply", "--pid", str(target.pid), good, "--rehearse-only")
    assert code == 0, data
    assert data["version"] == "base" and data["rehearsal"]["ok"] is True
    assert data["rehearsal"]["result"]["updated"]["instances"] == 1500
    assert _get(port, "/describe") == {"first": "account 0: 0"}
    code, data = dynupdate_json("apply", "--pid", str(target.pid), good, "--rehearse")
    assert code == 0, data
    assert data["version"] == "2" and data["rehearsal"]["ok"] is True and data["updated"]["instances"] == 1500
    assert _get(port, "/describe") == {"first": "account 0: 0 cents"}
    assert _proc_state(target.pid)["children"] == []
    proc = dynupdate("apply", "--pid", str(target.pid), good, "--rehearse", "--dry-run")
    assert proc.returncode == 2
