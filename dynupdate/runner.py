"""`dynupdate run`: start a program with the agent already listening.

The command line is turned into `PYTHON [options] agent/launch.py MSGPACK_DIR
(app.py | -m module | -c code) [args]` and exec'd, so the program keeps our pid, gets
its signals directly and its exit status is the program's own.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import List, Sequence

from . import errors
from .attach import _agent_dir, _msgpack_dir

#: interpreter options that take a separate value
_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _is_wrapper(path: str) -> bool:
    """An executable script that is not Python source: a launcher like pyenv's or asdf's `python` shim."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(256)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" not in first.lower()


def _resolve_interpreter(name: str) -> str:
    path = name if os.sep in name else shutil.which(name)
    if path and os.access(path, os.X_OK):
        real = os.path.realpath(path)
        if _is_elf(real) or _is_wrapper(real):
            return path
    return ""


def _split_interpreter_args(args: Sequence[str]) -> tuple:
    """(interpreter options, program part starting at the script or -m)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return list(args[:i]), list(args[i:])
        if arg == "-c":
            return list(args[:i]), list(args[i:])
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "--":
            return list(args[:i]), list(args[i + 1:])
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return list(args[:i]), list(args[i:])
    raise errors.UsageError("no program given: expected a script path, `-m module` or `-c code` after the "
                            "interpreter options")


def build_argv(args: Sequence[str]) -> List[str]:
    """The argv to exec for `dynupdate run ARGS` (see README for the three forms)."""
    if not args:
        raise errors.UsageError("nothing to run: give `app.py`, `-m module`, `-c code`, or `-- PYTHON ...`")
    interpreter = ""
    if args[0] not in ("-m", "-c") and not args[0].endswith(".py"):
        interpreter = _resolve_interpreter(args[0])
    if interpreter:
        options, program = _split_interpreter_args(args[1:])
    else:
        interpreter, options, program = sys.executable, [], list(args)
    if program[0] in ("-m", "-c") and len(program) < 2:
        raise errors.UsageError("`-m` needs a module name" if program[0] == "-m" else "`-c` needs the code to run")
    if program[0] not in ("-m", "-c") and not os.path.exists(program[0]):
        raise errors.UsageError(f"no such file: {program[0]}")
    launcher = os.path.join(_agent_dir(), "launch.py")
    return [interpreter, *options, launcher, _msgpack_dir(), *program]


def run(args: Sequence[str]) -> None:
    """Replace this process with the program (never returns on success)."""
    argv = build_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        raise errors.UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None


LAUNCHER = "launch.py"


def program_of(cmdline: Sequence[str]) -> List[str]:
    """The command line as the user typed it: `python app.py`, without our launcher and its msgpack folder.

    `ps` shows this, so the program of a `dynupdate run app.py` process is what
    one sees, not a long launcher path.
    """
    argv = list(cmdline)
    for i, arg in enumerate(argv[1:], start=1):
        if os.path.basename(arg) == LAUNCHER and os.path.basename(os.path.dirname(arg)) in ("agent", "dynupdate_agent"):
            return argv[:i] + argv[i + 2:]
    return argv
