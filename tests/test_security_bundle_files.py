"""Issue 9, items 6 and 7: a bundle is regular files inside the bundle folder.

Each hostile or broken layout makes the real CLI (`check`, and `apply` before it
contacts any target) exit 2 within seconds with a message naming the file and
the reason, and never print what a link points to: symlinked file, folder or
manifest; a fifo (must not block); a device; a directory where a file belongs;
a file over the per-file limit; a bundle over the per-bundle limit (agreed with
the wire's frame limit); a module name that is not a dotted identifier. A UTF-8
byte-order mark is accepted (and dropped).
"""
import os
import shutil
import stat
import time

import pytest

from conftest import ROOT, dynupdate

from dynupdate.bundle import load_bundle
from dynupdate_agent import wire

V2 = ROOT / "tests" / "bundles" / "rel_v2"
SECRET = "TOP-SECRET-KEY-MATERIAL-0123456789"


def make(tmp_path, modules=None):
    folder = tmp_path / "bundle"
    folder.mkdir()
    modules = modules or {"relapp.items": "items.py"}
    lines = ['name = "t"', 'version = "2"', "[modules]"] + [f'"{m}" = "{f}"' for m, f in modules.items()]
    (folder / "patch.toml").write_text("\n".join(lines) + "\n")
    return folder


def symlinked_file(tmp_path):
    secret = tmp_path / "signing.key"
    secret.write_text(SECRET)
    folder = make(tmp_path)
    os.symlink(secret, folder / "items.py")
    return folder, "symbolic link"


def symlinked_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "items.py").write_text(f"KEY = {SECRET!r}\n")
    folder = make(tmp_path, {"relapp.items": "sub/items.py"})
    os.symlink(outside, folder / "sub")
    return folder, "symbolic link"


def symlinked_manifest(tmp_path):
    real = tmp_path / "elsewhere.toml"
    real.write_text(f'name = "{SECRET}"\nversion = "2"\n[modules]\n"relapp.items" = "items.py"\n')
    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copy(V2 / "items.py", folder / "items.py")
    os.symlink(real, folder / "patch.toml")
    return folder, "symbolic link"


def fifo(tmp_path):
    folder = make(tmp_path)
    os.mkfifo(folder / "items.py")
    return folder, "not a regular file"


def device(tmp_path):
    folder = make(tmp_path)
    try:
        os.mknod(folder / "items.py", 0o600 | stat.S_IFCHR, os.makedev(1, 5))   # /dev/zero's numbers
    except PermissionError:
        pytest.skip("mknod needs root")
    return folder, "not a regular file"


def directory(tmp_path):
    folder = make(tmp_path)
    (folder / "items.py").mkdir()
    return folder, "is a directory"


def huge_file(tmp_path):
    folder = make(tmp_path)
    with open(folder / "items.py", "wb") as fh:
        fh.truncate(70 * 1024 * 1024)          # sparse: costs no disk
    return folder, "over the limit"


def huge_bundle(tmp_path):
    per_file = wire.MAX_FILE_BYTES - 1024
    count = wire.MAX_BUNDLE_BYTES // per_file + 1
    folder = make(tmp_path, {f"relapp.big{i}": f"big{i}.py" for i in range(count)})
    line = "#" + "x" * 1022 + "\n"
    for i in range(count):
        with open(folder / f"big{i}.py", "w") as fh:
            fh.write(line * (per_file // len(line)))
    return folder, "limit is"


def bad_name(tmp_path):
    folder = make(tmp_path, {"relapp.items\\nrelapp.other": "items.py"})
    shutil.copy(V2 / "items.py", folder / "items.py")
    return folder, "not a dotted Python module name"


CASES = [symlinked_file, symlinked_folder, symlinked_manifest, fifo, device, directory, huge_file, huge_bundle,
         bad_name]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_bad_bundle_exits_2_quickly_with_a_clear_message(tmp_path, case):
    folder, reason = case(tmp_path)
    for args in (("check", str(folder)), ("apply", "--pid", str(os.getpid()), str(folder))):
        start = time.monotonic()
        proc = dynupdate(*args, timeout=60)
        took = time.monotonic() - start
        assert proc.returncode == 2, (args, proc)
        assert took < 10, f"{args[0]} took {took:.1f} s"
        assert reason in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr, proc.stderr


def test_a_byte_order_mark_is_accepted(tmp_path):
    folder = tmp_path / "bom"
    shutil.copytree(V2, folder)
    for name in ("patch.toml", "items.py"):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(b"\xef\xbb\xbf" + data)
    proc = dynupdate("check", str(folder))
    assert proc.returncode == 0, proc
    loaded = load_bundle(str(folder))
    assert not loaded["modules"][0]["source"].startswith("\ufeff")
    assert loaded["modules"][0]["source"] == (V2 / "items.py").read_text()
