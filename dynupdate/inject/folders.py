"""The two folders an injection uses, made safe against the target's user, and never left behind.

* The **private folder** (in our own temp dir, mode 0700) holds gdb's config,
  result, log and lock, and stripped symbol copies. Only we can write it.
* The **drop folder** in the target's ``/tmp`` (seen through
  ``/proc/PID/root/tmp``, so containers work) holds the one file the target
  must write: the ``status`` line of a queued (pending-call) injection, and
  for Python >= 3.14 the script ``sys.remote_exec`` reads. When root attaches
  to another user's process, that user must not be able to make root read or
  print a file of their choosing (issue #9 item 3). So the drop folder is
  created and kept by *us* (mode 0711: the target can reach a file by name,
  cannot list, create, rename or replace anything inside), the status file
  is created by us, empty, and handed to the target's uid, and it is read
  back through the folder's descriptor with ``O_NOFOLLOW``, only if it is
  still the very inode we created, a regular file, and only its first 4 KiB.
  The parent ``/tmp`` is opened with ``O_NOFOLLOW`` too.

Both names carry our pid and its start time (``dynupdate-inj-PID-START-…``).
A CLI killed during an attach cannot remove its folders, so every injection
first removes the folders of injections whose process no longer exists
(same name scheme, owned by us, found in the two parent folders it uses),
and those of older dynupdate versions (``dynupdate-inj-XXXXXXXX``) once a day
old.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile
import time

from typing_extensions import Self

__all__ = ["InjectionFolders", "printable", "process_start", "remove_stale"]

PREFIX = "dynupdate-inj-"
_NAME = re.compile(r"^dynupdate-inj-(\d+)-(\d+)-[0-9a-f]+$")
# Folders of dynupdate versions before the pid-start names (tempfile.mkdtemp): no owner process
# to check, so only removed once they are clearly abandoned.
_LEGACY_NAME = re.compile(r"^dynupdate-inj-[a-z0-9_]{8}$")
LEGACY_AGE_S = 24 * 3600
STATUS = "status"
_STATUS_MAX = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def printable(text: str) -> str:
    """Text the target wrote, safe to put in a message for a terminal: control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def process_start(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot (None when it does not exist): pid + start is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(pid: int, start: int) -> bool:
    return process_start(pid) == start


def _remove_folder(parent_fd: int, name: str) -> None:
    """Remove parent/name and the plain files in it, never following a link."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            try:
                os.unlink(entry, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        pass


def remove_stale(parent_fd: int) -> int:
    """Remove our folders (by name and owner) of injections whose CLI process is gone; returns how many."""
    removed = 0
    try:
        names = os.listdir(parent_fd)
    except OSError:
        return 0
    now = time.time()
    for name in names:
        match = _NAME.match(name)
        legacy = match is None and _LEGACY_NAME.match(name) is not None
        if not (match or legacy) or (match and _alive(int(match.group(1)), int(match.group(2)))):
            continue
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except OSError:
            continue
        if legacy and now - st.st_mtime < LEGACY_AGE_S:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            _remove_folder(parent_fd, name)
            removed += 1
    return removed


def _folder_name() -> str:
    return f"{PREFIX}{os.getpid()}-{process_start(os.getpid()) or 0}-{secrets.token_hex(6)}"


class InjectionFolders:
    """The private folder and (when possible) the drop folder of one injection; `close()` removes both."""

    def __init__(self, pid: int, fields: dict[str, str]) -> None:
        self.pid = pid
        self._parents: list = []
        self._drop_fd: int | None = None
        self._drop_name = ""
        self._status_ino: int | None = None
        #: the status file's path as the target sees it (None: no drop folder, no confirmation)
        self.status_target: str | None = None
        #: the drop folder as the target sees it
        self.drop_target: str | None = None
        base = tempfile.gettempdir()
        local_parent = os.open(base, _DIR_FLAGS)
        self._parents.append(local_parent)
        remove_stale(local_parent)
        self._local_name = _folder_name()
        os.mkdir(self._local_name, 0o700, dir_fd=local_parent)
        self.local = os.path.join(base, self._local_name)
        try:
            self._make_drop(fields)
        except OSError:  # no confirmation file: the synchronous path still knows the call returned
            if self._drop_fd is not None:
                os.close(self._drop_fd)
                self._drop_fd = None
            if self._drop_name and len(self._parents) > 1:
                _remove_folder(self._parents[1], self._drop_name)
            self.status_target = self.drop_target = None

    def _make_drop(self, fields: dict[str, str]) -> None:
        parent = os.open(f"/proc/{self.pid}/root/tmp", _DIR_FLAGS)
        self._parents.append(parent)
        st = os.fstat(parent)
        if st.st_uid not in (0, os.geteuid()) and not st.st_mode & stat.S_ISVTX:
            return  # a /tmp another user owns and may rearrange: no drop folder
        remove_stale(parent)
        name = _folder_name()
        os.mkdir(name, 0o700, dir_fd=parent)
        self._drop_name = name
        self._drop_fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        os.fchmod(self._drop_fd, 0o711)
        fd = os.open(STATUS, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self._drop_fd)
        try:
            uids, gids = fields.get("Uid", "").split(), fields.get("Gid", "").split()
            if uids and gids and os.geteuid() == 0 and int(uids[1]) != 0:
                os.fchown(fd, int(uids[1]), int(gids[1]))
            self._status_ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        self.drop_target = f"/tmp/{name}"
        self.status_target = f"{self.drop_target}/{STATUS}"

    def path(self, name: str) -> str:
        """A file in the private folder."""
        return os.path.join(self.local, name)

    def write_for_target(self, name: str, text: str) -> str | None:
        """Write a file the target may read (not write) into the drop folder; its path as the target sees it."""
        if self._drop_fd is None or self.drop_target is None:
            return None
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=self._drop_fd)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fd, 0o644)
            fh.write(text)
        return f"{self.drop_target}/{name}"

    def read_status(self) -> str | None:
        """The wrapper's one-line outcome once written completely; None meanwhile or if anything is off."""
        if self._drop_fd is None:
            return None
        try:
            fd = os.open(STATUS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._drop_fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != self._status_ino:
                return None
            data = os.read(fd, _STATUS_MAX)
        except OSError:
            return None
        finally:
            os.close(fd)
        text = data.decode("utf-8", "replace")
        return printable(text.strip()) if text.endswith("\n") else None

    @property
    def has_status(self) -> bool:
        return self._drop_fd is not None

    def close(self) -> None:
        """Remove both folders (idempotent)."""
        if self._parents:
            _remove_folder(self._parents[0], self._local_name)
        if self._drop_fd is not None and len(self._parents) > 1:
            os.close(self._drop_fd)
            self._drop_fd = None
            _remove_folder(self._parents[1], self._drop_name)
        for fd in self._parents:
            os.close(fd)
        self._parents = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
