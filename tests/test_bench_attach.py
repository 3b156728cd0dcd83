"""scripts/bench_attach.py measures what a client feels during `dynupdate attach` (issue #14).

Checks the shape and that the probe really observed requests around the
attach (a real threaded HTTP target, the real CLI); never the speed.
"""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_attach import attach_stall


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_attach_stall_shape():
    result = attach_stall({}, rounds=1, quiet_s=0.3)
    stall = result["stall_ms"]["attach"]
    run = result["attach_stall_detail"]["rounds"][0]
    assert run["ok"], run["error"]
    assert isinstance(stall, float) and math.isfinite(stall) and stall > 0
    assert run["requests"] > 10 and run["probe_errors"] == 0
    assert run["baseline_ms"] is not None and run["cli_ms"] > 0
