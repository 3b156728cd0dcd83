"""The app gunicorn serves: `/` answers `greet() pid`, `/late` imports pf_app.late on first use."""
import importlib
import os


def greet():
    return "v1"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/late":
        body = importlib.import_module("pf_app.late").answer()
    else:
        body = greet()
    data = f"{body} {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
