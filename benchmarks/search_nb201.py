"""Samplers on NAS-Bench-201 (CIFAR-10, 12-epoch table): regret and hypervolume ratio against budgets.

Single objective: maximise ``val_acc``; the regret of a run after B evaluations is the table's best
``test_acc`` minus the ``test_acc`` of the best-by-validation cell it has found (in points).
Multi-objective: ``val_acc`` up and a device latency of ``latency.csv`` down; the score after B evaluations
is the hypervolume of the found front divided by that of the table's true front (reference: the worst
value of each objective in the table).

Usage: python benchmarks/search_nb201.py [--seeds 0-19] [--samplers random,tpe,...] [--out docs/...md]
Data: $NASPLAT_DATA_DIR (default ../shared/data) with nb201/cifar10-12epoch.csv and nb201/latency.csv.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nasplat.bench import BenchObjective, parse_seeds, run_tabular
from nasplat.pareto import hypervolume, non_dominated_mask
from nasplat.space import load_space

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NASPLAT_DATA_DIR", REPO.parent / "shared" / "data")) / "nb201"
BUDGETS = (50, 100, 150, 300)
MO_BUDGETS = (50, 100, 300)


def single_objective(samplers: list[str], seeds: list[int], budget: int) -> pd.DataFrame:
    table = pd.read_csv(DATA / "cifar10-12epoch.csv")
    test_of = dict(zip(table["arch"], table["test_acc"], strict=True))
    best_test = float(table["test_acc"].max())
    best_val = float(table["val_acc"].max())
    space = load_space("nb201")
    rows = []
    for s in samplers:
        t0 = time.perf_counter()
        regrets = {b: [] for b in BUDGETS if b <= budget}
        val_regrets: dict[int, list[float]] = {b: [] for b in regrets}
        for seed in seeds:
            recs = list(
                run_tabular(
                    space,
                    DATA / "cifar10-12epoch.csv",
                    "arch",
                    [BenchObjective("val_acc", "maximize")],
                    s,
                    budget,
                    [seed],
                )
            )
            vals = np.array([r["val_acc"] for r in recs])
            best_idx = [int(np.argmax(vals[:b])) for b in regrets]
            for b, i in zip(regrets, best_idx, strict=True):
                regrets[b].append(best_test - test_of[recs[i]["arch"]])
                val_regrets[b].append(best_val - float(vals[i]))
        row = {"sampler": s, "seconds_per_run": (time.perf_counter() - t0) / len(seeds)}
        for b, r in regrets.items():
            row[f"regret@{b}"] = float(np.mean(r))
            row[f"sem@{b}"] = float(np.std(r, ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan")
        for b, r in val_regrets.items():
            row[f"val_regret@{b}"] = float(np.mean(r))
        rows.append(row)
        print(row, file=sys.stderr)
    return pd.DataFrame(rows)


def multi_objective(samplers: list[str], seeds: list[int], device: str, budget: int) -> pd.DataFrame:
    acc = pd.read_csv(DATA / "cifar10-12epoch.csv")[["arch", "val_acc"]]
    lat = pd.read_csv(DATA / "latency.csv")[["arch", device]]
    joined = acc.merge(lat, on="arch")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nb201-acc-{device}.csv"
    joined.to_csv(path, index=False)
    directions = ["maximize", "minimize"]
    ref = [float(joined["val_acc"].min()), float(joined[device].max())]
    pts = joined[["val_acc", device]].to_numpy(float)
    true_hv = hypervolume(pts[non_dominated_mask(pts, directions)], ref, directions)
    space = load_space("nb201")
    objs = [BenchObjective("val_acc", "maximize"), BenchObjective(device, "minimize")]
    rows = []
    for s in samplers:
        t0 = time.perf_counter()
        ratios = {b: [] for b in MO_BUDGETS if b <= budget}
        for seed in seeds:
            recs = list(run_tabular(space, path, "arch", objs, s, budget, [seed]))
            v = np.array([[r["val_acc"], r[device]] for r in recs])
            for b in ratios:
                ratios[b].append(hypervolume(v[:b], ref, directions) / true_hv)
        row = {"sampler": s, "device": device, "seconds_per_run": (time.perf_counter() - t0) / len(seeds)}
        for b, r in ratios.items():
            row[f"hv_ratio@{b}"] = float(np.mean(r))
        rows.append(row)
        print(row, file=sys.stderr)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--samplers", default="random,tpe,nsga2,evolution,guided")
    ap.add_argument("--mo-samplers", default="random,nsga2,tpe,evolution,guided")
    ap.add_argument("--device", default="pixel3_ms")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--skip-mo", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown section here")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    so = single_objective(args.samplers.split(","), seeds, args.budget)
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; seeds {args.seeds} "
        f"({len(seeds)}); budget = distinct cells evaluated.\n",
        "Single objective (val_acc up): mean regret in test_acc points (best in table minus test_acc of the "
        "best-by-validation cell found) with its standard error over seeds (sem), and the regret in val_acc "
        "itself (val_regret).\n",
        so.to_markdown(index=False, floatfmt=".3f"),
    ]
    if not args.skip_mo:
        mo = multi_objective(args.mo_samplers.split(","), seeds, args.device, args.budget)
        parts += [f"\nMulti-objective (val_acc up, {args.device} down): hypervolume of the found front / true front.\n",
                  mo.to_markdown(index=False, floatfmt=".3f")]  # fmt: skip
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
