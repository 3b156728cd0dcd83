"""Issue 5, soak: scripts/soak.py with a small number of cycles, and the bound on
what each update leaves behind in the target.

The full run (`python scripts/soak.py`, 1000 cycles) is reported in BENCHMARKS.md.
"""
import json
import subprocess
import sys
import textwrap

from conftest import ROOT

KEYS = {"cycles", "requests_ok", "requests_failed", "state_mismatches", "rss_start_mb", "rss_end_mb",
        "threads_start", "threads_end", "fds_start", "fds_end"}


def test_soak_small():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--cycles", "20", "--json"],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert KEYS <= set(report), report
    assert report["cycles"] == 20 and report["cycle_errors"] == 0, report
    assert report["lazy_cycles"] >= 4, report
    assert report["requests_ok"] > 100, report
    assert report["requests_failed"] == 0, report
    assert report["state_mismatches"] == 0, report
    assert report["threads_end"] <= report["threads_start"], report
    assert report["fds_end"] <= report["fds_start"], report
    assert report["rss_end_mb"] < report["rss_start_mb"] * 1.10, report
    assert report["history_len"] == 1, "apply/rollback pairs must not grow the history"
    assert report["target_alive"] and report["goals_met"] and proc.returncode == 0, report


# Runs the agent in-process and counts what survives 30 apply/rollback cycles.
_LEFTOVERS = textwrap.dedent(r"""
    import gc, json, os, sys
    sys.path.insert(0, sys.argv[1])
    import dynupdate_agent
    from dynupdate_agent import history, mediator, safepoint, updater
    dynupdate_agent.start()
    from relapp import items
    items.spawn(50)
    from dynupdate.bundle import load_bundle
    from dynupdate.client import Client
    bundle = load_bundle(sys.argv[2])
    def count(kind):
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, kind))
    for i in range(30):
        with Client.connect(os.getpid()) as c:
            c.apply(bundle, lazy=(i % 2 == 1) or None)
        with Client.connect(os.getpid()) as c:
            c.rollback()
    print(json.dumps({"mediators": count(mediator.Mediator), "safepoints": count(safepoint.SafePoint),
                      "transactions": count(updater.Transaction), "history": len(history.entries()),
                      "item_classes": sum(1 for o in gc.get_objects() if isinstance(o, type)
                                          and o.__name__ == "Item")}))
""")


def test_updates_leave_nothing_behind():
    """Each update's mediator, safe point and transaction (and with them both versions'
    code) must be freed once it is over. The mediator's trampolines used to hold it
    through their co_consts: a cycle through a code object, which the GC cannot break."""
    proc = subprocess.run([sys.executable, "-c", _LEFTOVERS, str(ROOT / "tests" / "targets" / "rel_app"),
                           str(ROOT / "tests" / "bundles" / "rel_v2")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    left = json.loads(proc.stdout)
    assert left == {"mediators": 0, "safepoints": 0, "transactions": 0, "history": 0, "item_classes": 1}, left
