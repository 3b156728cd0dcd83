"""The module the fit-and-finish tests update."""
GREETING = "hello"


def hold(gate):
    print("HOLDING", flush=True)
    gate.wait()


def greet():
    return f"{GREETING} from v1"
