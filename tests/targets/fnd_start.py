"""Opt-in target: `import dynupdate_agent; dynupdate_agent.start()` in the program.

Starts a thread before the agent, calls start() twice, defines an @updatable
class with 5 live instances, starts threads after the agent (one in generation
0, one after advancing the generation to 1, one inside an activity()), prints
`READY <json>`. SIGUSR1: drop 2 instances, gc, print `DROPPED <n>`.
SIGUSR2: create 4 more, print `CREATED <n>`.
"""
import gc
import json
import os
import signal
import sys
import threading

release = threading.Event()
early = threading.Thread(target=release.wait, name="early-thread", daemon=True)
early.start()

handlers_before = {s: signal.getsignal(s) for s in signal.valid_signals()}

import dynupdate_agent  # noqa: E402
from dynupdate_agent import generations  # noqa: E402

path1 = dynupdate_agent.start()
path2 = dynupdate_agent.start()
handlers_after = {s: signal.getsignal(s) for s in signal.valid_signals()}


@dynupdate_agent.updatable
class Item:
    def __init__(self, n):
        self.n = n


@dynupdate_agent.updatable
class Other:
    pass


items = [Item(i) for i in range(5)]
other = Other()

gen0 = threading.Thread(target=release.wait, name="worker-gen0", daemon=True)
gen0.start()
generations.advance()
gen1 = threading.Thread(target=release.wait, name="worker-gen1", daemon=True)
gen1.start()

inside = threading.Event()


def busy():
    with dynupdate_agent.activity("job"):
        inside.set()
        release.wait()


@dynupdate_agent.activity()
def decorated():
    inside2.set()
    release.wait()


inside2 = threading.Event()
act = threading.Thread(target=busy, name="in-activity", daemon=True)
act.start()
act2 = threading.Thread(target=decorated, name="in-decorated-activity", daemon=True)
act2.start()
inside.wait()
inside2.wait()


def on_usr1(signum, frame):
    del items[:2]
    gc.collect()
    print(f"DROPPED {len(items)}", flush=True)


def on_usr2(signum, frame):
    items.extend(Item(i) for i in range(4))
    print(f"CREATED {len(items)}", flush=True)


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGUSR2, on_usr2)
print("READY " + json.dumps({
    "pid": os.getpid(), "path1": path1, "path2": path2, "running": dynupdate_agent.running(),
    "version": dynupdate_agent.current_version(), "handlers_unchanged": handlers_before == handlers_after,
    "agent_threads": [t.name for t in threading.enumerate() if t.name.startswith("dynupdate")],
}), flush=True)
while True:
    signal.pause()
