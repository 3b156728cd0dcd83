"""Injection target with one thread of each kind the classifier knows (for recording backtraces).

Prints "KIND LWP" per thread, then "ready"; runs until killed. Works under -S.
Kinds: main_select (select with the GIL released), sleeper (time.sleep),
event_wait (Event.wait: a CPython lock wait), acceptor (socket.accept), epoller (epoll.poll),
reader (os.read on a pipe), spinner_a and spinner_b (CPU-bound: at any
moment one holds the GIL and the other waits for it in take_gil).
"""
import os
import select
import socket
import threading
import time

lwps = {}
started = threading.Event()


def record(kind):
    lwps[kind] = threading.get_native_id()


def sleeper():
    record("sleeper")
    while True:
        time.sleep(100)


def event_wait():
    record("event_wait")
    threading.Event().wait()


def acceptor():
    record("acceptor")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.accept()


def epoller():
    record("epoller")
    ep = select.epoll()
    r, _w = os.pipe()
    ep.register(r, select.EPOLLIN)
    ep.poll()


def reader():
    record("reader")
    r, _w = os.pipe()
    os.read(r, 1)


def spinner(kind):
    record(kind)
    x = 0
    while True:
        x += 1


for target, args in ((sleeper, ()), (event_wait, ()), (acceptor, ()), (epoller, ()), (reader, ()),
                     (spinner, ("spinner_a",)), (spinner, ("spinner_b",))):
    threading.Thread(target=target, args=args, daemon=True).start()
record("main_select")
while len(lwps) < 8:
    time.sleep(0.01)
time.sleep(0.5)
for kind, lwp in lwps.items():
    print(kind, lwp, flush=True)
print("ready", flush=True)
while True:
    select.select([], [], [], 100)
