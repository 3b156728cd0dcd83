"""A target whose threads all sit in C: the main thread in socket.accept(),
another in Event.wait(), a third in time.sleep(); the agent started in-program.

Each TCP connection gets one JSON line {"label": relapp.items.label(),
"total": relapp.items.total()} computed by the running code, then the main
thread goes back to accept(). Prints "READY <port>".
"""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "rel_app"))

import dynupdate_agent  # noqa: E402
from relapp import items  # noqa: E402

dynupdate_agent.start()
items.spawn(50)
forever = threading.Event()
threading.Thread(target=forever.wait, name="event-waiter", daemon=True).start()
threading.Thread(target=time.sleep, args=(3600,), name="sleeper", daemon=True).start()

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print(f"READY {server.getsockname()[1]}", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(json.dumps({"label": items.label(), "total": items.total()}).encode() + b"\n")
