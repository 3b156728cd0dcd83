"""Version v1 of the code the asyncio tests update (tests/bundles/aio-v2 is v2)."""
import asyncio

import dynupdate_agent

from . import gates

COUNTER = {"served": 0}


def label(x):
    return f"v1:{x}"


async def step(x):
    await asyncio.sleep(0)
    return label(x)


async def slow(gate):
    """A request suspended inside the code being replaced, between two helper calls."""
    started = label("s")
    await gates.wait_async(gate)
    await asyncio.sleep(0)
    return {"started": started, "finished": label("f")}


def blocking(gate):
    """The same, on a thread (a `def` endpoint or run_in_executor work)."""
    started = label("s")
    gates.wait_thread(gate)
    return {"started": started, "finished": label("f")}


@dynupdate_agent.activity()
async def in_activity(gate):
    """A request marked as one unit of work, spanning its awaits."""
    COUNTER["served"] += 1
    await gates.wait_async(gate)
    return {"served": COUNTER["served"], "label": label("a")}
