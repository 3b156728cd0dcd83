"""Foundation target: reports how it was started, then waits for signals.

Prints `INFO <json>` (argv, __name__, sys.path[0], pid, which modules are
loaded), then `READY <pid>`. SIGUSR1 -> sys.exit(7); SIGTERM -> prints
`GOT SIGTERM` and exits 42. With `--exit N` it exits with N right away.
"""
import json
import os
import signal
import sys


def info():
    return {
        "argv": sys.argv,
        "name": __name__,
        "path0": sys.path[0] if sys.path else None,
        "path": sys.path,
        "pid": os.getpid(),
        "agent_loaded": "dynupdate_agent" in sys.modules,
        "msgpack_loaded": "msgpack" in sys.modules,
        "dynupdate_loaded": "dynupdate" in sys.modules,
        "flags_dev_mode": bool(getattr(sys.flags, "dev_mode", False)),
        "flags_no_site": bool(sys.flags.no_site),
        "executable": sys.executable,
    }


def on_term(signum, frame):
    print("GOT SIGTERM", flush=True)
    sys.exit(42)


def on_usr1(signum, frame):
    sys.exit(7)


if __name__ == "__main__":
    print("INFO " + json.dumps(info()), flush=True)
    if len(sys.argv) >= 3 and sys.argv[1] == "--exit":
        sys.exit(int(sys.argv[2]))
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    print(f"READY {os.getpid()}", flush=True)
    while True:
        signal.pause()
