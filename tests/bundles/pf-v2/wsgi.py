"""The app gunicorn serves: `/` answers `greet() pid`, `/late` imports pf_app.late on first use,
`/slow` keeps its worker busy inside `slow()` for a few seconds."""
import importlib
import os
import time


def greet():
    return "v2"


def slow():
    """A long request: its worker is inside the code an update replaces for a while."""
    mark = os.environ.get("PF_SLOW_MARK")
    if mark:
        open(mark, "w").close()  # tells the test this worker is inside slow() now
    time.sleep(4)
    return "slow-v2"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/slow":
        body = slow()
    elif path == "/late":
        body = importlib.import_module("pf_app.late").answer()
    else:
        body = greet()
    data = f"{body} {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
