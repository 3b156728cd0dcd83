"""Issue 5, fault injection: clients that vanish, calls in flight, concurrent requests.

One rel_app target (200 items) for the module; every case ends with it on its
previous version, state intact, and the agent free for the next request.
SIGTERM to a target during an update uses its own targets (they exit).
"""
import os
import signal
import socket
import sys
import time

import msgpack
import pytest

from conftest import TARGETS, dynupdate_json, wait_until

sys.path.insert(0, str(TARGETS))
from rel_helpers import (V2, Command, assert_at_base, bundle, module_output, snapshot,  # noqa: E402,F401
                         start_module_target, start_rel, wait_blocked, wait_generation_above, wait_not_busy)

from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import agent_socket  # noqa: E402

pytestmark = pytest.mark.usefixtures("module_output")

N = 200


@pytest.fixture(scope="module")
def rel(start_module_target):
    rel = start_rel(start_module_target, "--items", str(N))
    rel.get("/incr", iid="i7", by=1000)
    rel.before = snapshot(rel)
    yield rel
    for gate in ("g-kill", "g-inflight", "g-timeout", "g-busy", "g-rb", "g-late", "g-lazy", "g-late3", "g-lazy3"):
        rel.gate(gate, "release")
    rel.faults()


def hold_in_flight(rel, gate):
    """A request parked inside items.work() (code every update replaces): a call in flight."""
    rel.gate(gate, "arm")
    call = rel.get_async("/work", gate=gate)
    wait_blocked(rel, gate)
    return call


# --- the CLI killed ----------------------------------------------------------------

def test_cli_killed_during_safe_point_wait(rel):
    call = hold_in_flight(rel, "g-kill")
    generation = rel.status()["generation"]
    cmd = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "60", "--json")
    wait_generation_above(rel, generation)
    held = rel.get_async("/label")              # held at the mediator while the update waits
    cmd.kill(signal.SIGKILL)
    # the agent notices the disconnect on its next check, long before --timeout 60
    took = wait_not_busy(rel.pid, timeout=55)   # polls up to 55 s, so the bound below can fail
    assert took < 10, f"the agent stayed busy {took:.1f} s after its client was killed"
    assert held.wait(10) == {"label": "v1"}, "held calls are released onto the old code"
    rel.gate("g-kill", "release")
    assert call.wait() == {"inside": "v1", "self": "v1"}
    assert_at_base(rel, rel.before)


def test_cli_killed_during_transfer(rel):
    # the transfer hook parks on the 50th instance until released: the CLI dies meanwhile
    rel.faults(block={"transfer": 50})
    cmd = Command("apply", "--pid", str(rel.pid), V2, "--json")
    wait_blocked(rel, "transfer")
    cmd.kill(signal.SIGKILL)
    rel.gate("transfer", "release")
    wait_not_busy(rel.pid, timeout=10)
    assert rel.get("/faults")["counts"]["transfer"] == N, "the transfer ran to its end, then was undone"
    rel.faults()
    assert_at_base(rel, rel.before)


# --- the connection dropped ----------------------------------------------------------

def raw_connect(rel):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(agent_socket(rel.pid))
    return s


def frame(message):
    payload = msgpack.packb(message, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


def hello_ok(rel):
    code, data = dynupdate_json("status", "--pid", str(rel.pid), "--no-inject")
    return code == 0 and data["pid"] == rel.pid


@pytest.mark.parametrize("cut", ["half-header", "half-body", "header-only"])
def test_connection_dropped_mid_frame(rel, cut):
    apply = frame({"type": "apply", "id": 1, "bundle": load_bundle(V2), "timeout": 10.0})
    part = {"half-header": apply[:2], "half-body": apply[:len(apply) // 2], "header-only": apply[:4]}[cut]
    with raw_connect(rel) as s:
        s.sendall(part)
    assert hello_ok(rel)
    assert_at_base(rel, rel.before)


def test_client_gone_before_the_reply(rel):
    """A complete apply request, then the client closes before the reply: the update is abandoned.

    A call held in flight keeps the update at its safe-point wait, so the agent
    sees the disconnect before it could commit (no race with a fast apply).
    """
    call = hold_in_flight(rel, "g-gone")
    generation = rel.status()["generation"]
    with raw_connect(rel) as s:
        s.sendall(frame({"type": "apply", "id": 1, "bundle": load_bundle(V2), "timeout": 10.0}))
        wait_generation_above(rel, generation)
    rel.gate("g-gone", "release")
    call.wait()
    wait_not_busy(rel.pid)
    assert_at_base(rel, rel.before)


# --- calls in flight, the mediator, timeouts -------------------------------------------

def test_in_flight_call_into_updated_function_completes_the_update(rel):
    """The call in flight calls label() (being replaced) after the wait began: it must pass
    the mediator on the old code (no deadlock); a new call is held and continues on v2."""
    call = hold_in_flight(rel, "g-inflight")
    generation = rel.status()["generation"]
    cmd = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "60", "--json")
    wait_generation_above(rel, generation)
    held = rel.get_async("/label")
    assert cmd.proc.poll() is None, "the update must wait for the call in flight"
    rel.gate("g-inflight", "release")
    assert call.wait() == {"inside": "v1", "self": "v1"}, "a call in flight finishes on its old code"
    code, data, out, err = cmd.wait()
    assert code == 0 and data["version"] == "2", (data, err)
    assert held.wait() == {"label": "v2"}, "a held call continues on the new code"
    code, data = rel.rollback()
    assert code == 0, data
    assert_at_base(rel, rel.before)


def test_timeout_releases_held_calls_on_the_old_code(rel):
    call = hold_in_flight(rel, "g-timeout")
    generation = rel.status()["generation"]
    cmd = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "1.5", "--json")
    wait_generation_above(rel, generation)
    held = rel.get_async("/label")
    code, data, out, err = cmd.wait()
    assert code == 4, (data, err)
    assert data["error"]["type"] == "SafePointTimeout" and "work" in data["error"]["message"], data
    assert held.wait(10) == {"label": "v1"}, "the held call was released on the old code"
    assert not call.done()
    rel.gate("g-timeout", "release")
    assert call.wait() == {"inside": "v1", "self": "v1"}
    assert_at_base(rel, rel.before)


def test_two_clients_applying_at_once_and_rollback_meanwhile(rel):
    call = hold_in_flight(rel, "g-busy")
    generation = rel.status()["generation"]
    first = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "60", "--json")
    wait_generation_above(rel, generation)
    code, data = rel.apply(V2)
    assert code == 1 and data["error"]["type"] == "Busy", data
    assert "another update or rollback is running" in data["error"]["message"]
    code, data = rel.rollback()
    assert code == 1 and data["error"]["type"] == "Busy", data
    rel.gate("g-busy", "release")
    call.wait()
    code, data, out, err = first.wait()
    assert code == 0 and data["version"] == "2", (data, err)

    # apply while a rollback runs (the rollback waits on a call in flight in v2's work())
    call = hold_in_flight(rel, "g-rb")
    generation = rel.status()["generation"]
    rollback = Command("rollback", "--pid", str(rel.pid), "--timeout", "60", "--json")
    wait_generation_above(rel, generation)
    code, data = rel.apply(V2)
    assert code == 1 and data["error"]["type"] == "Busy", data
    rel.gate("g-rb", "release")
    assert call.wait() == {"inside": "v2", "self": "v2"}
    code, data, out, err = rollback.wait()
    assert code == 0 and data["version"] == "base", (data, err)
    assert_at_base(rel, rel.before)


def test_lazy_transfer_during_rollback_wait(rel):
    """A request that began before a rollback reaches a pending instance while the rollback
    waits: its lazy transfer runs, then its call to view() (updated code) is held at the
    mediator. A thread parked there must not count as "an old activity inside the module"
    (that deadlocked the safe point until --timeout): the rollback completes once the call
    in flight returns, then the held call continues on the restored code."""
    code, data = rel.apply(V2, "--lazy")
    assert code == 0, data
    rel.gate("g-late", "arm")
    late = rel.get_async("/gated_item", iid="i9", gate="g-late")     # old activity, outside items
    wait_blocked(rel, "g-late")
    call = hold_in_flight(rel, "g-lazy")
    generation = rel.status()["generation"]
    rollback = Command("rollback", "--pid", str(rel.pid), "--timeout", "20", "--json")
    wait_generation_above(rel, generation)
    rel.gate("g-late", "release")
    wait_until(lambda: rel.raw("i9") == {"iid": "i9", "count": {"n": 9}}, message="i9's lazy transfer")
    rel.gate("g-lazy", "release")
    assert call.wait() == {"inside": "v2", "self": "v2"}
    started = time.monotonic()
    code, data, out, err = rollback.wait()
    assert code == 0 and data["version"] == "base", (data, err)
    assert time.monotonic() - started < 10, "the rollback must not wait for the held call"
    assert late.wait(10) == {"iid": "i9", "qty": 9}
    assert_at_base(rel, rel.before)


def test_lazy_transfer_through_an_interposed_hook_during_rollback(rel):
    """v2 -> v3 --lazy, then a rollback of v3 waits on a call in flight while an old request
    transfers a pending instance: v3's hook is itself interposed by the rollback (it exists in
    v2 too). The transfer must run to its end on v3's hook (not be held, then resumed on v2's
    hook after the rollback), and the rollback must then revert that instance."""
    code, data = rel.apply(V2)
    assert code == 0, data
    code, data = rel.apply(bundle("rel_v3"), "--lazy")
    assert code == 0 and data["version"] == "3", data
    rel.gate("g-late3", "arm")
    late = rel.get_async("/gated_item", iid="i11", gate="g-late3")
    wait_blocked(rel, "g-late3")
    call = hold_in_flight(rel, "g-lazy3")
    generation = rel.status()["generation"]
    rollback = Command("rollback", "--pid", str(rel.pid), "--timeout", "20", "--json")
    wait_generation_above(rel, generation)
    rel.gate("g-late3", "release")
    wait_until(lambda: rel.raw("i11") == {"iid": "i11", "count": {"n": 11, "v": 3}}, message="i11's transfer")
    rel.gate("g-lazy3", "release")
    assert call.wait() == {"inside": "v3", "self": "v3"}
    code, data, out, err = rollback.wait()
    assert code == 0 and data["version"] == "2", (data, err)
    assert late.wait(10) == {"iid": "i11", "qty": 11}
    assert rel.raw("i11") == {"iid": "i11", "count": {"n": 11}}, "reverted by v3's revert hook"
    code, data = rel.rollback()
    assert code == 0, data
    assert_at_base(rel, rel.before)


def test_agent_still_takes_the_next_update(rel):
    code, data = rel.apply(V2)
    assert code == 0 and data["updated"]["instances"] == N, data
    assert rel.get("/item", iid="i7") == {"iid": "i7", "qty": 1007}
    assert rel.raw("i7") == {"iid": "i7", "count": {"n": 1007}}
    code, data = rel.rollback()
    assert code == 0, data
    assert_at_base(rel, rel.before)


# --- SIGTERM to the target during an update ---------------------------------------------

@pytest.mark.parametrize("during", ["safepoint", "transfer"])
def test_sigterm_during_update_exits_cleanly(start_target, during):
    rel = start_rel(start_target, "--items", "100", "--sigterm")
    sock = agent_socket(rel.pid)
    assert os.path.exists(sock)
    if during == "safepoint":
        hold_in_flight(rel, "g-term")
        generation = rel.status()["generation"]
        cmd = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "60", "--json")
        wait_generation_above(rel, generation)
    else:
        rel.faults(block={"transfer": 10})
        cmd = Command("apply", "--pid", str(rel.pid), V2, "--timeout", "60", "--json")
        wait_blocked(rel, "transfer")
    started = time.monotonic()
    os.kill(rel.pid, signal.SIGTERM)
    assert rel.target.proc.wait(15) == 0, rel.target.output()
    assert time.monotonic() - started < 10
    assert not os.path.exists(sock), "the socket file must be removed at exit"
    code, data, out, err = cmd.wait(30)
    assert code == 3, (code, out, err)       # target unreachable: it went away mid-update
    wait_until(lambda: not rel.target._reader.is_alive(), timeout=10)
    output = rel.target.output()
    assert "EXITING" in output and "Traceback" not in output, output
