"""Samplers on NAS-Bench-201 (CIFAR-10, 12-epoch table): regret and hypervolume ratio against budgets.

Single objective: maximise ``val_acc``; the regret of a run after B evaluations is the table's best
``test_acc`` minus the ``test_acc`` of the best-by-validation cell it has found (in points).
Multi-objective: ``val_acc`` up and a device latency of ``latency.csv`` down; the score after B evaluations
is the hypervolume of the found front divided by that of the table's true front (reference: the worst
value of each objective in the table).

Usage: python benchmarks/search_nb201.py [--seeds 0-19] [--samplers random,tpe,...] [--out docs/...md]
       [--nni-trajectories runs/nni-nb201.jsonl]  (NNI's strategies, from benchmarks/search_nb201_nni.py,
       scored by the same regret code; ``--samplers ""`` scores only those)
Data: $NASPLAT_DATA_DIR (default ../shared/data) with nb201/cifar10-12epoch.csv and nb201/latency.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nasplat.pareto import hypervolume, non_dominated_mask
from nasplat.search import BenchObjective, parse_seeds, run_tabular
from nasplat.space import load_space

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NASPLAT_DATA_DIR", REPO.parent / "shared" / "data")) / "nb201"
BUDGETS = (50, 100, 150, 300)
MO_BUDGETS = (50, 100, 300)


def _so_row(
    sampler: str, runs: list[list[dict]], seconds_per_run: float, test_of: dict[str, float], best_test: float,
    best_val: float, budgets: list[int],
) -> dict:  # fmt: skip
    """Mean test_acc regret (with sem) and val_acc regret of the best-by-validation cell after each budget."""
    regrets: dict[int, list[float]] = {b: [] for b in budgets}
    val_regrets: dict[int, list[float]] = {b: [] for b in budgets}
    for recs in runs:
        vals = np.array([r["val_acc"] for r in recs])
        for b in budgets:
            i = int(np.argmax(vals[:b]))
            regrets[b].append(best_test - test_of[recs[i]["arch"]])
            val_regrets[b].append(best_val - float(vals[i]))
    row: dict = {"sampler": sampler, "seconds_per_run": seconds_per_run}
    for b, r in regrets.items():
        row[f"regret@{b}"] = float(np.mean(r))
        row[f"sem@{b}"] = float(np.std(r, ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan")
    for b, r in val_regrets.items():
        row[f"val_regret@{b}"] = float(np.mean(r))
    return row


def load_trajectories(path: Path, seeds: list[int]) -> dict[str, dict[int, list[dict]]]:
    """JSON lines as ``nasplat bench tabular`` writes them, grouped by sampler and seed (steps in order)."""
    runs: dict[str, dict[int, list[dict]]] = {}
    with path.open() as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec["seed"] in seeds:
                    runs.setdefault(rec["sampler"], {}).setdefault(rec["seed"], []).append(rec)
    for by_seed in runs.values():
        for recs in by_seed.values():
            recs.sort(key=lambda r: r["step"])
    return runs


def single_objective(
    samplers: list[str], seeds: list[int], budget: int, trajectories: Path | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """nasplat's samplers run here; samplers read from ``trajectories`` (e.g. NNI's) are scored the same way."""
    table = pd.read_csv(DATA / "cifar10-12epoch.csv")
    test_of = dict(zip(table["arch"], table["test_acc"], strict=True))
    best_test = float(table["test_acc"].max())
    best_val = float(table["val_acc"].max())
    space = load_space("nb201")
    budgets = [b for b in BUDGETS if b <= budget]
    rows, notes = [], []
    for s in samplers:
        t0 = time.perf_counter()
        runs = []
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
            runs.append(recs)
        row = _so_row(s, runs, (time.perf_counter() - t0) / len(seeds), test_of, best_test, best_val, budgets)
        rows.append(row)
        print(row, file=sys.stderr)
    if trajectories is not None:
        for s, by_seed in load_trajectories(trajectories, seeds).items():
            runs = [by_seed[k] for k in sorted(by_seed)]
            # a run's time is the clock of its last evaluation (measured in the process that ran it)
            seconds = float(np.mean([recs[-1].get("seconds", float("nan")) for recs in runs]))
            row = _so_row(s, runs, seconds, test_of, best_test, best_val, budgets)
            rows.append(row)
            print(row, file=sys.stderr)
            short = [k for k in sorted(by_seed) if len(by_seed[k]) < budget]
            notes.append(
                f"{s}: {len(runs)} seeds from {trajectories.name}"
                + (f" (seeds {short} stopped before {budget} cells)" if short else "")
            )
    return pd.DataFrame(rows), notes


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
    ap.add_argument(
        "--nni-trajectories",
        type=Path,
        default=None,
        help="JSON lines of other searchers (benchmarks/search_nb201_nni.py) to score beside the samplers",
    )
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    samplers = [s for s in args.samplers.split(",") if s]
    so, notes = single_objective(samplers, seeds, args.budget, args.nni_trajectories)
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; seeds {args.seeds} "
        f"({len(seeds)}); budget = distinct cells evaluated.\n",
        "Single objective (val_acc up): mean regret in test_acc points (best in table minus test_acc of the "
        "best-by-validation cell found) with its standard error over seeds (sem), and the regret in val_acc "
        "itself (val_regret).\n",
        so.to_markdown(index=False, floatfmt=".3f"),
    ]
    if notes:
        parts.append(
            "\nRows read from trajectories were searched in a separate process (NNI's own environment) and "
            "scored here; their seconds_per_run is that process's own clock:\n"
        )
        parts += [f"- {n}" for n in notes]
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
