"""Named gates that hold a request where the test wants it, until /release opens them.

A coroutine waits on an asyncio.Event (its task is suspended, no thread is
busy); a thread (a `def` endpoint in the threadpool, run_in_executor work)
waits on a threading.Event. `waiting()` lists the gates someone waits on now,
so tests know a request is in place without sleeping.
"""
import asyncio
import threading

_async = {}
_threads = {}
_opened = set()
_waiting = []
_lock = threading.Lock()


async def wait_async(name):
    with _lock:
        if name in _opened:
            return
        event = _async.setdefault(name, (asyncio.get_running_loop(), asyncio.Event()))[1]
        _waiting.append(name)
    try:
        await event.wait()
    finally:
        _waiting.remove(name)


def wait_thread(name, timeout=120):
    with _lock:
        if name in _opened:
            return
        event = _threads.setdefault(name, threading.Event())
        _waiting.append(name)
    try:
        event.wait(timeout)
    finally:
        _waiting.remove(name)


def release(name):
    with _lock:
        _opened.add(name)
        pair = _async.pop(name, None)
        event = _threads.pop(name, None)
    if pair is not None:
        loop, aevent = pair
        loop.call_soon_threadsafe(aevent.set)
    if event is not None:
        event.set()


def waiting():
    return sorted(_waiting)
