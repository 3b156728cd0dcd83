"""Symbol files gdb loads before it stops the target (dynupdate/inject/symbols.py), on real processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dynupdate.inject import driver, symbols

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = os.path.join(HERE, "targets")

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /usr/bin/python3.11
55d0c0a01000-55d0c0b00000 r-xp 00001000 fd:01 1234 /usr/bin/python3.11
7f0000000000-7f0000028000 r--p 00000000 fd:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f0000100000 r-xp 00028000 fd:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 r--p 00000000 fd:01 77 /tmp/gone.so (deleted)
7f0000300000-7f0000321000 rw-p 00000000 00:00 0 [heap]
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
"""


def test_mapped_files_parses_bases_devices_and_skips_deleted_and_anonymous():
    files = symbols.mapped_files(MAPS)
    assert files == [("/usr/bin/python3.11", 0x55d0c0a00000, os.makedev(0xfd, 1), 1234),
                     ("/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7f0000000000, os.makedev(0xfd, 1), 42)]


def _has_debug(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return symbols.has_debug_info(fd)
    finally:
        os.close(fd)


def test_has_debug_info_on_real_files(tmp_path):
    assert _has_debug(sys.executable) in (True, False)  # parses without error
    if shutil.which("objcopy") is None or not _has_debug(sys.executable):
        pytest.skip("needs objcopy and an interpreter built with debug info")
    stripped = str(tmp_path / "stripped")
    subprocess.run(["objcopy", "--strip-debug", sys.executable, stripped], check=True)
    assert not _has_debug(stripped)
    not_elf = tmp_path / "text"
    not_elf.write_text("hello")
    assert not _has_debug(str(not_elf))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, os.path.join(TARGETS, "inj_event.py")], stdout=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"ready")
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_plan_for_a_live_target(sleeper, tmp_path):
    """The executable is loaded as is, every mapped library at its base, big DWARF ones as stripped copies."""
    with open(f"/proc/{sleeper.pid}/maps") as fh:
        maps = fh.read()
    plan = symbols.plan(sleeper.pid, maps, str(tmp_path))
    assert plan is not None
    assert plan["exe"] == os.readlink(f"/proc/{sleeper.pid}/exe")
    bases = {path: base for path, base, _dev, _ino in symbols.mapped_files(maps)}
    assert any("libc" in os.path.basename(p) for p, _ in plan["libs"])
    for path, base in plan["libs"]:
        if path.startswith(str(tmp_path)):
            assert not _has_debug(path)  # a stripped copy
        else:
            assert bases[path] == base


def test_plan_refuses_a_file_replaced_since_it_was_mapped(sleeper, tmp_path):
    with open(f"/proc/{sleeper.pid}/maps") as fh:
        maps = fh.read()
    lines = maps.splitlines()
    forged = "\n".join(line.replace(f" {line.split()[4]} ", " 999999999 ", 1) if "libc" in line else line
                       for line in lines)
    assert symbols.plan(sleeper.pid, forged, str(tmp_path)) is None


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_injection_without_preloaded_symbols_still_works(sleeper, tmp_path, monkeypatch):
    """When the plan is impossible (container root, replaced file, no objcopy), gdb reads symbols itself."""
    monkeypatch.setattr(symbols, "plan", lambda *a, **k: None)
    seen = {}
    real = driver._run_gdb

    def spy(*args):
        seen.update(real(*args))
        return seen

    monkeypatch.setattr(driver, "_run_gdb", spy)
    marker = str(tmp_path / "marker")
    driver.inject(sleeper.pid, f"open({marker!r}, 'w').write('ran')")
    assert open(marker).read() == "ran"
    assert seen["preloaded"] is False and seen["ok"] is True


def test_load_bias_check_on_real_files():
    fd = os.open(os.path.realpath(sys.executable), os.O_RDONLY)
    try:
        is_pie = os.pread(fd, 18, 0)[16] == 3
        assert symbols.load_bias_is_base(fd) is is_pie
    finally:
        os.close(fd)
    libc = next(p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6")
                if os.path.exists(p))
    fd = os.open(libc, os.O_RDONLY)
    try:
        assert symbols.load_bias_is_base(fd)
    finally:
        os.close(fd)
