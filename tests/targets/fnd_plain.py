"""A plain Python program that knows nothing of dynupdate: prints READY, then waits."""
import os
import threading

print(f"READY {os.getpid()}", flush=True)
threading.Event().wait()
