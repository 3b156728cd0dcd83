"""Entry script for `dynupdate run -- PYTHON [options] (app.py | -m module | -c code) [args]`.

Run as `PYTHON [options] launch.py MSGPACK_DIR (app.py | -m module | -c code) [args]`:
start the agent in this interpreter, then run the program as `__main__` in the
same process, so pid, signals and exit status are the program's own.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _here:
    del sys.path[0]  # our own folder must not shadow the program's modules


def _start_agent(msgpack_dir):
    path = os.path.join(_here, "bootstrap.py")
    with open(path) as fh:
        code = compile(fh.read(), path, "exec")
    namespace = {"__name__": "__dynupdate_launch__", "__file__": path}
    exec(code, namespace)
    if namespace["run"](msgpack_dir or None) is None:
        sys.stderr.write("dynupdate: the agent did not start; running the program without it (see the log above)\n")
        return
    try:
        __import__("dynupdate_agent.signals").signals.install()  # socket removed on SIGTERM too
    except Exception:
        pass  # the program must run even if this cannot be set up


def _prepends_path():
    """Whether this interpreter would put the script's folder (or cwd for -m) first: not with -I, -P."""
    return not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated)


def _trim_launcher_frames(hook):
    """An excepthook that drops our own leading frames (this file, runpy) before reporting.

    An uncaught exception, Ctrl-C included, then shows the program's
    traceback only, as it would without `dynupdate run`.
    """
    import runpy

    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}

    def excepthook(kind, value, tb):
        while tb is not None and (tb.tb_frame.f_code.co_filename in ours or
                                  os.path.abspath(tb.tb_frame.f_code.co_filename) in ours):
            tb = tb.tb_next
        if value is not None and tb is not None:
            value = value.with_traceback(tb)
        hook(kind, value, tb)
    excepthook.__wrapped__ = hook
    return excepthook


def _run_code(code, args):
    """`-c CODE`: run it in a fresh __main__ module, with sys.argv and sys.path as python -c sets them."""
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["-c"] + list(args)
    if _prepends_path():
        sys.path.insert(0, "")
    exec(compile(code, "<string>", "exec"), main.__dict__)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: launch.py MSGPACK_DIR (script.py | -m module | -c code) [args]\n")
        return 2
    msgpack_dir, rest = argv[0], argv[1:]
    _start_agent(msgpack_dir)
    import runpy

    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _trim_launcher_frames(sys.excepthook)
    if rest[0] in ("-m", "-c") and len(rest) < 2:
        sys.stderr.write(f"dynupdate run: {rest[0]} needs an argument\n")
        return 2
    if rest[0] == "-c":
        _run_code(rest[1], rest[2:])
    elif rest[0] == "-m":
        sys.argv = [rest[1]] + rest[2:]
        if _prepends_path():
            sys.path.insert(0, os.getcwd())
        runpy._run_module_as_main(rest[1], alter_argv=True)
    else:
        sys.argv = list(rest)
        if _prepends_path():
            sys.path.insert(0, os.path.dirname(os.path.abspath(rest[0])))
        runpy.run_path(rest[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
