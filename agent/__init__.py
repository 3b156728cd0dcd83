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
from .factories import updatable
from .generations import activity
from .history import current_version
from .runtime import AGENT_VERSION as __version__  # noqa: F401 - the package version, re-exported
from .runtime import AgentStartError, running, start, stop

__all__ = ["start", "stop", "running", "updatable", "activity", "current_version", "AgentStartError"]
