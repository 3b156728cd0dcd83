"""Injection target whose threads never enter a system call: main and N workers spin on a flag.

usage: inj_spin_pure.py [THREADS]
Prints "ready" once all workers spin; exits 0 when something sets
__main__.STOP[0] = True (e.g. injected code). Every moment, one thread runs
bytecode and the others wait for the GIL: no thread is ever "safe", so an
injection must go through a pending call.
"""
import sys
import threading

STOP = [False]
nthreads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
spinning = []


def spin():
    spinning.append(1)
    x = 0
    while not STOP[0]:
        x += 1


workers = [threading.Thread(target=spin) for _ in range(nthreads)]
for w in workers:
    w.start()
while len(spinning) < nthreads:
    pass
print("ready", flush=True)
spin()
for w in workers:
    w.join()
print("bye", flush=True)
