"""Symbol files for gdb to load *before* it stops the target (issue #14: the attach stall).

gdb normally reads every shared library's symbols after attaching, while all
threads are stopped; with a libpython that carries DWARF (pyenv builds) that
alone froze the target for 0.1-0.7 s. Instead the driver tells the gdb
program which files the target maps and where, and gdb loads them first.
Files with DWARF are loaded as copies stripped of it (``objcopy
--strip-debug``: the ELF symbol table and ``.eh_frame`` stay, which is all
the thread classification and the inferior calls use), so that walking the
stacks does not expand debug info during the stop either.

Only used when it is provably right: the target shares our root (no
container path translation), every file still is the inode the target
mapped, and objcopy exists for the files that need stripping. Otherwise
`plan` returns None and gdb reads symbols at attach as before (slower stop,
same result).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

__all__ = ["has_debug_info", "mapped_files", "plan"]

_ELF_MAGIC = b"\x7fELF"
# Smaller files (extension modules) keep their DWARF: expanding it costs microseconds, a copy ~20 ms.
_STRIP_ABOVE = 1 << 20


def mapped_files(maps_text: str) -> list[tuple[str, int, int, int]]:
    """[(path, load base, device, inode)] of the files mapped from offset 0, in map order."""
    seen: dict[str, tuple[str, int, int, int]] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/") or int(parts[2], 16) != 0:
            continue
        path = parts[5]
        if path.endswith(" (deleted)") or path in seen:
            continue
        major, minor = (int(x, 16) for x in parts[3].split(":"))
        seen[path] = (path, int(parts[0].split("-")[0], 16), os.makedev(major, minor), int(parts[4]))
    return list(seen.values())


def has_debug_info(fd: int) -> bool:
    """Whether the ELF file open on fd has a .debug_info section (64-bit little-endian ELF only)."""
    head = os.pread(fd, 64, 0)
    if len(head) < 64 or head[:4] != _ELF_MAGIC or head[4] != 2 or head[5] != 1:
        return False
    shoff, = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
    if not shoff or shentsize < 64 or shnum == 0 or shnum > 4096 or shstrndx >= shnum:
        return False
    table = os.pread(fd, shentsize * shnum, shoff)
    if len(table) < shentsize * shnum:
        return False
    str_off, str_size = struct.unpack_from("<QQ", table, shstrndx * shentsize + 0x18)
    names = os.pread(fd, min(str_size, 1 << 20), str_off)
    for i in range(shnum):
        name_at, = struct.unpack_from("<I", table, i * shentsize)
        end = names.find(b"\0", name_at)
        if names[name_at:end] == b".debug_info":
            return True
    return False


def load_bias_is_base(fd: int) -> bool:
    """Whether a shared object's load bias equals the start of its first mapping (first PT_LOAD at 0).

    True for every ordinary PIC library; anything else (prelinked, not ET_DYN,
    unreadable headers) makes the caller fall back to gdb's own reading.
    """
    head = os.pread(fd, 64, 0)
    if len(head) < 64 or head[:4] != _ELF_MAGIC or head[4] != 2 or head[5] != 1:
        return False
    e_type, = struct.unpack_from("<H", head, 0x10)
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    if e_type != 3 or phentsize < 56 or not 0 < phnum < 256:  # ET_DYN
        return False
    table = os.pread(fd, phentsize * phnum, phoff)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 1:  # PT_LOAD
            p_vaddr, = struct.unpack_from("<Q", table, i * phentsize + 0x10)
            return p_vaddr == 0
    return False


def _open_checked(path: str, dev: int, ino: int) -> int | None:
    """A read-only fd on path if it still is the inode the target mapped, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_ino != ino or st.st_dev != dev or st.st_mode & 61440 != 32768:
        os.close(fd)
        return None
    return fd


def _plain(path: str) -> bool:
    """A path gdb's command line takes as one word (no blanks, quotes or backslashes)."""
    return not any(c.isspace() or c in "\"'\\" for c in path)


def _stripped_copy(fd: int, dest: str, timeout: float) -> bool:
    objcopy = shutil.which("objcopy")
    if not objcopy:
        return False
    try:
        done = subprocess.run([objcopy, "--strip-debug", f"/proc/self/fd/{fd}", dest], check=False, pass_fds=(fd,),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and os.path.isfile(dest)


def plan(pid: int, maps_text: str, workdir: str, timeout: float = 5.0) -> dict | None:
    """{"exe": path, "exe_pie": bool, "libs": [[path, base], ...]} for the gdb program, or None (gdb reads at attach).

    Stripped copies are written into workdir (the driver's private folder).
    The paths are resolved with realpath from the target's own view (same
    root as ours, checked), and each file is checked against the device and
    inode in /proc/PID/maps, so a file replaced since it was mapped is
    never described to gdb as the target's.
    """
    try:
        if os.stat(f"/proc/{pid}/root") != os.stat("/"):
            return None
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    files = mapped_files(maps_text)
    if not files or exe.endswith(" (deleted)") or not _plain(workdir):
        return None
    libs: list[list[object]] = []
    exe_ok = False
    exe_pie = True
    for index, (path, base, dev, ino) in enumerate(files):
        fd = _open_checked(path, dev, ino)
        if fd is None:
            return None
        try:
            if os.pread(fd, 4, 0) != _ELF_MAGIC:
                continue  # locale archives, caches: not symbol files
            if path == exe:
                exe_ok = True  # loaded with `file`, as is: gdb must recognise it as the target's executable
                exe_pie = os.pread(fd, 18, 0)[16] != 2  # not ET_EXEC: relocated at attach
                continue
            if not load_bias_is_base(fd):
                return None
            use = path
            if os.fstat(fd).st_size > _STRIP_ABOVE and has_debug_info(fd):
                use = os.path.join(workdir, f"sym{index}-{os.path.basename(path)}")
                if not _stripped_copy(fd, use, timeout):
                    return None
            if not _plain(use):
                return None
            libs.append([use, base])
        finally:
            os.close(fd)
    if not exe_ok or not _plain(exe):
        return None
    return {"exe": exe, "exe_pie": exe_pie, "libs": libs}
