"""What a live probe costs per call, and that a removed probe costs nothing.

    python scripts/bench_probes.py [--json] [--rounds N]

Runs in a fresh interpreter with the agent's probe registry (the same code the
agent runs on `probe add`) on a small function, and reports, side by side in
one run: the bare call, the call with a `--count` probe, with a `--time` probe,
and after removal (ns per call and ratios to the bare call). The best of
`rounds` repeats is taken for each, interleaved so machine noise hits all alike.
"""
from __future__ import annotations

import argparse
import json
import sys
import timeit
import types
from typing import Any, Dict

SOURCE = '''
def small(a, b=2):
    return a + b
'''


def _module() -> types.ModuleType:
    module = types.ModuleType("bench_probe_target")
    exec(compile(SOURCE, "bench_probe_target.py", "exec"), vars(module))
    sys.modules[module.__name__] = module
    return module


def bench_probes(rounds: int = 7, number: int = 200_000) -> Dict[str, Any]:
    """ns per call: bare, --count, --time, after removal; ratios to bare."""
    from dynupdate_agent import probes

    module = _module()
    fn = module.small
    original = fn.__code__
    registry = probes._registry

    def per_call() -> float:
        return min(timeit.repeat("fn(1)", globals={"fn": fn}, number=number, repeat=3)) / number * 1e9

    best: Dict[str, float] = {}
    for _ in range(rounds):
        samples = {"bare": per_call()}
        for kind in ("count", "time"):
            probe = registry.add({"target": "bench_probe_target:small", kind: True})
            samples[kind] = per_call()
            registry.remove([probe.id])
        assert fn.__code__ is original, "removal must restore the exact code object"
        samples["after_removal"] = per_call()
        for key, value in samples.items():
            best[key] = min(best.get(key, value), value)
    bare = best["bare"]
    return {"ns_per_call": {k: round(v, 1) for k, v in best.items()},
            "ratio": {k: round(v / bare, 3) for k, v in best.items() if k != "bare"},
            "code_restored": fn.__code__ is original}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    result = bench_probes(args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ns, ratio = result["ns_per_call"], result["ratio"]
        print(f"bare call            {ns['bare']:8.1f} ns")
        for key in ("count", "time", "after_removal"):
            print(f"{key:<20} {ns[key]:8.1f} ns  ratio {ratio[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
