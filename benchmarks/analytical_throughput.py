"""Throughput of the analytical cost model on the cell family: architectures per second, cold and cached.

Each measurement runs in a fresh Python process, so nothing is cached when it starts: *cold* is one pass over
every architecture of the space (each seen for the first time by the family's layer-record builder and by the
cost model), *cached* is a second pass over the same architectures (a dictionary look-up each). The process
setup (imports, loading the space) is not timed. Reports the median of ``--runs`` processes.

    .venv/bin/python benchmarks/analytical_throughput.py [--space nb201] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def one_run(space_name: str) -> dict[str, float]:
    from nasplat.space import load_space
    from nasplat_estimators.analytical import AnalyticalCostModel

    space = load_space(space_name)
    archs = list(space.enumerate())
    model = AnalyticalCostModel()
    t0 = time.perf_counter()
    for arch in archs:
        model.estimate(space, arch)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for arch in archs:
        model.estimate(space, arch)
    cached = time.perf_counter() - t0
    records = sum(len(space.family.layers(space, a)) for a in archs) / len(archs)
    return {
        "archs": len(archs),
        "cold_per_s": len(archs) / cold,
        "cached_per_s": len(archs) / cached,
        "records_per_arch": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", action="append", help="space name (repeat; default nb201 and nb201-cpu)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)))
        return
    spaces = args.space or ["nb201", "nb201-cpu"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}"
    )
    try:
        load = os.getloadavg()[0]
        print(f"load average at start: {load:.2f}")
    except OSError:
        pass
    for name in spaces:
        results = []
        for _ in range(args.runs):
            proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        cold = [r["cold_per_s"] for r in results]
        cached = [r["cached_per_s"] for r in results]
        print(
            f"{name}: {results[0]['archs']:,} architectures, {results[0]['records_per_arch']:.1f} layer records each; "
            f"cold {statistics.median(cold):,.0f}/s (min {min(cold):,.0f}, max {max(cold):,.0f}); "
            f"cached {statistics.median(cached):,.0f}/s; {args.runs} fresh processes"
        )


if __name__ == "__main__":
    main()
