"""Entry script for `dynupdate run -- PYTHON [options] (app.py | -m module) [args]`.

Run as `PYTHON [options] launch.py MSGPACK_DIR (app.py | -m module) [args]`:
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


def _prepends_path():
    """Whether this interpreter would put the script's folder (or cwd for -m) first: not with -I, -P."""
    return not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: launch.py MSGPACK_DIR (script.py | -m module) [args]\n")
        return 2
    msgpack_dir, rest = argv[0], argv[1:]
    _start_agent(msgpack_dir)
    import runpy

    if rest[0] == "-m":
        if len(rest) < 2:
            sys.stderr.write("dynupdate run: -m needs a module name\n")
            return 2
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
