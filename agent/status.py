"""What `dynupdate status` shows: version, history, generations, threads, factories."""
from __future__ import annotations

import os
from typing import Any, Dict

from . import factories, generations, history, probes


def _pending(cls: type) -> int:
    try:
        from . import lazy
    except ImportError:
        return 0
    return lazy.pending_count(cls)


def status(agent: Dict[str, Any]) -> Dict[str, Any]:
    from . import transaction  # answers while an update runs, or while an abandoned hook is stuck

    return {
        "ok": True,
        "pid": os.getpid(),
        "version": history.current_version(),
        "history": history.describe(),
        "generation": generations.current(),
        "update": transaction.status(),
        "threads": generations.snapshot(),
        "tasks": generations.task_summary(),
        "factories": [
            {"class": f"{cls.__module__}.{cls.__qualname__}", "instances": len(instances),
             "pending": _pending(cls)}
            for cls, instances in factories.factories().items()
        ],
        "probes": probes.active(),
        "agent": {
            "version": agent["agent_version"],
            "protocol": agent["protocol_version"],
            "python": agent["python"],
            "started_at": agent["started_at"],
            "socket": agent["socket"],
            "executable": agent["executable"],
        },
    }
