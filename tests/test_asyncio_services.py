"""Issue 11 end to end: real uvicorn + FastAPI and aiohttp services, updated under load.

The service (tests/targets/aio_app) suspends requests inside aioshop.logic, the
module tests/bundles/aio-v2 replaces, at a named gate until the test opens it
(/release): no sleeps decide the order. v2 changes `label()`'s signature, so a
request that started on one version and finished on the other would answer 500
(or report both versions in its answer). One server per kind is shared by the
module; every test leaves it on its base version.
"""
import http.client
import sys
import threading
import time

import pytest

from conftest import ROOT, TARGETS, wait_until
from shoputil import Command, Shop, attach_module_output, start_module_target  # noqa: F401

APP = TARGETS / "aio_app"
V2 = str(ROOT / "tests" / "bundles" / "aio-v2")
KINDS = {"fastapi": APP / "fastapi_server.py", "aiohttp": APP / "aiohttp_server.py"}

pytestmark = pytest.mark.usefixtures("attach_module_output")


@pytest.fixture(scope="module", params=sorted(KINDS))
def service(request, start_module_target):  # noqa: F811
    target = start_module_target([sys.executable, "-m", "dynupdate", "run", str(KINDS[request.param])])
    svc = Shop(target)
    wait_until(lambda: svc.get("/ping") == {"pong": True}, message="the service to answer")
    return svc


@pytest.fixture
def base(service):
    """The service on its base version before and after the test."""
    assert service.version() == "base"
    yield service
    if service.version() != "base":
        code, data = service.rollback("--to", "base")
        assert code == 0, data


class Load:
    """Clients hammering one path over keep-alive connections; latencies and failures."""

    def __init__(self, port, path, clients=2):
        self.port, self.path = port, path
        self.latencies = []  # (start time, seconds)
        self.failures = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.failures.append((resp.status, body[:200]))
            except Exception as exc:  # counted, then reconnect
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.latencies.append((start, time.monotonic() - start))
        conn.close()

    def max_between(self, t0, t1):
        inside = [lat for start, lat in list(self.latencies) if t0 <= start <= t1]
        assert inside, "no request completed in the window"
        return max(inside)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)
        assert not self.failures, self.failures[:5]


def waiting_on(svc, gate):
    wait_until(lambda: gate in svc.get("/waiting")["waiting"], timeout=20, message=f"a request at gate {gate}")


def update_waiting(svc, generation):
    wait_until(lambda: svc.status()["generation"] > generation, timeout=20, interval=0.05,
               message="the update to start waiting for a safe point")


def test_in_flight_requests_finish_on_one_version_across_apply_and_rollback(base):
    svc = base
    load = Load(svc.port, "/coro?x=load")  # patched coroutine: held (awaited) during the waits
    ping = Load(svc.port, "/ping", clients=1)
    try:
        slow = svc.get_async("/slow", gate="apply1")
        waiting_on(svc, "apply1")
        generation = svc.status()["generation"]
        apply = Command("apply", "--pid", str(svc.pid), V2, "--timeout", "60", "--json")
        update_waiting(svc, generation)
        held = svc.get_async("/coro", x="held")
        assert svc.get("/sync", x="s") == {"label": "v1:s"}, "a plain call on the loop thread runs the old code"
        assert apply.proc.poll() is None and svc.version() == "base", "the update waits for the suspended request"
        svc.get("/release", gate="apply1")
        code, result, out, err = apply.wait()
        assert code == 0, (out, err)
        assert slow.wait() == {"started": "v1:s", "finished": "v1:f"}
        assert held.wait() == {"label": "v2:held"}, "a call held during the wait runs the new code"
        assert svc.get("/sync", x="s") == {"label": "v2:s"}

        slow2 = svc.get_async("/slow", gate="back1")
        waiting_on(svc, "back1")
        generation = svc.status()["generation"]
        rollback = Command("rollback", "--pid", str(svc.pid), "--timeout", "60", "--json")
        update_waiting(svc, generation)
        assert rollback.proc.poll() is None and svc.version() == "2"
        svc.get("/release", gate="back1")
        code, result, out, err = rollback.wait()
        assert code == 0, (out, err)
        assert slow2.wait() == {"started": "v2:s", "finished": "v2:f"}, "rollback waits for v2's coroutine"
        assert svc.get("/coro", x="after") == {"label": "v1:after"}
    finally:
        load.stop()
        ping.stop()
    assert len(load.latencies) > 10


def test_threads_running_old_code_keep_the_update_waiting_but_never_the_loop(base):
    """A `def` endpoint in the threadpool and run_in_executor work run v1 code: the
    update waits for them, and the loop keeps serving everything else meanwhile."""
    svc = base
    ping = Load(svc.port, "/ping", clients=2)
    try:
        t0 = time.monotonic()
        time.sleep(1.0)
        baseline = ping.max_between(t0, time.monotonic())
        block = svc.get_async("/block", gate="pool1")
        execd = svc.get_async("/executor", gate="exec1")
        waiting_on(svc, "pool1")
        waiting_on(svc, "exec1")
        generation = svc.status()["generation"]
        apply = Command("apply", "--pid", str(svc.pid), V2, "--timeout", "60", "--json")
        update_waiting(svc, generation)
        t1 = time.monotonic()
        sync_calls = []
        while time.monotonic() - t1 < 1.0:  # the update waits at least this long
            start = time.monotonic()
            assert svc.get("/sync", x="w") == {"label": "v1:w"}
            sync_calls.append(time.monotonic() - start)
        during = ping.max_between(t1, time.monotonic())
        assert apply.proc.poll() is None, "the update must still be waiting for the threads"
        svc.get("/release", gate="pool1")
        svc.get("/release", gate="exec1")
        code, result, out, err = apply.wait()
        assert code == 0, (out, err)
        assert block.wait() == {"started": "v1:s", "finished": "v1:f"}
        assert execd.wait() == {"started": "v1:s", "finished": "v1:f"}
    finally:
        ping.stop()
    # the bug this pins: a parked loop made every request take ~1 s; allow a lot for a shared 2-core box
    assert during < baseline + 0.25, (baseline, during)
    assert max(sync_calls) < 0.5, max(sync_calls)


def test_update_times_out_on_a_coroutine_that_never_finishes(base):
    svc = base
    ping = Load(svc.port, "/ping", clients=1)
    try:
        stuck = svc.get_async("/slow", gate="never1")
        waiting_on(svc, "never1")
        start = time.monotonic()
        code, data = svc.apply(V2, "--timeout", "1")
        assert code == 4, data
        assert time.monotonic() - start < 30
        assert data["ok"] is False and data["version"] == "base"
        assert data["error"]["type"] == "SafePointTimeout", data["error"]
        message = data["error"]["message"]
        assert "task" in message and "slow" in message, message  # names the task and its coroutine
        assert svc.version() == "base"
        assert svc.get("/coro", x="c") == {"label": "v1:c"}
        assert svc.get("/sync", x="c") == {"label": "v1:c"}
        svc.get("/release", gate="never1")
        assert stuck.wait() == {"started": "v1:s", "finished": "v1:f"}
    finally:
        ping.stop()


def test_activity_is_counted_per_task_and_spans_the_coroutine(base):
    svc = base

    def activities():
        return sum(row["activities"] for row in svc.status()["tasks"])

    first = svc.get_async("/act", gate="act1")
    second = svc.get_async("/act", gate="act2")
    waiting_on(svc, "act1")
    waiting_on(svc, "act2")
    status = svc.status()
    assert activities() == 2, status["tasks"]
    assert all(row["generation"] <= status["generation"] for row in status["tasks"])
    svc.get("/release", gate="act1")
    first.wait()
    assert activities() == 1, "the other task's activity must survive (records are per task)"
    svc.get("/release", gate="act2")
    assert second.wait()["label"] == "v1:a"
    assert activities() == 0


def test_demo_async_runs_end_to_end():
    """`dynupdate demo --async` checks its own steps and exits non-zero if one misbehaves."""
    from conftest import dynupdate

    proc = dynupdate("demo", "--async", timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "started and served on v1" in proc.stdout and "the event loop never stopped" in proc.stdout
    assert "task " in proc.stdout and "(handle)" in proc.stdout, "progress names the tasks it waits for"
