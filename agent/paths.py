"""Where an agent's socket lives, and the rules that make that place private.

The socket folder is `<base>/dynupdate-<uid>/` (base `/tmp`, or
`$DYNUPDATE_RUNTIME_DIR`). Whoever can write there could impersonate an agent
or sit between a client and a target, so a folder that is a symlink, belongs
to another user, or is open to group/others is refused rather than repaired.
"""
from __future__ import annotations

import os
import stat
from typing import Optional


class SocketDirError(Exception):
    """The socket folder exists but is not safe to use."""


def runtime_base() -> str:
    return os.environ.get("DYNUPDATE_RUNTIME_DIR") or "/tmp"


def socket_dir(uid: Optional[int] = None) -> str:
    uid = os.getuid() if uid is None else uid
    return os.path.join(runtime_base(), f"dynupdate-{uid}")


def socket_path(pid: int, uid: Optional[int] = None) -> str:
    return os.path.join(socket_dir(uid), f"{pid}.sock")


def check_dir(path: str, uid: int) -> None:
    """Raise SocketDirError unless `path` is a real folder, owned by uid, mode 0700."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise SocketDirError(f"{path} is a symlink; refusing to use it. Remove it and try again.")
    if not stat.S_ISDIR(st.st_mode):
        raise SocketDirError(f"{path} is not a directory; remove it and try again.")
    if st.st_uid != uid:
        raise SocketDirError(
            f"{path} is owned by uid {st.st_uid}, not {uid}; another user may have created it. "
            f"Remove it (as root) or set DYNUPDATE_RUNTIME_DIR to a private folder."
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SocketDirError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 700. "
            f"Run `chmod 700 {path}` if you created it, or remove it."
        )


def ensure_dir(uid: Optional[int] = None) -> str:
    """Create the private socket folder if needed, then verify it is safe."""
    uid = os.getuid() if uid is None else uid
    path = socket_dir(uid)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_dir(path, uid)
    return path
