"""A process that forks on command while it is being updated (fork-safety tests).

Commands, one a line, from the FIFO named by argv[1]: `hold` (a thread enters pf_fork_app.hold, blocking the safe point),
`release` (let it return), `fork` (fork a child that prints what it runs, then idles).
"""
import os
import sys
import threading
import time

import dynupdate_agent
import pf_fork_app

dynupdate_agent.start()
print("READY", os.getpid(), flush=True)
for line in open(sys.argv[1]):
    command = line.strip()
    if command == "hold":
        threading.Thread(target=pf_fork_app.hold, daemon=True).start()
        print("HOLDING", flush=True)
    elif command == "release":
        pf_fork_app.release.set()
    elif command == "fork":
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            print("CHILD", os.getpid(), pf_fork_app.greet(), dynupdate_agent.current_version(), flush=True)
            while True:
                time.sleep(0.2)
        print("FORKED", pid, f"{time.monotonic() - started:.2f}", flush=True)
