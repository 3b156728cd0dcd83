"""Helpers for scripts/bench.py: target processes, bundles, module sources, statistics."""
from __future__ import annotations

import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
TARGETS = Path(__file__).resolve().parent / "bench_targets"


def tool(name: str) -> List[str]:
    """The console script installed next to this interpreter (not a pyenv shim, which adds ~100 ms)."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return [str(path)]
    found = shutil.which(name)
    return [found] if found else []


def dynupdate_cmd() -> List[str]:
    return tool("dynupdate") or [sys.executable, "-m", "dynupdate"]


class Proc:
    """A target process we talk to over stdin/stdout lines; always killed on close."""

    def __init__(self, argv: Sequence[str], *, agent: bool = False, env: Optional[dict] = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join([str(TARGETS)] + [p for p in [full_env.get("PYTHONPATH")] if p])
        if agent:
            argv = [sys.executable, "-m", "dynupdate", "run", *argv]
        else:
            argv = [sys.executable, *argv]
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=full_env, start_new_session=True)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.log: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.argv[-2:]}: no {prefix!r} within {timeout}s; output:\n" +
                                   "\n".join(self.log[-30:])) from None
            if line is None:
                raise RuntimeError(f"{self.argv[-2:]} exited ({self.proc.poll()}) before {prefix!r}; output:\n" +
                                   "\n".join(self.log[-30:]))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask(self, line: str, timeout: float = 120.0) -> Dict[str, Any]:
        self.send(line)
        return json.loads(self.expect("RESULT", timeout))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_modules(folder: Path, modules: Dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def write_bundle(folder: Path, name: str, version: str, modules: Dict[str, str], lazy: bool = False) -> Path:
    """A patch bundle folder (patch.toml + one file per module) as `dynupdate apply` expects."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'name = "{name}"', f'version = "{version}"', f"lazy = {'true' if lazy else 'false'}", "", "[modules]"]
    for mod, source in modules.items():
        (folder / f"{mod}.py").write_text(source)
        lines.append(f'"{mod}" = "{mod}.py"')
    (folder / "patch.toml").write_text("\n".join(lines) + "\n")
    return folder


def median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(math.ceil(q / 100.0 * len(values))) - 1))
    return values[k]


# --- module sources ---------------------------------------------------------------

MICRO_V1 = '''\
import dynupdate_agent


class Plain:
    def __init__(self, x):
        self.x = x

    def value(self):
        return self.x


@dynupdate_agent.updatable
class Tracked:
    def __init__(self, x):
        self.x = x

    def value(self):
        return self.x


def updated(x):
    return x + 1


def control(x):
    return x + 1
'''


def micro_version(k: int) -> str:
    """Version k of the micro module: `updated` changes each time; version 10 is back to `x + 1`."""
    body = "x + 1" if k == 10 else f"x + {k + 1}"
    return MICRO_V1.replace("def updated(x):\n    return x + 1", f"def updated(x):\n    return {body}")


PAUSE_V1 = '''\
import dynupdate_agent


@dynupdate_agent.updatable
class Item:
    def __init__(self, i):
        self.i = i
        self.tag = 1

    def value(self):
        return self.i + 1
'''

PAUSE_V2 = '''\
import dynupdate_agent


@dynupdate_agent.updatable
class Item:
    def __init__(self, i):
        self.i = i
        self.tag = 2

    def value(self):
        return self.i + 2

    def __dynupdate_transfer__(self, old):
        self.tag = 2
'''

CLI_V1 = '''\
def greet(name):
    return "hello " + name
'''

CLI_V2 = '''\
def greet(name):
    return "hi " + name
'''

LOAD_V1 = '''\
import dynupdate_agent


def answer(x):
    return 2 * x + 1


@dynupdate_agent.updatable
class Account:
    def __init__(self, i):
        self.i = i
        self.cents = 100 * i

    def balance(self):
        return self.cents
'''

LOAD_V2 = '''\
import dynupdate_agent


def answer(x):
    return x + x + 1


@dynupdate_agent.updatable
class Account:
    def __init__(self, i):
        self.i = i
        self.cents = 100 * i
        self.ledger = [100 * i]

    def balance(self):
        return sum(self.ledger)

    def __dynupdate_transfer__(self, old):
        self.ledger = [old["cents"]]
'''

PEER_V1 = '''\
STATE = {"hits": 0}


def greet():
    return "v1"


class Widget:
    def __init__(self):
        self.n = 1

    def kind(self):
        return "v1"
'''

PEER_V2 = '''\
STATE = {"hits": 0}


def greet():
    return "v2"


class Widget:
    def __init__(self):
        self.n = 1
        self.m = 2

    def kind(self):
        return "v2"

    def __dynupdate_transfer__(self, old):
        self.m = old["n"] * 2
'''

PEER_USER = '''\
from peermod import Widget, greet  # noqa: F401  (references taken before any change)
'''

PYRASITE_RELOAD = '''\
import importlib, sys
importlib.invalidate_caches()
importlib.reload(sys.modules["peermod"])
'''

STALL_V1 = '''\
import dynupdate_agent


@dynupdate_agent.updatable
class Tracked:
    def __init__(self, i):
        self.i = i
        self.tag = 1

    def value(self):
        return self.i + 1


class Untracked:
    def __init__(self, i):
        self.i = i
        self.tag = 1

    def value(self):
        return self.i + 1
'''


def stall_v2(kind: str) -> str:
    """Version 2 of the stall module: only the class of `kind` changes (and gets a transfer hook),
    so the update's instance work is for that class alone."""
    name = "Tracked" if kind == "tracked" else "Untracked"
    head, sep, tail = STALL_V1.partition(f"class {name}:")
    body, sep2, rest = tail.partition("\n\n\n")
    body = body.rstrip("\n").replace("return self.i + 1", "return self.i + 2")
    body += "\n\n    def __dynupdate_transfer__(self, old):\n        self.tag = 2"
    return head + sep + body + sep2 + rest
