"""Target for `dynupdate apply` timing: one module with one function; started with `dynupdate run`.

argv: MODULE_DIR. A worker thread calls bench_climod.greet() every millisecond.
"""
import threading
import time

from _common import commands, say, setup_path

setup_path()
import bench_climod as cm  # noqa: E402

last = {"value": None}


def work():
    while True:
        last["value"] = cm.greet("x")
        time.sleep(0.001)


threading.Thread(target=work, daemon=True, name="worker").start()
say("READY")
for cmd in commands():
    if cmd[0] == "value":
        say("VALUE", last["value"])
    elif cmd[0] == "quit":
        break
