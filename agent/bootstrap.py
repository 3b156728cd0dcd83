"""What injection and `dynupdate run` execute to bring the agent up.

This file is run with `exec` in a fresh namespace, not imported, so it works
in an interpreter that has neither dynupdate nor msgpack installed. It loads
the agent package from the folder this file sits in under the name
`dynupdate_agent` (without touching `sys.path`), starts it, and does nothing
else: everything further happens over the agent's socket. It never raises:
failures go to `logging` and the caller confirms success with a `hello`.
"""
import sys


def load_agent(msgpack_dir=None):
    """Import (or reuse) the agent package from this file's folder."""
    module = sys.modules.get("dynupdate_agent")
    if module is not None:
        return module
    import importlib.util
    import os

    agent_dir = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "dynupdate_agent", os.path.join(agent_dir, "__init__.py"), submodule_search_locations=[agent_dir]
    )
    module = importlib.util.module_from_spec(spec)
    module._msgpack_dir = msgpack_dir
    sys.modules["dynupdate_agent"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in [n for n in sys.modules if n == "dynupdate_agent" or n.startswith("dynupdate_agent.")]:
            del sys.modules[name]
        raise
    return module


MIN_PYTHON = (3, 9)


def run(msgpack_dir=None, key_file=None):
    """Load and start the agent; log instead of raising, the target must not notice."""
    if sys.version_info[:2] < MIN_PYTHON:  # the CLI refuses these first; never a SyntaxError in the target
        import logging

        logging.getLogger("dynupdate.agent").error(
            "dynupdate agent failed to start: unsupported Python %d.%d (needs %d.%d or later)",
            sys.version_info[0], sys.version_info[1], MIN_PYTHON[0], MIN_PYTHON[1])
        return None
    try:
        return load_agent(msgpack_dir).start(key_file=key_file)
    except BaseException as exc:
        import logging

        log = logging.getLogger("dynupdate.agent")
        if type(exc).__name__ == "AgentStartError":  # an expected refusal: its message says it all
            log.error("dynupdate agent failed to start: %s", exc)
        else:
            log.exception("dynupdate agent failed to start")
        return None


if __name__ == "__dynupdate_bootstrap__":
    run(globals().get("MSGPACK_DIR"), globals().get("KEY_FILE"))
