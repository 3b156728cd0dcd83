"""Remove agent sockets left behind by processes that no longer exist.

A target killed with SIGKILL (or SIGTERM where the agent could not install a
handler) cannot remove its socket. `dynupdate ps` sweeps them: only in socket
folders the current user owns, only socket files named `<pid>.sock` whose
pid no longer exists. A live process's socket is never touched, even when no
agent answers on it.
"""
from __future__ import annotations

import glob
import os
import stat
from typing import List

from dynupdate_agent import paths


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_sockets() -> List[str]:
    """Unlink the sockets of dead processes in the user's own socket folders; returns what was removed."""
    removed = []
    uid = os.getuid()
    for folder in glob.glob(os.path.join(paths.runtime_base(), "dynupdate-*")):
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        for path in glob.glob(os.path.join(folder, "*.sock")):
            pid_text = os.path.basename(path)[:-len(".sock")]
            if not pid_text.isdigit() or _pid_exists(int(pid_text)):
                continue
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                pass
    return removed
