"""Does the ``combined`` estimator rank NAS-Bench-201 cells better than the supernet alone, at the same budget?

The supernet is ``benchmarks/supernet_ranking.py``'s uniform (SPOS) one: ``nb201-cifar-cpu`` (NAS-Bench-201's
15,625 cells in an 8-channel, 3-cell network) trained on ``--n-train`` CIFAR-10 images for ``--epochs`` epochs
(that script's settings and results folder: an existing ``uniform`` run is reused). The same seeded sample of
``--cells`` cells is then scored by

- ``supernet``: inherited accuracy (what ``supernet_ranking.py`` reports);
- ``zero_cost``: the training-free AZ-NAS-style combination at initialisation (no training);
- ``combined`` without anchors: both signals on one scale, equal weights (no extra training);
- ``combined`` with ``k`` anchors for each ``k`` of ``--anchors``: ``k`` cells of the estimator's reference
  sample trained stand-alone for ``--anchor-steps`` steps each, the combination calibrated on them,

and each is compared with NAS-Bench-201's ``val_acc`` (12-epoch CIFAR-10 table): Kendall tau, Spearman rho,
top-10 precision, and the CPU minutes each estimator cost on top of the trained supernet.

    .venv/bin/python benchmarks/combined_ranking.py [--epochs 36] [--n-train 8000] [--cells 200]
        [--anchors 8,16] [--anchor-steps 300] [--report docs/bench-combined.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from supernet_ranking import data_dir, ranking, run_strategy  # noqa: E402


def _score(label: str, fn: Any, truth: np.ndarray, out: Path) -> dict[str, Any]:
    done = out / f"{label}.json"
    if done.is_file():  # finished earlier: the run resumes estimator by estimator
        return {k: v for k, v in json.loads(done.read_text()).items() if k != "scores"}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    scores, extra = fn()
    row = {
        "estimator": label,
        "cpu_min": (time.process_time() - cpu0) / 60,
        "wall_min": (time.perf_counter() - wall0) / 60,
        **ranking(np.asarray(scores, dtype=np.float64), truth),
        **extra,
    }
    done.write_text(json.dumps({**row, "scores": list(map(float, scores))}, indent=1))
    print(json.dumps(row), flush=True)
    return row


class _Shared:
    """An estimator whose results are kept by architecture key across instances: the combined rows share one
    inherited evaluation of the cells (the same checkpoint, calibration and seed give the same numbers)."""

    def __init__(self, inner: Any, memo: dict[str, dict[str, float]]) -> None:
        self.inner, self.memo = inner, memo

    def evaluate(self, archs: list[Any]) -> list[dict[str, float]]:
        todo = list({a.key: a for a in archs if a.key not in self.memo}.values())
        for a, m in zip(todo, self.inner.evaluate(todo) if todo else [], strict=True):
            self.memo[a.key] = m
        return [dict(self.memo[a.key]) for a in archs]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--anchors", default="8,16")
    ap.add_argument("--anchor-steps", type=int, default=300)
    ap.add_argument("--reference", type=int, default=32)
    ap.add_argument("--zc-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--supernet-results", default=str(REPO / "nasplat-runs" / "bench-supernet-36"))
    ap.add_argument("--results", default=str(REPO / "nasplat-runs" / "bench-combined"))
    ap.add_argument("--report", default=str(REPO / "docs" / "bench-combined.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd

    from nasplat import registry
    from nasplat.datasets import DataSpec
    from nasplat.space import load_space

    table = pd.read_csv(data_dir(args.data_dir) / "nb201" / "cifar10-12epoch.csv")
    pick = np.sort(np.random.default_rng(0).choice(len(table), size=args.cells, replace=False))
    space = load_space("nb201-cifar-cpu")
    cells = [space.from_string(s) for s in table["arch"].iloc[pick]]
    truth = table["val_acc"].to_numpy(dtype=np.float64)[pick]
    sup_dir, out = Path(args.supernet_results), Path(args.results)
    sup_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if (sup_dir / "uniform.json").is_file():
        supernet_row = json.loads((sup_dir / "uniform.json").read_text())
    else:
        strategy_args = argparse.Namespace(**vars(args))
        run_strategy("uniform", strategy_args, cells, truth, sup_dir)
        supernet_row = json.loads((sup_dir / "uniform.json").read_text())
    rows: list[dict[str, Any]] = [
        {
            "estimator": "supernet (inherited accuracy)",
            "cpu_min": supernet_row["eval_cpu_min"],
            "wall_min": supernet_row["eval_wall_min"],
            **ranking(np.asarray(supernet_row["accuracies"]), truth),
        }
    ]
    data = DataSpec(name="cifar10", root=str(data_dir(args.data_dir)), n_train=args.n_train, n_val=args.n_val, seed=0)
    zc_options = {"batch_size": args.zc_batch, "reference": args.reference, "data": "cifar10"}

    def zero_cost() -> tuple[list[float], dict[str, Any]]:
        est = registry.build("estimator", "zero_cost", space, options={"proxies": [], **zc_options})
        return [m["zero_cost"] for m in est.evaluate(cells)], {}

    rows.append(_score("zero_cost (AZ-NAS-style, at initialisation)", zero_cost, truth, out))

    inherited_memo: dict[str, dict[str, float]] = {}
    for k in [0, *[int(a) for a in args.anchors.split(",") if a]]:

        def combined(k: int = k) -> tuple[list[float], dict[str, Any]]:
            est = registry.build(
                "estimator",
                "combined",
                space,
                options={
                    "checkpoint": sup_dir / "uniform",
                    "data": data,
                    "reference": args.reference,
                    "anchors": k,
                    "anchor_steps": args.anchor_steps,
                    "anchor_batch_size": args.batch,
                    "calib_batches": 5,
                    "eval_batch_size": 250,
                    "zero_cost": {"batch_size": args.zc_batch, "reference": args.reference},
                },
            )
            est.inherited = _Shared(est.inherited, inherited_memo)
            rows_ = est.evaluate(cells)
            summary = est.summary()
            return [r["accuracy"] for r in rows_], {"anchors": k, "summary": summary}

        label = f"combined, {k} anchors x {args.anchor_steps} steps" if k else "combined, no anchors"
        rows.append(_score(label, combined, truth, out))

    lines = [
        "# The combined estimator against the supernet alone (NAS-Bench-201 cells, CIFAR-10, CPU budget)",
        "",
        f"Produced by `benchmarks/combined_ranking.py` (`{' '.join(sys.argv[1:]) or 'defaults'}`), "
        f"{time.strftime('%Y-%m-%d')}, on {platform.processor() or platform.machine()} with {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); the machine was shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end), so CPU minutes are the fairer budget. "
        f"{(time.perf_counter() - t0) / 60:.1f} min of wall time for what was not already measured.",
        "",
        f"Supernet: `nb201-cifar-cpu` trained uniformly (SPOS) for {args.epochs} epochs on {args.n_train} CIFAR-10 "
        f"images ({supernet_row['train_cpu_min']:.1f} CPU min, `benchmarks/supernet_ranking.py`'s settings). "
        f"Cells: {args.cells} drawn once (seed 0) from the table; ground truth NAS-Bench-201's 12-epoch `val_acc`. "
        f"`combined`: a reference sample of {args.reference} cells, zero-cost batch {args.zc_batch} CIFAR-10 images, "
        f"anchors trained stand-alone for {args.anchor_steps} steps of batch {args.batch} on the same "
        f"{args.n_train} images. CPU minutes: what each estimator costs on top of the trained supernet "
        "(the first combined row includes the inherited evaluation and zero-cost scoring of the cells, which the "
        "later rows share; their CPU minutes are the anchors' training and the rest).",
        "",
        "| estimator | Kendall tau | Spearman rho | top-10 precision | CPU min |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['kendall_tau']:.3f} | {r['spearman_rho']:.3f} | "
            f"{r['top10_precision']:.1f} | {r['cpu_min']:.1f} |"
        )
    anchored = [r for r in rows if r.get("anchors")]
    if anchored:
        lines += [
            "",
            "How each signal ranked the anchors themselves (Kendall tau against their stand-alone accuracy):",
            "",
        ]
        for r in anchored:
            s = r["summary"]
            taus = ", ".join(
                f"{k.removesuffix('_tau')} {v:.2f}" for k, v in s.items() if k.endswith("_tau") and v is not None
            )
            lines.append(
                f"- {r['anchors']} anchors: {taus}; fitted noise {s.get('noise_std', float('nan')):.2f} points; "
                f"anchor training {s.get('anchor_cpu_s', 0.0) / 60:.1f} CPU min"
            )
    lines += [
        "",
        "Anchors (issue 14): the supernet alone must reach tau 0.60 within 60 CPU minutes and the combined estimator "
        "0.80; AZ-NAS, training-free, reports 0.741 over all 15,625 cells at full size (CVPR 2024); published "
        "one-shot supernets 0.5-0.7 on GPUs.",
        "",
    ]
    Path(args.report).write_text("\n".join(lines))
    print(f"written: {args.report}")


if __name__ == "__main__":
    main()
