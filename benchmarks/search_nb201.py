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

from nasplat.pareto import hypervolume_ratio
from nasplat.search import BenchObjective, TableFront, mean_sem, parse_seeds, run_tabular, score_runs
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


LATENCY_TABLES = ("latency.csv", "latency-more-devices.csv")


def device_columns() -> list[str]:
    """Every device latency column of the two latency tables."""
    cols: list[str] = []
    for name in LATENCY_TABLES:
        cols += [c for c in pd.read_csv(DATA / name, nrows=0).columns if c != "arch"]
    return cols


def _device_table(device: str) -> pd.DataFrame:
    acc = pd.read_csv(DATA / "cifar10-12epoch.csv")[["arch", "val_acc"]]
    for name in LATENCY_TABLES:
        lat = pd.read_csv(DATA / name)
        if device in lat.columns:
            return acc.merge(lat[["arch", device]], on="arch")
    raise SystemExit(f"no latency column '{device}' in {', '.join(LATENCY_TABLES)}; columns: {device_columns()}")


def multi_objective(
    samplers: list[str], seeds: list[int], devices: list[str], budget: int,
    options: dict[str, dict] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per device and sampler: the strict measures of :class:`nasplat.search.TableFront` (hypervolume ratio
    against the median reference, share of the true front's cells found) after each budget, mean and sem over
    seeds, and the loose ratio of earlier pages (reference: the table's worst point) for comparison."""
    space = load_space("nb201")
    objs = [BenchObjective("val_acc", "maximize"), BenchObjective("", "minimize")]
    budgets = sorted({b for b in MO_BUDGETS if b <= budget} | {budget})
    rows = []
    for device in devices:
        joined = _device_table(device)
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nb201-acc-{device}.csv"
        joined.to_csv(path, index=False)
        objs[1] = BenchObjective(device, "minimize")
        front = TableFront.of_table(space, joined, "arch", objs)
        worst = [float(joined["val_acc"].min()), float(joined[device].max())]
        directions = list(front.directions)
        for s in samplers:
            t0 = time.perf_counter()
            recs = list(
                run_tabular(space, path, "arch", objs, s, budget, seeds, sampler_options=(options or {}).get(s))
            )
            seconds = (time.perf_counter() - t0) / len(seeds)
            scores = score_runs(front, space, recs, budgets)
            row: dict = {"sampler": s, "device": device, "front_cells": len(front.front_keys),
                         "seconds_per_run": seconds}  # fmt: skip
            for b in budgets:
                for name, label in (("hv_ratio", "hv_med"), ("front_share", "share")):
                    mean, sem = mean_sem(scores[b][name])
                    row[f"{label}@{b}"], row[f"{label}_sem@{b}"] = mean, sem
            b = budgets[-1]
            loose = []
            for seed in seeds:
                v = np.array([[r["val_acc"], r[device]] for r in recs if r["seed"] == seed and r["step"] <= b])
                loose.append(hypervolume_ratio(v, front.front_values, worst, directions))
            row[f"hv_worst@{b}"] = float(np.mean(loose))
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def mo_markdown(mo: pd.DataFrame, budget: int) -> str:
    """One line per device and sampler: hv ratio (median reference) and front share, mean ± sem."""
    lines = [f"| device | front cells | sampler | hv ratio (median ref) @{budget} | front share @{budget} | "
             f"hv ratio (worst ref) @{budget} | s/run |", "|:--|--:|:--|:--|:--|--:|--:|"]  # fmt: skip
    for r in mo.to_dict("records"):
        lines.append(
            f"| {r['device']} | {r['front_cells']} | {r['sampler']} | {r[f'hv_med@{budget}']:.3f} ± "
            f"{r[f'hv_med_sem@{budget}']:.3f} | {100 * r[f'share@{budget}']:.1f} % ± "
            f"{100 * r[f'share_sem@{budget}']:.1f} % | {r[f'hv_worst@{budget}']:.3f} | {r['seconds_per_run']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--samplers", default="random,tpe,nsga2,evolution,guided")
    ap.add_argument("--mo-samplers", default="random,nsga2,tpe,evolution,guided")
    ap.add_argument("--devices", default="all", help="latency columns, comma-separated, or 'all'")
    ap.add_argument("--mo-seeds", default=None, help="seeds of the multi-objective runs (default: --seeds)")
    ap.add_argument("--mo-budget", type=int, default=100)
    ap.add_argument("--mo-options", default="{}", help='JSON: sampler -> options, e.g. {"guided": {"explore": 0.5}}')
    ap.add_argument("--skip-so", action="store_true")
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
    parts = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; seeds {args.seeds} "
        f"({len(seeds)}); budget = distinct cells evaluated.\n"
    ]
    if not args.skip_so:
        so, notes = single_objective(samplers, seeds, args.budget, args.nni_trajectories)
        parts += _so_parts(so, notes)
    if not args.skip_mo:
        devices = device_columns() if args.devices == "all" else args.devices.split(",")
        mo_seeds = parse_seeds(args.mo_seeds or args.seeds)
        mo = multi_objective(
            args.mo_samplers.split(","), mo_seeds, devices, args.mo_budget, json.loads(args.mo_options)
        )
        parts += [
            f"\nMulti-objective (val_acc up, a device latency down), seeds {args.mo_seeds or args.seeds}, "
            f"{args.mo_budget} evaluations: hypervolume of the found front over the true front's with the median "
            "of each objective over the table as reference, share of the true front's cells found (mean ± sem "
            "over seeds), and the ratio with the table's worst point as reference (as on earlier pages).\n",
            mo_markdown(mo, args.mo_budget),
        ]
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _so_parts(so: pd.DataFrame, notes: list[str]) -> list[str]:
    parts = [
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
    return parts


if __name__ == "__main__":
    main()
