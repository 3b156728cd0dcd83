"""Injection target: the only thread blocks in threading.Event().wait(); exits 0 once EVENT is set."""
import threading

EVENT = threading.Event()
print("ready", flush=True)
EVENT.wait()
print("bye", flush=True)
