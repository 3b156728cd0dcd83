"""Issue 5, fault injection: bundles the target must refuse, and targets whose
threads are all blocked in C code or that run hundreds of threads.
"""
import json
import socket
import sys
import time

import pytest

from conftest import TARGETS, dynupdate_json, wait_until

sys.path.insert(0, str(TARGETS))
from rel_helpers import (REL_BLOCKED, V2, assert_at_base, bundle, module_output, snapshot,  # noqa: E402,F401
                         start_module_target, start_rel)

from dynupdate import errors  # noqa: E402
from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import Client  # noqa: E402

pytestmark = pytest.mark.usefixtures("module_output")


@pytest.fixture(scope="module")
def rel(start_module_target):
    rel = start_rel(start_module_target, "--items", "300")
    rel.get("/incr", iid="i1", by=5)
    rel.before = snapshot(rel)
    return rel


def test_requires_mismatch(rel):
    code, data = rel.apply(bundle("rel_requires"))
    assert code == 1 and data["error"]["type"] == "RequirementNotMet", data
    assert "'7'" in data["error"]["message"] and "'base'" in data["error"]["message"]
    assert_at_base(rel, rel.before)


def test_digest_mismatch_bundle_altered_in_transit(rel):
    loaded = load_bundle(V2)
    loaded["modules"][0]["source"] = loaded["modules"][0]["source"].replace('return "v2"', 'return "evil"')
    with Client.connect(rel.pid) as client:
        with pytest.raises(errors.RemoteError) as info:
            client.apply(loaded)
    assert info.value.remote["type"] == "DigestMismatch", info.value.remote
    assert "altered" in info.value.message
    assert_at_base(rel, rel.before)


def test_bundle_naming_a_module_that_fails_to_import(rel):
    code, data = rel.apply(bundle("rel_import_fails"))
    assert code == 1 and data["error"]["type"] == "ModuleExecError", data
    assert "relapp.extra" in data["error"]["message"]
    assert "relapp_dependency_that_does_not_exist" in data["error"]["message"] + data["error"]["traceback"]
    assert_at_base(rel, rel.before)
    assert "extra" not in rel.get("/state")["module"]["names"]


def test_agent_still_takes_the_next_update(rel):
    code, data = rel.apply(V2)
    assert code == 0 and data["version"] == "2", data
    assert rel.get("/item", iid="i1") == {"iid": "i1", "qty": 6}
    code, data = rel.rollback()
    assert code == 0, data
    assert_at_base(rel, rel.before)


# --- threads ---------------------------------------------------------------------------

def read_line(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return json.loads(s.makefile().readline())


def test_threads_all_blocked_in_c(start_target):
    target = start_target([sys.executable, str(REL_BLOCKED)])
    port = int(target.ready_value())
    assert read_line(port) == {"label": "v1", "total": sum(range(50))}
    started = time.monotonic()
    code, data = dynupdate_json("apply", "--pid", str(target.pid), V2)
    assert code == 0 and data["version"] == "2", data
    assert data["phases"]["safepoint"] < 1.0, data["phases"]
    assert time.monotonic() - started < 10
    assert read_line(port) == {"label": "v2", "total": sum(range(50))}
    code, data = dynupdate_json("rollback", "--pid", str(target.pid))
    assert code == 0 and data["version"] == "base", data
    assert read_line(port) == {"label": "v1", "total": sum(range(50))}
    assert target.alive()


def test_hundreds_of_threads(start_target):
    rel = start_rel(start_target, "--items", "100", "--threads", "300")
    assert rel.get("/threads")["count"] >= 300
    before = snapshot(rel)
    started = time.monotonic()
    code, data = rel.apply(V2)
    took = time.monotonic() - started
    assert code == 0 and data["version"] == "2", data
    assert sum(data["phases"].values()) < 3.0, data["phases"]
    assert took < 10, took
    # the pollers run the new code from now on
    seen = rel.get("/threads")["seen"].get("v2", 0)
    wait_until(lambda: rel.get("/threads")["seen"].get("v2", 0) >= seen + 300, timeout=20,
               message="300 pollers to call the new label()")
    assert rel.get("/item", iid="i42") == {"iid": "i42", "qty": 42}
    code, data = rel.rollback()
    assert code == 0 and sum(data["phases"].values()) < 3.0, data
    assert_at_base(rel, before)
    assert rel.get("/threads")["count"] >= 300
