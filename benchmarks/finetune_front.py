"""How far to trust a supernet's ranking: fine-tune a CIFAR-10 cell search's finalists and compare accuracies.

Takes a study (``--storage``/``--study``) of a cell search on CIFAR-10, picks at least ``--finalists``
architectures (the Pareto front, then the next non-dominated layers until there are enough), fine-tunes each
from its inherited weights with ``nasplat.finetune.run_finetune`` (Ray Tune, a small lr / weight-decay /
epochs search per architecture with per-architecture ASHA) and writes ``--report`` (default
``docs/bench-finetune.md``): inherited against stand-alone accuracy per architecture, Kendall tau and
Spearman rho between the two, the winning settings and the time taken.

Without a study (or with ``--make-study``) it first produces a CPU-sized one in ``--run-dir``: the
``nb201-cifar-cpu`` supernet (NAS-Bench-201 cells in an 8-channel, 3-cell network) trained for
``--supernet-epochs`` on ``--n-train`` CIFAR-10 training images, then a ``--trials``-trial random search
(accuracy up, MACs down), accuracy measured on ``--n-val`` held-out training images.

    nice -n 10 .venv/bin/python benchmarks/finetune_front.py [--storage URL --study NAME]
        [--finalists 8] [--epochs 3] [--samples 2] [--report docs/bench-finetune.md]

Data: CIFAR-10 from $NASPLAT_DATA_DIR (default ../shared/data, see its README).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make_study(args: argparse.Namespace) -> tuple[str, str, dict[str, float]]:
    from nasplat.search import parse_run, run_search

    run = {
        "space": "nb201-cifar-cpu",
        "run_dir": str(args.run_dir),
        "study": args.study or "cifar-cells",
        "dataset": {"name": "cifar10", "n_train": args.n_train, "n_val": args.n_val, "batch_size": 128},
        "supernet": {"train": {"epochs": args.supernet_epochs, "batch_size": 128, "lr": 0.05, "warmup_epochs": 0.5}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 5}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": args.trials,
        "seed": 0,
    }
    t0 = time.perf_counter()
    result = run_search(parse_run(run), log=print, progress=False)
    seconds = time.perf_counter() - t0
    return result.storage_url, result.study_name, {"search_and_supernet_s": seconds}


def pick_finalists(study: Any, at_least: int) -> list[int]:
    """The front, then the next non-dominated layers (one trial per architecture) until ``at_least``."""
    from nasplat.pareto import non_dominated_mask
    from nasplat.study import objective_names, trials_frame

    frame = trials_frame(study)
    frame = frame[frame["feasible"]].drop_duplicates("arch_key").reset_index(drop=True)
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    chosen: list[int] = []
    while len(chosen) < at_least and not frame.empty:
        mask = non_dominated_mask(frame[names].to_numpy(dtype=float), directions)
        layer = frame[mask].sort_values(names[0], ascending=directions[0] == "minimize")
        chosen += [int(n) for n in layer["trial"]]
        frame = frame[~mask].reset_index(drop=True)
    return chosen


def report(path: Path, study: Any, result: Any, finalists: list[int], args: argparse.Namespace,
           timings: dict[str, float], front_size: int) -> None:  # fmt: skip
    import torch

    trials = {t.number: t for t in study.trials}
    rows = sorted(result.rows, key=lambda r: -(r["inherited"] or 0.0))
    lines = [
        "# Fine-tuning a CIFAR-10 cell search's finalists: inherited vs stand-alone accuracy",
        "",
        "Produced by `benchmarks/finetune_front.py`. A one-shot supernet ranks architectures by the accuracy",
        "they reach with weights inherited from it; `nasplat finetune` trains the finalists as networks of their",
        "own (Ray Tune, small learning-rate / weight-decay / epochs search per architecture, ASHA per",
        "architecture) and records how well the two rankings agree.",
        "",
        f"- study: `{study.study_name}`, space `{study.user_attrs.get('space')}`, "
        f"{len([t for t in study.trials if t.state.name == 'COMPLETE'])} completed trials; "
        f"front of {front_size}, {len(finalists)} finalists (front plus next non-dominated layers)",
        f"- data: {_data_line(study)}",
        f"- fine-tuning: from inherited weights, {args.samples} Tune trials per architecture, up to {args.epochs} "
        f"epochs (budgets {sorted({max(1, -(-args.epochs // 2)), args.epochs})}), lr log-uniform "
        f"[{args.lr_min}, {args.lr_max}], weight decay log-uniform [1e-5, 1e-3], SGD momentum 0.9 + cosine; "
        "the winner per architecture is the best validation accuracy",
        f"- **Kendall tau (inherited vs stand-alone validation accuracy): {_f(result.kendall_tau, 3)}**, "
        f"Spearman rho {_f(result.spearman, 3)}, over {len(rows)} architectures",
        f"- time: {_time_line(timings, result.seconds)}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, no GPU; run under `nice -n 10` next to other work",
        "",
        "| trial | cell | MMACs | inherited val acc (%) | stand-alone val acc (%) | stand-alone test acc (%) "
        "| lr | weight decay | epochs (trained/budget) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        t = trials[r["trial"]]
        macs = t.user_attrs.get("metric:macs")
        c = r["config"]
        lines.append(
            f"| {r['trial']} | `{r['arch'].replace('|', chr(92) + '|')}` | {_f(None if macs is None else macs / 1e6, 2)} | {_f(r['inherited'], 1)} "
            f"| {_f(r['val'].get('accuracy'), 1)} | {_f(r['test'].get('accuracy'), 1)} | {c['lr']:.3g} "
            f"| {c['weight_decay']:.2g} | {c['epochs_trained']}/{c['epochs']} |"
        )
    lines += [
        "",
        "Validation accuracy is on the search's held-out training images (the same images the inherited",
        "accuracy was measured on); test accuracy is on CIFAR-10's official test split, which no choice used.",
        "",
        "Read the numbers as a CPU-sized run of the whole loop, not as NAS-Bench-201 accuracies: the supernet and",
        "the stand-alone networks train for a few epochs on a few thousand images on two shared CPU cores, so",
        "every accuracy is far from converged and the inherited values of the finalists lie within a few points.",
        "With so few epochs the tau mostly says whether the supernet's order survives a short fine-tune;",
        "longer runs (`--n-train 50000 --supernet-epochs 50 --epochs 30 --samples 4`) are the real test.",
        "",
        "Reproduce:",
        "",
        "```",
        f"nice -n 10 .venv/bin/python benchmarks/finetune_front.py {' '.join(args.argv)}".rstrip(),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"written: {path}")


def _data_line(study: Any) -> str:
    spec = (study.user_attrs.get("run_spec") or {}).get("dataset") or {}
    train = (study.user_attrs.get("run_spec") or {}).get("supernet", {}).get("train") or {}
    return (
        f"{spec.get('name')}, {spec.get('n_train')} training images, {spec.get('n_val')} held-out validation images; "
        f"supernet trained {train.get('epochs')} epochs"
    )


def _time_line(timings: dict[str, float], finetune_s: float) -> str:
    parts = []
    if "search_and_supernet_s" in timings:
        parts.append(f"supernet training + search {timings['search_and_supernet_s'] / 60:.1f} min")
    parts.append(f"fine-tuning (wall, incl. Ray start) {finetune_s / 60:.1f} min")
    return ", ".join(parts)


def _f(v: Any, digits: int) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="study storage URL (default: make a study in --run-dir)")
    parser.add_argument("--study", help="study name")
    parser.add_argument("--make-study", action="store_true", help="produce the CIFAR-10 study first")
    parser.add_argument("--run-dir", type=Path, default=REPO / "nasplat-runs" / "bench-finetune")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--supernet-epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--finalists", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--lr-min", type=float, default=0.01)
    parser.add_argument("--lr-max", type=float, default=0.1)
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "bench-finetune.md")
    args = parser.parse_args()
    args.argv = sys.argv[1:]

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    torch.set_num_threads(1)
    from nasplat.finetune import FinetuneSettings, run_finetune
    from nasplat.study import load_study, make_storage, pareto_frame

    timings: dict[str, float] = {}
    if args.storage and not args.make_study:
        url, name = args.storage, args.study
    else:
        url, name, timings = make_study(args)
    study = load_study(make_storage(url), name)
    front, _ = pareto_frame(study)
    finalists = pick_finalists(study, args.finalists)
    print(f"front of {len(front)}; fine-tuning {len(finalists)} finalists: {finalists}")
    settings = FinetuneSettings(
        epochs=args.epochs, samples=args.samples, lr_min=args.lr_min, lr_max=args.lr_max, seed=0
    )
    result = run_finetune(study, ",".join(map(str, finalists)), settings, progress=False, log=print)
    study = load_study(make_storage(url), study.study_name)
    report(args.report, study, result, finalists, args, timings, len(front))


if __name__ == "__main__":
    main()
