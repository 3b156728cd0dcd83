"""Injection target: a thread holds the GIL in C (catastrophic regex backtracking, ~1-2 s each).

usage: inj_gil.py WORKDIR. Prints `ready` when the first C-level match starts;
writes WORKDIR/matches after each match; stops when WORKDIR/stop exists.
"""
import os
import re
import sys
import threading
import time

workdir = sys.argv[1]
PATTERN = re.compile(r"(a+)+$")
SUBJECT = "a" * int(os.environ.get("INJ_GIL_N", "24")) + "b"
started = threading.Event()


def hog():
    done = 0
    while not os.path.exists(os.path.join(workdir, "stop")):
        started.set()
        PATTERN.match(SUBJECT)  # no GIL release for the whole match
        done += 1
        with open(os.path.join(workdir, "matches"), "w") as fh:
            fh.write(str(done))


t = threading.Thread(target=hog)
t.start()
started.wait()
time.sleep(0.1)
print("ready", flush=True)
t.join()
print("bye", flush=True)
