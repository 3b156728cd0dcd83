"""Shared by the benchmark targets: put the generated module folder on sys.path, talk over stdio."""
import json
import sys


def setup_path() -> str:
    folder = sys.argv[1]
    sys.path.insert(0, folder)
    sys.dont_write_bytecode = True
    return folder


def say(*parts) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def result(obj) -> None:
    say("RESULT", json.dumps(obj))


def commands():
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield line.split()
