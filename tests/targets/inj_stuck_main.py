"""Injection target with no safe moment: the main thread blocks in sendfile() into a full pipe
(a system call the injector does not know), a worker thread is CPU-bound.

usage: inj_stuck_main.py
The worker makes no system call at all (its CPU time in /proc shows it runs), so no thread is
ever safe and the main thread never reaches a bytecode boundary for a pending call.
Prints "ready" once the pipe is full. Runs until killed.
"""
import os
import tempfile
import threading


def worker():
    count = 0
    while True:
        count += 1


r, w = os.pipe()
os.set_blocking(w, False)
try:
    while True:
        os.write(w, b"x" * 65536)
except BlockingIOError:
    pass
os.set_blocking(w, True)
src = tempfile.TemporaryFile()
src.write(b"y" * 65536)
src.flush()
threading.Thread(target=worker, daemon=True).start()
print("ready", flush=True)
os.sendfile(w, src.fileno(), 0, 65536)  # blocks for good: nobody reads the pipe
