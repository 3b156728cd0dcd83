"""Injection target that attacks the injector's folders (run it as another user, e.g. nobody).

usage: inj_planter.py SECRET_PATH
The main thread waits on an Event (a safe thread for injection); a daemon
thread watches /tmp for dynupdate-inj-* folders and tries, in a tight loop,
to replace every file the injector may read there (status, inject.py) with a
symlink to SECRET_PATH, and to plant new links beside them. Each line
"planted PATH" on stdout is a link that the kernel let it create.
"""
import os
import sys
import threading
import time

SECRET = sys.argv[1]
EVENT = threading.Event()


def attack():
    done = set()
    while True:
        try:
            names = [n for n in os.listdir("/tmp") if n.startswith("dynupdate-inj-")]
        except OSError:
            names = []
        for name in names:
            folder = "/tmp/" + name
            for entry in ("status", "inject.py", "result.json", "gdb.log"):
                path = folder + "/" + entry
                try:
                    os.unlink(path)
                except OSError:
                    pass
                try:
                    os.symlink(SECRET, path)
                except OSError:
                    continue
                if path not in done:
                    done.add(path)
                    print("planted", path, flush=True)
        time.sleep(0.0005)


threading.Thread(target=attack, daemon=True).start()
print("ready", flush=True)
EVENT.wait()
