"""Version v2 of aioshop.logic: label() takes the version as a second argument."""
import asyncio

import dynupdate_agent

from . import gates

COUNTER = {"served": 0}


def label(x, who="v2"):
    return f"{who}:{x}"


async def step(x):
    await asyncio.sleep(0)
    return label(x, "v2")


async def slow(gate):
    """A request suspended inside the code being replaced, between two helper calls."""
    started = label("s", "v2")
    await gates.wait_async(gate)
    await asyncio.sleep(0)
    return {"started": started, "finished": label("f", "v2")}


def blocking(gate):
    """The same, on a thread (a `def` endpoint or run_in_executor work)."""
    started = label("s", "v2")
    gates.wait_thread(gate)
    return {"started": started, "finished": label("f", "v2")}


@dynupdate_agent.activity()
async def in_activity(gate):
    """A request marked as one unit of work, spanning its awaits."""
    COUNTER["served"] += 1
    await gates.wait_async(gate)
    return {"served": COUNTER["served"], "label": label("a", "v2")}
