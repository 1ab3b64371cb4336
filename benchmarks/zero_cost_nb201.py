"""Zero-cost proxies on NAS-Bench-201's own network (C=16, N=5: ``search_spaces/cell/nb201.yaml``) vs its table.

A stratified sample of ``--cells`` NAS-Bench-201 cells (the 15,625 rows of ``nb201/cifar10-12epoch.csv`` sorted
by ``val_acc`` and cut into ``--cells`` equal strata, one seeded draw per stratum) is scored with every proxy
of ``nasplat_predictors.zero_cost`` at initialisation, on one batch of ``--batch-size`` (64, as
NAS-Bench-Suite-Zero) CIFAR-10 training images (the registered dataset ``cifar10``; Zen-NAS uses its Gaussian
inputs by definition). Each distinct network is scored once: a cell is scored as its family-canonical form
(``space.canonical``, the cheapest cell computing the same function), shared by every sampled cell of its
class. Scores go to ``--out`` (a CSV per proxy group and shard, one row per network, appended as they come),
so a killed run resumes where it stopped (``--shard i/n`` splits the sample between processes). GraSP (a
Hessian-vector product, about as costly as all other proxies together) is its own group (``--group grasp``).

``--report`` reads every CSV under ``--out`` and prints, per proxy, Kendall tau and Spearman rho against
``val_acc`` over the scored sample and over its cells without unreachable ops (every non-``none`` edge live:
fed from the input and reaching the output), the seconds per network, and the AZ-NAS combination (ranks
within the scored sample, as the paper) with and without extra proxies.

    .venv/bin/python benchmarks/zero_cost_nb201.py --cells 300 --shard 0/2 &
    .venv/bin/python benchmarks/zero_cost_nb201.py --cells 300 --shard 1/2 &
    .venv/bin/python benchmarks/zero_cost_nb201.py --cells 300 --group grasp
    .venv/bin/python benchmarks/zero_cost_nb201.py --cells 300 --report
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NASPLAT_DATA_DIR", REPO.parent / "shared" / "data")) / "nb201"
GROUPS = {"main": "every proxy but grasp", "grasp": "grasp only"}
#: NAS-Bench-Suite-Zero (Krishnakumar et al., 2022), Kendall tau vs CIFAR-10 val acc over 9,445 NB201 cells;
#: AZ-NAS (Lee & Ham, CVPR 2024) over all 15,625; ours before this change (CPU skeleton nb201-cifar-cpu).
PUBLISHED = {
    "jacov": 0.632,
    "naswot": 0.603,
    "params": 0.568,
    "synflow": 0.536,
    "az_nas": 0.741,
}
PREVIOUS = {"naswot": 0.381, "synflow": 0.400}


def sample(cells: int, seed: int) -> pd.DataFrame:
    table = pd.read_csv(DATA / "cifar10-12epoch.csv").sort_values("val_acc", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, len(table), cells + 1).astype(int)
    picks = [int(rng.integers(lo, hi)) for lo, hi in itertools.pairwise(edges) if hi > lo]
    return table.iloc[picks].reset_index(drop=True)


def proxies_of(group: str) -> list[str]:
    from nasplat_predictors.zero_cost import ALL_PROXIES

    return ["grasp"] if group == "grasp" else [p for p in ALL_PROXIES if p != "grasp"]


def run(args: argparse.Namespace) -> None:
    import torch

    from nasplat.space import load_space
    from nasplat_predictors.zero_cost import ZeroCostProxies, ZeroCostSettings
    from nasplat_search_spaces.cell.family import live_edges, ops_of

    torch.set_num_threads(1)
    space = load_space(REPO / "search_spaces" / "cell" / "nb201.yaml")
    rows = sample(args.cells, args.seed)
    index, count = (int(v) for v in args.shard.split("/"))
    networks: dict[str, list[int]] = {}
    for i, r in rows.iterrows():
        canon = space.to_string(space.family.canonical(space, space.from_string(r["arch"])))
        networks.setdefault(canon, []).append(int(i))
    todo = [c for k, c in enumerate(networks) if k % count == index]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.group}-{index}of{count}.csv"
    done = set(pd.read_csv(path)["canonical"]) if path.is_file() and path.stat().st_size else set()
    proxies = proxies_of(args.group)
    zp = ZeroCostProxies(space, ZeroCostSettings(seed=args.seed, batch_size=args.batch_size, data="cifar10"))
    zp.batch()
    zp.supernet()
    new = not path.is_file() or not path.stat().st_size
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["canonical", "live_all", "seconds", "cpu_s", *proxies])
        for k, canon in enumerate(todo):
            if canon in done:
                continue
            arch = space.from_string(canon)
            ops = ops_of(arch)
            live = live_edges(ops)
            t0, c0 = time.perf_counter(), time.process_time()
            s = zp.scores(arch, proxies)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            w.writerow([canon, all(live[e] or op == "none" for e, op in ops.items()), f"{dt:.3f}", f"{dc:.3f}",
                        *(repr(s[p]) for p in proxies)])  # fmt: skip
            f.flush()
            print(f"{args.group} {index}/{count}: {k + 1}/{len(todo)} {dt:.1f}s", file=sys.stderr, flush=True)


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    x = np.nan_to_num(x, nan=-np.inf)
    finite = x[np.isfinite(x)]
    low = (finite.min() - 1.0) if len(finite) else 0.0
    x = np.where(np.isfinite(x), x, np.where(x > 0, (finite.max() + 1.0) if len(finite) else 0.0, low))
    return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


def report(args: argparse.Namespace) -> None:
    from nasplat.space import load_space
    from nasplat_predictors.zero_cost import ALL_PROXIES, AZ_COMPONENTS, combine
    from nasplat_search_spaces.cell.family import live_edges, ops_of

    space = load_space(REPO / "search_spaces" / "cell" / "nb201.yaml")
    rows = sample(args.cells, args.seed)
    rows["canonical"] = [space.to_string(space.family.canonical(space, space.from_string(a))) for a in rows["arch"]]
    rows["live_all"] = [
        all(v or ops_of(space.from_string(a))[e] == "none" for e, v in live_edges(ops_of(space.from_string(a))).items())
        for a in rows["arch"]
    ]
    frames = {g: [pd.read_csv(p) for p in sorted(Path(args.out).glob(f"{g}-*.csv"))] for g in GROUPS}
    main = pd.concat(frames["main"]).drop_duplicates("canonical") if frames["main"] else pd.DataFrame()
    grasp = pd.concat(frames["grasp"]).drop_duplicates("canonical") if frames["grasp"] else pd.DataFrame()
    scored = rows.merge(main.drop(columns=["live_all"]), on="canonical", how="inner")
    n_net = len(main)
    print(f"sample: {len(rows)} cells ({rows['canonical'].nunique()} distinct networks); scored: {len(scored)} cells, "
          f"{n_net} networks; CPU {main['cpu_s'].sum() / 60:.1f} min (main group), "
          f"{grasp['cpu_s'].sum() / 60 if len(grasp) else 0:.1f} min (grasp, {len(grasp)} networks)")  # fmt: skip
    y = scored["val_acc"].to_numpy()
    live = scored["live_all"].to_numpy(bool)
    print(f"cells without unreachable ops: {int(live.sum())}")
    print("| proxy | tau (sample) | rho (sample) | tau (no unreachable) | rho (no unreachable) | published tau |")
    print("|---|---|---|---|---|---|")
    results = {}
    for p in ALL_PROXIES:
        if p == "grasp":
            if not len(grasp):
                continue
            sub = rows.merge(grasp.drop(columns=["live_all"]), on="canonical", how="inner")
            xv, yv, lv = sub["grasp"].to_numpy(float), sub["val_acc"].to_numpy(), sub["live_all"].to_numpy(bool)
            name = f"grasp ({len(sub)} cells)"
        else:
            xv, yv, lv, name = scored[p].to_numpy(float), y, live, p
        t, r = _corr(xv, yv)
        tl, rl = _corr(xv[lv], yv[lv])
        results[p] = t
        pub = PUBLISHED.get(p, "")
        print(f"| {name} | {t:.3f} | {r:.3f} | {tl:.3f} | {rl:.3f} | {pub} |")
    combos = {
        "az_nas (expressivity+progressivity+trainability+flops)": list(AZ_COMPONENTS),
        "az_nas + jacov": [*AZ_COMPONENTS, "jacov"],
        "az_nas + jacov + naswot": [*AZ_COMPONENTS, "jacov", "naswot"],
        "az_nas + jacov + naswot + zen + meco": [*AZ_COMPONENTS, "jacov", "naswot", "zen", "meco"],
    }
    for name, comps in combos.items():

        def score(frame: pd.DataFrame, comps: list[str] = comps) -> np.ndarray:
            return combine({c: frame[c].to_numpy(float) for c in comps}, components=comps)

        t, r = _corr(score(scored), y)
        sub = scored[live]
        tl, rl = _corr(score(sub), sub["val_acc"].to_numpy())
        print(
            f"| {name} | {t:.3f} | {r:.3f} | {tl:.3f} | {rl:.3f} | {PUBLISHED['az_nas'] if comps == list(AZ_COMPONENTS) else ''} |"
        )
    print(f"seconds per network (main group, wall): mean {main['seconds'].mean():.2f}, "
          f"median {main['seconds'].median():.2f}, max {main['seconds'].max():.2f}")  # fmt: skip
    if len(grasp):
        print(f"seconds per network (grasp, wall): mean {grasp['seconds'].mean():.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--group", choices=sorted(GROUPS), default="main")
    ap.add_argument("--shard", default="0/1", help="i/n: score every n-th network starting at the i-th")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "zero_cost_nb201"))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
