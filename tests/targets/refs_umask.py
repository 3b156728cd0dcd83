"""Target for the umask test: one thread creates folders with mode 0777 in a
tight loop while the main thread starts and stops the agent N times. With a
umask of 022 every folder must come out 0755; the agent must never change the
process-wide umask, not even for the instant of a bind().

Prints `READY`, then `DONE <folders made> <wrong modes> <agent starts>` and
keeps running with the agent started (so the test can read /proc/PID/status
and talk to the agent) until it is killed.
"""
import os
import stat
import sys
import tempfile
import threading

import dynupdate_agent
from dynupdate_agent import runtime

os.umask(0o022)
sys.setswitchinterval(1e-6)  # hand the GIL over often, as a busy server would
starts = int(sys.argv[1]) if len(sys.argv) > 1 else 20
work = tempfile.mkdtemp(prefix="du-umask-")
stop = threading.Event()
made = [0]
wrong = []


def make_folders() -> None:
    i = 0
    while not stop.is_set():
        path = os.path.join(work, str(i % 8))
        os.mkdir(path, 0o777)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode != 0o755:
            wrong.append(oct(mode))
        os.rmdir(path)
        made[0] += 1
        i += 1


print("READY", flush=True)
worker = threading.Thread(target=make_folders, daemon=True)
worker.start()
for _ in range(starts):
    path = dynupdate_agent.start()
    if stat.S_IMODE(os.stat(path).st_mode) != 0o600:
        wrong.append("socket " + oct(stat.S_IMODE(os.stat(path).st_mode)))
    runtime.stop()
stop.set()
worker.join()
os.rmdir(work)
dynupdate_agent.start()
print("DONE", made[0], len(wrong), starts, " ".join(wrong[:5]), flush=True)
threading.Event().wait()
