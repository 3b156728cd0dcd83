"""Pre-fork target: start the agent, then fork one child.

Prints `PARENT <pid>` and `CHILD <pid>` (the child prints its own line once its
agent is up), then `READY`. The child exits cleanly on SIGTERM (so atexit runs);
the parent then prints `CHILD_EXITED <status>` and keeps running.
"""
import os
import signal
import sys
import threading

import dynupdate_agent

dynupdate_agent.start()
print(f"PARENT {os.getpid()}", flush=True)

pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print(f"CHILD {os.getpid()} running={dynupdate_agent.running()}", flush=True)
    while True:
        signal.pause()
else:
    print("READY", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"CHILD_EXITED {os.waitstatus_to_exitcode(status)}", flush=True)
    threading.Event().wait()
