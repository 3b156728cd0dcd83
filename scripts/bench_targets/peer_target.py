"""Peer comparison target: the same live program and the same six checks for every tool.

argv: MODULE_DIR MODE [agent]. MODULE_DIR holds peermod.py (v1) and peeruser.py;
bench.py also writes peermod_v2.py (the new release of peermod) next to them.
MODE is the tool: reload | autoreload | jurigged run in this process on the
`update` command; pyrasite | dynupdate are driven from outside (bench.py), and
only `check` is asked here. With `agent`, the dynupdate agent is started.

Commands: `update` -> RESULT {"apply_ms", "error"}; `check` -> RESULT {checks}; `quit`.
"""
import importlib
import os
import shutil
import sys
import time
import traceback

from _common import commands, result, say, setup_path

folder = setup_path()
MODE = sys.argv[2]
if "agent" in sys.argv[3:]:
    import dynupdate_agent

    dynupdate_agent.start()

if MODE == "autoreload":
    from IPython.extensions.autoreload import superreload  # imported before the clock starts

if MODE == "jurigged":
    from jurigged import registry

    registry.auto_register(filter=lambda f: os.path.dirname(os.path.abspath(f)) == os.path.abspath(folder))

import peermod  # noqa: E402
import peeruser  # noqa: E402

# The live state the change must respect.
widget = peermod.Widget()              # an existing instance (n == 1)
bound = widget.kind                    # a bound method stored before the change
peermod.STATE["hits"] = 5              # module state changed at run time
PATH = os.path.join(folder, "peermod.py")


def install_new_source():
    shutil.copyfile(os.path.join(folder, "peermod_v2.py"), PATH)
    importlib.invalidate_caches()


def update():
    install_new_source()
    t = time.perf_counter()
    if MODE == "reload":
        importlib.reload(peermod)
    elif MODE == "autoreload":
        superreload(peermod)
    elif MODE == "jurigged":
        registry.get(os.path.abspath(PATH)).refresh()
    else:
        raise SystemExit(f"mode {MODE} is driven from outside")
    return (time.perf_counter() - t) * 1e3


def check(fn):
    try:
        return bool(fn())
    except Exception:
        return False


def checks():
    mod = sys.modules["peermod"]
    return {
        "applied": check(lambda: mod.greet() == "v2"),
        "function_ref_imported_elsewhere": check(lambda: peeruser.greet() == "v2"),
        "stored_bound_method": check(lambda: bound() == "v2"),
        "existing_instance_method": check(lambda: widget.kind() == "v2"),
        "isinstance": check(lambda: isinstance(widget, mod.Widget) and isinstance(mod.Widget(), peeruser.Widget)),
        "module_state_kept": check(lambda: mod.STATE["hits"] == 5),
        "state_transfer": check(lambda: getattr(widget, "m", None) == 2),
    }


say("READY")
for cmd in commands():
    if cmd[0] == "update":
        try:
            result({"apply_ms": update(), "error": None})
        except BaseException as exc:  # a peer that blows up still gets its checks run
            result({"apply_ms": None, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()})
    elif cmd[0] == "check":
        result(checks())
    elif cmd[0] == "quit":
        break
