"""Module target for `dynupdate run -m fnd_pkg.svc args`: same protocol as fnd_app.py."""
import json
import os
import signal
import sys

from fnd_pkg import helper

if __name__ == "__main__":
    print("INFO " + json.dumps({
        "argv": sys.argv, "name": __name__, "path0": sys.path[0], "pid": os.getpid(),
        "package": __package__, "helper": helper.VALUE, "agent_loaded": "dynupdate_agent" in sys.modules,
    }), flush=True)
    if len(sys.argv) >= 3 and sys.argv[1] == "--exit":
        sys.exit(int(sys.argv[2]))
    signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))
    print(f"READY {os.getpid()}", flush=True)
    while True:
        signal.pause()
