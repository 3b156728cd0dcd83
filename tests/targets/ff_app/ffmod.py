"""The module the fit-and-finish tests update."""
GREETING = "hello"
TABLE = {"apple": 1}
CACHE = {}


def hold(gate):
    print("HOLDING", flush=True)
    gate.wait()


def greet():
    CACHE["calls"] = CACHE.get("calls", 0) + 1
    return f"{GREETING} from v1"
