"""Issue 11, pure logic inside one interpreter: activity() per task and as a decorator
on `async def`, task generations, coroutine chains, parking a running loop.

The end-to-end behaviour against real uvicorn/FastAPI and aiohttp services is in
test_asyncio_services.py; these pin the building blocks it relies on.
"""
import asyncio
import threading

import pytest

from dynupdate_agent import generations, loops
from dynupdate_agent.generations import activity
from dynupdate_agent.safepoint import SafePoint


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_activity_is_per_task_on_one_loop_thread():
    """Two tasks on one thread: leaving one's activity must not end the other's."""
    async def main():
        a_in, b_out, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
        seen = {}

        async def a():
            with activity():
                a_in.set()
                await b_out.wait()
                seen["a_inside"] = generations.task_activity_generation(asyncio.current_task())
            a_out.set()

        async def b():
            await a_in.wait()
            with activity():
                seen["b_inside"] = generations.current_activity_generation()
            b_out.set()

        ta, tb = asyncio.create_task(a()), asyncio.create_task(b())
        await asyncio.gather(ta, tb)
        seen["a_after"] = generations.task_activity_generation(ta)
        return seen

    seen = run(main())
    assert seen["b_inside"] == generations.current()
    assert seen["a_inside"] == generations.current(), "b leaving its activity must not pop a's record"
    assert seen["a_after"] is None


def test_activity_decorator_spans_the_whole_coroutine():
    @activity()
    async def handler(gate):
        await gate.wait()  # suspended: still inside the activity
        return generations.current_activity_generation()

    async def main():
        gate = asyncio.Event()
        task = asyncio.create_task(handler(gate))
        await asyncio.sleep(0.01)
        during = generations.task_activity_generation(task)
        gate.set()
        inside = await task
        return during, inside, generations.current_activity_generation()

    during, inside, after = run(main())
    assert during == generations.current() and inside == generations.current()
    assert after is None
    assert asyncio.iscoroutinefunction(handler)


def test_tasks_created_after_a_generation_opens_belong_to_it():
    async def main():
        old = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        before = generations.current()
        generations.advance()
        new = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        result = (generations.task_generation(old), generations.task_generation(new), before,
                  generations.task_summary())
        old.cancel()
        new.cancel()
        return result

    old_gen, new_gen, before, summary = run(main())
    assert old_gen == before and new_gen == before + 1
    by_gen = {row["generation"]: row["tasks"] for row in summary}
    assert by_gen.get(before, 0) >= 1 and by_gen.get(before + 1, 0) >= 1, summary


async def _inner(gate):
    await gate.wait()


async def _outer(gate):
    await _inner(gate)


def test_safe_point_sees_a_task_suspended_in_replaced_code():
    async def main():
        gate = asyncio.Event()
        task = asyncio.create_task(_outer(gate), name="req-7")
        await asyncio.sleep(0.01)
        frames = [f.f_code for f in loops.chain_frames(task.get_coro())]
        point = SafePoint({_inner.__code__}, [], generations.current() + 1)
        blocking = point.task_blockers()
        gate.set()
        await task
        return frames, blocking, point.task_blockers()

    frames, blocking, after = run(main())
    assert frames[:2] == [_outer.__code__, _inner.__code__]
    assert list(blocking) == ["task req-7 (_outer)"], blocking
    assert "_inner" in blocking["task req-7 (_outer)"][0]
    assert after == {}


def test_loop_pause_parks_between_steps_and_always_resumes():
    """A loop parks within its deadline and runs again on resume; a pause that is
    given up leaves nothing parked; a pause past its hold limit is reported."""
    ready = threading.Event()
    holder = {}

    def serve():
        async def main():
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = asyncio.Event()
            ready.set()
            while not holder["stop"].is_set():
                holder["ticks"] = holder.get("ticks", 0) + 1
                await asyncio.sleep(0.001)
        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    loop = holder["loop"]
    try:
        assert loop in loops.running_loops()
        pause = loops.LoopPause([loop], hold_limit=10)
        assert pause.engage(5)
        ticks = holder["ticks"]
        threading.Event().wait(0.05)
        assert holder["ticks"] == ticks, "a parked loop runs no task step"
        pause.resume()
        deadline = threading.Event()
        for _ in range(200):
            if holder["ticks"] > ticks:
                break
            deadline.wait(0.01)
        assert holder["ticks"] > ticks, "the loop runs again after resume"
        short = loops.LoopPause([loop], hold_limit=0.05)
        assert short.engage(5)
        for _ in range(200):
            if short.expired:
                break
            deadline.wait(0.01)
        assert short.expired, "a loop leaves on its own hold limit and says so"
        short.resume()
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
    assert not thread.is_alive()


def test_off_loop_never_runs_work_on_a_loop_thread():
    where = {}
    done = threading.Event()

    def work():
        where["thread"] = threading.current_thread().name
        done.set()

    async def main():
        loops.off_loop(work)
        return threading.current_thread().name

    loop_thread = run(main())
    assert done.wait(10)
    assert where["thread"] == loops.OFF_LOOP_THREAD != loop_thread
    loops.off_loop(work)  # no loop here: runs inline
    assert where["thread"] == threading.current_thread().name


@pytest.mark.parametrize("bad", [None, 3, object()])
def test_chain_of_non_coroutines_is_empty(bad):
    assert list(loops.chain_frames(bad)) == []
