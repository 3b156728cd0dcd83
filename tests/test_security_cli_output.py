"""Issue 9, items 4 and 7: the CLI trusts nothing a target (or another user's process) supplies.

- `ps` next to processes whose argv holds terminal escape sequences and rich markup,
  each serving a fake agent socket that dribbles one byte every 0.2 s: the whole
  `ps` finishes within 10 s, prints no raw ESC/CSI byte, shows `[/]` verbatim.
- A version label `2[/]` applies and is shown verbatim by apply, status, ps and
  rollback (it used to crash the CLI after the target had changed).
- An error message and traceback from the target holding escape sequences and
  markup are printed escaped, with the right exit code.
"""
import json
import os
import shutil
import sys
import time

import pytest

from conftest import TARGETS, dynupdate

sys.path.insert(0, str(TARGETS))
from rel_helpers import V2, start_rel  # noqa: E402

DRIBBLER = str(TARGETS / "sec_dribbler.py")
HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[31mRED", "[/]", "[bold]b[/bold]", "\x9b31mC1"]
WIDE = {"COLUMNS": "400"}          # one table row per process, so the checks below see whole cells


def no_raw_controls(text: str) -> None:
    for byte in ("\x1b", "\x9b", "\x07"):
        assert byte not in text, f"raw {byte!r} in output:\n{text!r}"


def test_ps_with_hostile_argv_and_dribbling_sockets_finishes_quickly(start_target, runtime_env):
    env = dict(runtime_env, **WIDE)
    fakes = [start_target([sys.executable, DRIBBLER, *HOSTILE], env=env) for _ in range(6)]
    start = time.monotonic()
    proc = dynupdate("ps", env=env, timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc
    assert took < 10, f"ps took {took:.1f} s"
    no_raw_controls(proc.stdout + proc.stderr)
    for fake in fakes:
        assert str(fake.pid) in proc.stdout, proc.stdout
    assert "[/]" in proc.stdout and "[bold]b[/bold]" in proc.stdout, proc.stdout
    assert "\\x1b]0;pwned\\x07" in proc.stdout, proc.stdout     # shown, as an escape

    proc = dynupdate("ps", "--json", env=env, timeout=60)
    assert proc.returncode == 0, proc
    rows = {row["pid"]: row for row in json.loads(proc.stdout)}
    for fake in fakes:
        row = rows[fake.pid]
        assert row["agent"] is False and row["agent_version"] is None, row
        assert row["cmdline"].endswith(" ".join(HOSTILE)), row     # JSON keeps the data exact


def test_a_hostile_agent_with_malformed_replies_cannot_crash_or_drive_the_terminal(start_target, runtime_env):
    env = dict(runtime_env, **WIDE)
    fake = start_target([sys.executable, DRIBBLER, "--junk", *HOSTILE], env=env)
    pid = str(fake.pid)
    for args in (("status", "--pid", pid, "--no-inject"), ("status", "--pid", pid, "--no-inject", "--json"),
                 ("attach", "--pid", pid), ("ps",)):
        proc = dynupdate(*args, env=env, timeout=60)
        assert proc.returncode == 0, (args, proc)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        no_raw_controls(proc.stdout + proc.stderr)
    assert "\\x1b]0;pwned\\x07\\x1b[31m[/]\\u202e" in dynupdate("status", "--pid", pid, "--no-inject", env=env).stdout


@pytest.fixture
def label_bundle(tmp_path):
    folder = tmp_path / "markup"
    shutil.copytree(V2, folder)
    manifest = (folder / "patch.toml").read_text()
    (folder / "patch.toml").write_text(manifest.replace('version = "2"', 'version = "2[/]"')
                                       .replace('name = "rel-v2"', 'name = "rel[bold]"'))
    return str(folder)


@pytest.fixture
def hostile_error_bundle(tmp_path):
    folder = tmp_path / "boom"
    shutil.copytree(V2, folder)
    with open(folder / "items.py", "a") as fh:
        fh.write('\nraise RuntimeError("\\x1b[31m[/]boom\\x1b]0;title\\x07")\n')
    return str(folder)


def test_a_version_label_with_markup_is_shown_verbatim(start_target, runtime_env, label_bundle,
                                                        hostile_error_bundle):
    env = dict(runtime_env, **WIDE)
    rel = start_rel(start_target, "--items", "3", env=runtime_env)
    pid = str(rel.pid)

    proc = dynupdate("apply", "--pid", pid, hostile_error_bundle, env=env)
    assert proc.returncode == 1, proc                               # failed in the target, reported as such
    no_raw_controls(proc.stdout + proc.stderr)
    assert "[/]boom" in proc.stderr and "\\x1b[31m" in proc.stderr, proc.stderr
    assert "target-side traceback" in proc.stderr, proc.stderr

    proc = dynupdate("apply", "--pid", pid, label_bundle, env=env)
    assert proc.returncode == 0, proc
    assert "base -> 2[/]" in proc.stdout, proc.stdout
    assert rel.get("/label") == {"label": "v2"}
    proc = dynupdate("status", "--pid", pid, "--no-inject", env=env)
    assert proc.returncode == 0, proc
    assert "version 2[/]" in proc.stdout and "rel[bold]" in proc.stdout, proc.stdout
    proc = dynupdate("status", "--pid", pid, "--no-inject", "--json", env=env)
    assert json.loads(proc.stdout)["version"] == "2[/]"
    proc = dynupdate("ps", env=env)
    assert proc.returncode == 0, proc
    row = [line for line in proc.stdout.splitlines() if f" {pid} " in line]
    assert row and "2[/]" in row[0], proc.stdout
    proc = dynupdate("ps", "--json", env=env)
    assert {r["pid"]: r for r in json.loads(proc.stdout)}[rel.pid]["version"] == "2[/]"
    proc = dynupdate("rollback", "--pid", pid, env=env)
    assert proc.returncode == 0, proc
    assert "2[/] -> base" in proc.stdout, proc.stdout
    assert rel.get("/label") == {"label": "v1"}
    os.kill(rel.pid, 0)
