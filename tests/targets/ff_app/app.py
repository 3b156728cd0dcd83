"""Target for the fit-and-finish CLI tests, run as `dynupdate run app.py`.

SIGUSR1 starts a thread that sits inside ffmod.hold() (so an update of ffmod
waits for a safe point) and prints HOLDING; SIGUSR2 lets it return. Every
request on the TCP port gets one line: ffmod.greet() from the running code.
Prints "READY <port>".
"""
import signal
import socket
import threading

import ffmod

gate = threading.Event()


def _hold(*_):
    gate.clear()
    threading.Thread(target=ffmod.hold, args=(gate,), name="holder", daemon=True).start()


signal.signal(signal.SIGUSR1, _hold)
signal.signal(signal.SIGUSR2, lambda *_: gate.set())
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print(f"READY {server.getsockname()[1]}", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall((ffmod.greet() + "\n").encode())
