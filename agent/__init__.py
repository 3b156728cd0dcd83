"""dynupdate's in-process agent.

Imported as `dynupdate_agent`. It runs inside other people's processes, so it
imports only the standard library and msgpack. Programs that opt in use:

    import dynupdate_agent
    dynupdate_agent.start()

    @dynupdate_agent.updatable      # a K42 factory: live instances are tracked
    class Cart: ...

    with dynupdate_agent.activity():  # one unit of work (a request, a job)
        ...

    dynupdate_agent.current_version()
"""
from typing import Any, List

__all__ = ["start", "stop", "running", "updatable", "activity", "current_version", "AgentStartError"]

# Loaded on first use (PEP 562): the CLI imports `dynupdate_agent.wire` and friends for the
# message schema, and must not pay for the runtime, the factories and the generations to do so.
_LAZY = {"updatable": ("factories", "updatable"), "activity": ("generations", "activity"),
         "current_version": ("history", "current_version"), "__version__": ("runtime", "AGENT_VERSION"),
         "AgentStartError": ("runtime", "AgentStartError"), "running": ("runtime", "running"),
         "start": ("runtime", "start"), "stop": ("runtime", "stop")}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dynupdate_agent' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
