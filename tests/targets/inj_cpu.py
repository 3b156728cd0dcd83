"""Injection target: CPU-bound Python threads; the main thread joins, sleeps or spins.

usage: inj_cpu.py WORKDIR MAIN_MODE [THREADS]
MAIN_MODE: join (block in Thread.join), sleep (time.sleep loop), spin (CPU-bound too).
Each worker writes its iteration count to WORKDIR/progress-N; all stop when
WORKDIR/stop exists; the process then exits 0. Works under `python -S`.
"""
import os
import sys
import threading
import time

workdir, mode = sys.argv[1], sys.argv[2]
nthreads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
stop = os.path.join(workdir, "stop")


def spin(index):
    count, last = 0, time.monotonic()
    while True:
        count += 1
        if count % 20000 == 0:
            now = time.monotonic()
            if now - last > 0.05:
                last = now
                with open(os.path.join(workdir, "progress-%d" % index), "w") as fh:
                    fh.write(str(count))
                if os.path.exists(stop):
                    return


threads = [threading.Thread(target=spin, args=(i + 1,)) for i in range(nthreads)]
for t in threads:
    t.start()
print("ready", flush=True)
if mode == "join":
    for t in threads:
        t.join()
elif mode == "sleep":
    while not os.path.exists(stop):
        time.sleep(0.2)
elif mode == "spin":
    spin(0)
for t in threads:
    t.join()
print("bye", flush=True)
