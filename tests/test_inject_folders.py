"""The injector's folders against a hostile target user, and after a killed CLI (issue #9 items 3, 7).

Real processes: gdb injects into targets; the hostile target runs as `nobody`
and tries to plant symlinks to a root-only file wherever the injector might
read; killed injector processes are SIGKILLed mid-attach.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from conftest import Target

from dynupdate import inject as inj
from dynupdate.inject import folders

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = os.path.join(HERE, "targets")
DEBIAN_PY = "/usr/bin/python3.11"
TMP = tempfile.gettempdir()

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
needs_root_and_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(DEBIAN_PY, os.X_OK),
    reason="needs root (to run a target as nobody) and /usr/bin/python3.11 (readable by nobody)")


def start(argv, user=None) -> Target:
    """A target (the suite's shared Target) once it printed "ready"."""
    target = Target(argv, user=user)
    try:
        target.wait_for("ready", 20)
    except BaseException:
        target.stop()
        raise
    return target


def stop(target: Target) -> None:
    target.stop()


def our_folders(pid: int) -> list:
    """Injection folders named for process pid, in the temp dir (ours and the target's /tmp are the same here)."""
    return [n for n in os.listdir(TMP) if n.startswith(f"{folders.PREFIX}{pid}-")]


def tracer_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"TracerPid:\s*(\d+)", fh.read()).group(1))


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@needs_gdb
def test_killed_injectors_leave_no_folder(tmp_path):
    """10 injector processes SIGKILLed at different moments of an attach; the next injection removes
    every folder they left, the target lives on and the code ran at most once per attempt."""
    marker = str(tmp_path / "marker")
    target = start([sys.executable, os.path.join(TARGETS, "inj_event.py")])
    killed = []
    try:
        code = f"with open({marker!r}, 'a') as f: f.write('ran\\n')"
        for i in range(10):
            injector = subprocess.Popen([sys.executable, "-c", "import sys; from dynupdate import inject; "
                                         "inject.inject(int(sys.argv[1]), sys.argv[2], timeout=30)",
                                         str(target.pid), code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            killed.append(injector.pid)
            assert wait_until(lambda: our_folders(injector.pid) or injector.poll() is not None, 30)
            time.sleep(0.03 * i)  # from "folders just made" to "gdb attached or done"
            try:
                orphans = psutil.Process(injector.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                orphans = []
            injector.send_signal(signal.SIGKILL)
            injector.wait()
            # a gdb that outlives its injector finishes (or is mid-call) and detaches by itself
            psutil.wait_procs(orphans, timeout=30)
            assert not [p for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            assert wait_until(lambda: tracer_of(target.pid) == 0, 30)
        left = [name for pid in killed for name in our_folders(pid)]
        print(f"{len(left)} folders left by 10 killed injectors")
        inj.inject(target.pid, code, timeout=30)
        assert [name for pid in killed for name in our_folders(pid)] == []
        assert our_folders(os.getpid()) == []
        with open(marker) as fh:
            runs = len(fh.read().splitlines())
        assert 1 <= runs <= 11
        assert target.alive()
    finally:
        stop(target)


@needs_gdb
@needs_root_and_nobody
def test_planted_symlink_never_leads_root_to_read_the_linked_file(tmp_path):
    """The target's user (nobody) races to replace the status file with a link to a root-only file;
    root's injector reports the code's own error and never the secret, and nothing was planted."""
    secret_dir = tempfile.mkdtemp(prefix="du-secret-")
    secret = os.path.join(secret_dir, "secret")
    with open(secret, "w") as fh:
        fh.write("TOP-SECRET-CONTENT\n")
    os.chmod(secret, 0o600)
    target = start([DEBIAN_PY, "-S", os.path.join(TARGETS, "inj_planter.py"), secret], user="nobody")
    try:
        for _ in range(5):
            with pytest.raises(inj.InjectionError) as info:
                inj.inject(target.pid, "raise ValueError('boom')", timeout=30)
            assert "TOP-SECRET" not in str(info.value)
            assert "ValueError: boom" in str(info.value)
        assert target.alive()
        target.stop()
        assert [line for line in target.output().splitlines() if line.startswith("planted")] == []
    finally:
        stop(target)
        shutil.rmtree(secret_dir, ignore_errors=True)


def test_stale_cleanup_never_follows_or_removes_what_is_not_ours(tmp_path):
    """Names that look like a dead injector's folder but are a symlink, or a folder another user owns,
    are left alone; a real stale folder of ours is removed."""
    parent = str(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    dead = "dynupdate-inj-999999-1-abcdef"
    os.symlink(str(victim), os.path.join(parent, dead))
    foreign = "dynupdate-inj-999998-1-abcdef"
    os.mkdir(os.path.join(parent, foreign))
    if os.geteuid() == 0:
        os.chown(os.path.join(parent, foreign), 65534, 65534)
    ours = "dynupdate-inj-999997-1-abcdef"
    os.mkdir(os.path.join(parent, ours))
    (tmp_path / ours / "status").write_text("x")
    alive = f"dynupdate-inj-{os.getpid()}-{folders.process_start(os.getpid())}-abcdef"
    os.mkdir(os.path.join(parent, alive))
    legacy_old, legacy_new = "dynupdate-inj-ab_cd012", "dynupdate-inj-xy_zw345"
    for name in (legacy_old, legacy_new):
        os.mkdir(os.path.join(parent, name))
    day_ago = time.time() - folders.LEGACY_AGE_S - 60
    os.utime(os.path.join(parent, legacy_old), (day_ago, day_ago))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        folders.remove_stale(fd)
    finally:
        os.close(fd)
    assert (victim / "keep").read_text() == "keep"
    assert os.path.islink(os.path.join(parent, dead))
    assert os.path.isdir(os.path.join(parent, alive))
    assert not os.path.exists(os.path.join(parent, ours))
    assert not os.path.exists(os.path.join(parent, legacy_old))  # an old version's, a day old
    assert os.path.isdir(os.path.join(parent, legacy_new))  # may belong to a running old version
    if os.geteuid() == 0:
        assert os.path.isdir(os.path.join(parent, foreign))


@needs_root_and_nobody
def test_drop_folder_is_ours_and_the_status_file_the_targets():
    """Mode 0711 root-owned drop folder; the only file the target may write is its own status file."""
    target = start([DEBIAN_PY, "-S", os.path.join(TARGETS, "inj_event.py")], user="nobody")
    try:
        fields = {"Uid": "65534 65534 65534 65534", "Gid": "65534 65534 65534 65534"}
        with folders.InjectionFolders(target.pid, fields) as work:
            drop = f"/proc/{target.pid}/root{work.drop_target}"
            st = os.stat(drop)
            assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o711
            status = os.stat(os.path.join(drop, folders.STATUS))
            assert status.st_uid == 65534 and stat.S_IMODE(status.st_mode) == 0o600
            local = os.stat(work.local)
            assert stat.S_IMODE(local.st_mode) == 0o700
            # a status written by the target is read; once replaced (here by root) it is ignored
            with open(os.path.join(drop, folders.STATUS), "w") as fh:
                fh.write("ok\n")
            assert work.read_status() == "ok"
            os.unlink(os.path.join(drop, folders.STATUS))
            os.symlink("/etc/hostname", os.path.join(drop, folders.STATUS))
            assert work.read_status() is None
            names = (work.local, drop)
        assert not any(os.path.exists(n) for n in names)
    finally:
        stop(target)


def test_blocked_for_reads_mode_bits_along_the_path():
    from dynupdate.attach import blocked_for

    base = tempfile.mkdtemp(prefix="du-blocked-")  # directly in /tmp: pytest's own folder is private
    try:
        os.chmod(base, 0o755)
        private = os.path.join(base, "private")
        os.mkdir(private, 0o700)
        with open(os.path.join(private, "agent.py"), "w") as fh:
            fh.write("x = 1\n")
        public = os.path.join(base, "public")
        os.mkdir(public, 0o755)
        os.chmod(public, 0o755)
        for name, mode in (("agent.py", 0o644), ("secret.py", 0o600)):
            with open(os.path.join(public, name), "w") as fh:
                fh.write("x = 1\n")
            os.chmod(os.path.join(public, name), mode)
        nobody = (65534, {65534})
        if os.geteuid() == 0:
            assert blocked_for(os.path.join(private, "agent.py"), *nobody) == private
            assert blocked_for(os.path.join(public, "secret.py"), *nobody) == os.path.join(public, "secret.py")
            assert blocked_for(os.path.join(public, "agent.py"), *nobody) is None
        assert blocked_for(os.path.join(private, "agent.py"), 0, {0}) is None  # root reads everything
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_gdb
@needs_root_and_nobody
def test_attach_to_another_users_process_names_what_it_cannot_read():
    """Root's CLI attaching to nobody's process works when nobody can read dynupdate's files, also when
    it cannot read the CLI's msgpack (a CLI installed under /root): the agent then uses its own codec."""
    from conftest import dynupdate

    from dynupdate.attach import _msgpack_dir, blocked_for

    target = start([DEBIAN_PY, "-S", os.path.join(TARGETS, "inj_event.py")], user="nobody")
    try:
        blocked = blocked_for(os.path.join(_msgpack_dir(), "msgpack", "__init__.py"), 65534, {65534})
        proc = dynupdate("attach", "--pid", str(target.pid), "--inject-timeout", "5", timeout=60)
        said = " ".join(proc.stderr.split())
        assert proc.returncode == 0, said
        status = dynupdate("status", "--pid", str(target.pid), "--json", "--no-inject", timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["version"] == "base", status.stderr
        print(f"the CLI's msgpack readable by nobody: {blocked is None}")  # on this machine's layout
        assert target.alive()
    finally:
        stop(target)
