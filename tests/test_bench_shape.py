"""The benchmark script runs end to end and prints the published JSON shape (issue 4).

Slow (~1 minute: real targets, gdb injections, peers): it checks the shape of
`scripts/bench.py --quick --json`, never the speed. Deselect with `-m "not slow"`.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIZES = ["1000", "10000", "100000", "1000000"]
QUICK_SIZES = ["1000", "10000"]  # --quick measures these; the others are null by design
LOAD_KEYS = ["rps_before", "rps_during", "p50_ms_before", "p99_ms_before", "p50_ms_during", "p99_ms_during",
             "failed"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def result():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json"],
                          capture_output=True, text=True, timeout=220, cwd=str(ROOT))
    assert proc.returncode == 0, f"bench.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not one JSON object:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def test_ratios_and_activity_are_finite_numbers(result):
    for key in ("call_overhead_ratio", "create_overhead_ratio", "function_call_ratio_after_update"):
        assert _finite(result[key]) and result[key] > 0, (key, result[key])
    assert _finite(result["activity_ns"]), result["activity_ns"]


def test_pause_and_apply_have_every_size_for_both_modes(result):
    for table in ("pause_ms", "apply_ms"):
        assert set(result[table]) == {"eager", "lazy"}, result[table]
        for mode in ("eager", "lazy"):
            assert set(result[table][mode]) == set(SIZES), result[table][mode]
            for n in SIZES:
                value = result[table][mode][n]
                if n in QUICK_SIZES:
                    assert _finite(value) and value >= -1.0, (table, mode, n, value)  # pause is gap minus normal gap
                else:
                    assert value is None or _finite(value), (table, mode, n, value)


def test_cli_and_attach(result):
    assert _finite(result["cli_apply_ms"]) and result["cli_apply_ms"] > 0
    # attach may be null when injection is impossible here; the reason is then recorded
    if result["attach_ms"] is None:
        assert result["attach_detail"]["errors"], "attach_ms is null without a recorded reason"
    else:
        assert _finite(result["attach_ms"]) and result["attach_ms"] > 0


def test_load_keys(result):
    load = result["load"]
    for key in LOAD_KEYS:
        assert key in load, key
        assert _finite(load[key]), (key, load[key])
    assert isinstance(load["failed"], int) and load["failed"] >= 0


def test_peers_shape(result):
    peers = result["peers"]
    for name in ("importlib.reload", "IPython autoreload", "jurigged", "pyrasite + reload", "dynupdate"):
        assert name in peers, name
        row = peers[name]
        assert {"apply_ms", "checks_passed", "checks_total"} <= set(row), row
        assert row["checks_total"] == 6
        if row.get("available") is False:
            assert row["reason"] and row["apply_ms"] is None and row["checks_passed"] is None
        else:
            assert _finite(row["apply_ms"]) and isinstance(row["checks_passed"], int)
            assert 0 <= row["checks_passed"] <= 6
    assert peers["dynupdate"]["available"], "our own row must always run"


def test_stall_has_every_size_for_both_modes_and_kinds(result):
    """stall_ms.{eager,lazy}.{tracked,untracked}.{N}: the largest latency (ms) of a probe request to
    an untouched endpoint during apply; stall_ms.attach during `dynupdate attach` (issue 14)."""
    stall = result["stall_ms"]
    assert {"eager", "lazy", "attach"} <= set(stall), stall
    for mode in ("eager", "lazy"):
        assert set(stall[mode]) == {"tracked", "untracked"}, stall[mode]
        for kind in ("tracked", "untracked"):
            assert set(stall[mode][kind]) == set(SIZES), stall[mode][kind]
            for n in SIZES:
                value = stall[mode][kind][n]
                if n in QUICK_SIZES:
                    assert _finite(value) and value > 0, (mode, kind, n, value)
                else:
                    assert value is None or _finite(value), (mode, kind, n, value)
    if stall["attach"] is None:  # set by the attach section (scripts/bench_attach.py)
        assert any(r["error"] for r in result["attach_stall_detail"]["rounds"]), "stall_ms.attach null, no reason"
    else:
        assert _finite(stall["attach"]) and stall["attach"] > 0


def test_probe_costs_are_reported_and_removal_restores_the_code(result):
    """probes: ns per call bare / --count / --time / after removal, and ratios (issue 12)."""
    probes = result["probes"]
    assert probes["code_restored"] is True
    assert set(probes["ns_per_call"]) == {"bare", "count", "time", "after_removal"}
    assert all(_finite(v) and v > 0 for v in probes["ns_per_call"].values())
    assert set(probes["ratio"]) == {"count", "time", "after_removal"}
