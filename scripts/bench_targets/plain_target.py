"""A plain Python process with no agent: the main thread sleeps in a loop. Prints READY."""
import time

print("READY", flush=True)
while True:
    time.sleep(0.05)
