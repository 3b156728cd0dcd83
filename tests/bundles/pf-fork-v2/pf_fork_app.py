"""pf_fork_app v2: greet and hold change; the module hook can be slowed down from outside."""
import threading

release = threading.Event()


def greet():
    return "v2"


def hold():
    release.wait(60)
    return "held-v2"


def __dynupdate_transfer__(old):
    import os
    import time

    mark = os.environ.get("PF_MARK")
    if mark:
        open(mark, "w").close()  # tells the test the critical section has begun
    time.sleep(float(os.environ.get("PF_SLEEP", "0")))
