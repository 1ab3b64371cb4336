"""Hybrid CNN-transformer family on Fashion-MNIST: supernet training, a latency-aware search, fine-tuned finalists.

1. Train the ``hybrid-cpu`` supernet with the sandwich rule (largest, smallest and 2 random paths per step, the
   largest teaching the others by in-place distillation) in one process (``nasplat.train.train_supernet``).
2. Search it with NSGA-II (``nasplat.search.run_search``): accuracy inherited from the supernet (BN recalibrated)
   on the validation split, up; ``latency_ms`` of the extracted network measured on this machine (cost model
   ``measured``: PyTorch eager, 1 thread, batch 1, median of 30 runs), down.
3. Take up to ``--n-front`` architectures from the Pareto front (filled from the next non-dominated layers when
   the front is smaller), fine-tune each extracted network on its own for ``--finetune-epochs`` epochs, and
   compare its inherited accuracy with its accuracy after fine-tuning (validation split and the test split).

Usage: python benchmarks/hybrid_search.py [--epochs 4] [--trials 64] [--out docs/bench-hybrid.md]
Needs Fashion-MNIST (``dataset-fashion-mnist`` or ``$NASPLAT_FASHION_MNIST_DIR``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from nasplat.datasets import ArrayDataset, DataSpec, load_dataset, load_splits
from nasplat.model import evaluate_subnet, load_checkpoint, recalibrate_bn
from nasplat.pareto import non_dominated_mask
from nasplat.search import parse_run, run_search
from nasplat.space import load_space
from nasplat.study import load_study, make_storage, trials_frame
from nasplat.train import TrainSettings, train_supernet

REPO = Path(__file__).resolve().parents[1]


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists."""
    n, conc, disc, ties_a, ties_b = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / denom if denom else float("nan")


def pick_front(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` distinct networks: the Pareto front of (accuracy up, latency down), then the next layers."""
    frame = frame.drop_duplicates("arch").reset_index(drop=True)  # one row per network (string = canonical form)
    picked: list[pd.DataFrame] = []
    rest = frame
    layer = 0
    while len(rest) and sum(len(p) for p in picked) < n:
        mask = non_dominated_mask(rest[["accuracy", "latency_ms"]].to_numpy(float), ["maximize", "minimize"])
        picked.append(rest[mask].assign(front_layer=layer))
        rest = rest[~mask].reset_index(drop=True)
        layer += 1
    out = pd.concat(picked).reset_index(drop=True)
    first = out[out["front_layer"] == 0]
    if len(first) > n:  # more than n on the front: n spread evenly along latency
        first = first.sort_values("latency_ms").reset_index(drop=True)
        first = first.iloc[np.unique(np.linspace(0, len(first) - 1, n).round().astype(int))]
        return first.reset_index(drop=True)
    return out.head(n).sort_values("latency_ms").reset_index(drop=True)


def finetune(model: torch.nn.Module, train: ArrayDataset, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """Train a stand-alone network (SGD, Nesterov momentum, cosine decay per step); returns seconds."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-5}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    steps = epochs * train.num_batches(batch_size, drop_last=True)
    step = 0
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        for x, y in train.batches(batch_size, seed=seed * 1000 + epoch, shuffle=True, drop_last=True):
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
    model.eval()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="hybrid-cpu")
    ap.add_argument("--epochs", type=int, default=4, help="supernet training epochs")
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--n-front", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-lr", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", default=str(REPO / "nasplat-runs" / "bench-hybrid"))
    ap.add_argument("--out", default=str(REPO / "docs" / "bench-hybrid.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    run_dir = Path(args.run_dir)
    space = load_space(args.space)
    task = space.family.task(space)
    data = DataSpec(name="fashion_mnist", n_train=args.n_train, n_val=args.n_val, batch_size=args.batch_size, seed=0)
    train, val = load_splits(data)
    test = load_dataset("fashion_mnist", "test")
    print(f"space {space.name}: {len(train)} train, {len(val)} val, {len(test)} test images", flush=True)

    # 1. supernet --------------------------------------------------------------------------------------------
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=min(0.5, args.epochs),
        weight_decay=5e-5,
        strategy="sandwich",
        strategy_options={"n_random": 2},
        seed=args.seed,
    )
    net = space.family.build_supernet(space, seed=args.seed)
    t0 = time.perf_counter()
    result = train_supernet(
        net, task, train, settings, run_dir / "supernet", progress=False, on_epoch=lambda r: print(r, flush=True)
    )
    train_s = time.perf_counter() - t0
    history = [dict(h) for h in result.history]
    largest, smallest = space.family.extremes(space)
    extremes = {
        name: evaluate_subnet(net, arch, task, val, train, calib_batches=10, seed=args.seed)["accuracy"]
        for name, arch in (("largest", largest), ("smallest", smallest))
    }
    print(f"supernet: {train_s:.0f} s; inherited val accuracy {extremes}", flush=True)

    # 2. search ----------------------------------------------------------------------------------------------
    run = parse_run(
        {
            "space": args.space,
            "dataset": data.model_dump(mode="json"),
            "supernet": {"checkpoint": str(run_dir / "supernet")},
            "estimator": {"name": "supernet", "options": {"calib_batches": 10}},
            "objectives": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "latency_ms", "direction": "minimize", "cost_model": "measured", "device": "local-cpu"},
            ],
            "sampler": {"name": "nsga2", "options": {"population_size": args.population}},
            "trials": args.trials,
            "batch_size": 8,
            "seed": args.seed,
            "run_dir": str(run_dir / "search"),
            "study": "hybrid-bench",
        }
    )
    t0 = time.perf_counter()
    run_search(run, log=lambda m: print(m, flush=True), progress=False)
    search_s = time.perf_counter() - t0
    study = load_study(make_storage(run.storage_url), "hybrid-bench")
    frame = trials_frame(study)
    if "latency_ms" not in frame:
        frame = frame.rename(columns={"latency_ms@local-cpu": "latency_ms"})
    n_networks = frame["arch"].nunique()
    front_all = frame.drop_duplicates("arch")
    front_all = front_all[
        non_dominated_mask(front_all[["accuracy", "latency_ms"]].to_numpy(float), ["maximize", "minimize"])
    ].sort_values("latency_ms")
    chosen = pick_front(frame, args.n_front)

    # 3. fine-tune the finalists -----------------------------------------------------------------------------
    from nasplat_estimators.analytical import count_costs

    rows: list[dict[str, Any]] = []
    load_checkpoint(net, run_dir / "supernet")
    for i, r in chosen.iterrows():
        arch = space.from_string(str(r["arch"]))
        inherited_test = evaluate_subnet(net, arch, task, test, train, calib_batches=10, seed=args.seed)["accuracy"]
        model = net.extract(arch)
        recalibrate_bn(model, train.batches(args.batch_size, seed=args.seed, shuffle=True), 10)
        ft_s = finetune(model, train, args.finetune_epochs, args.finetune_lr, args.batch_size, args.seed + int(i))
        ft_val = task.evaluate(model, val.batches(256, seed=None, shuffle=False))["accuracy"]
        ft_test = task.evaluate(model, test.batches(256, seed=None, shuffle=False))["accuracy"]
        costs = count_costs(space.family.layers(space, arch))
        rows.append(
            {
                "arch": str(r["arch"]),
                "front_layer": int(r["front_layer"]),
                "latency_ms": float(r["latency_ms"]),
                "macs": costs["macs"],
                "params": costs["params_count"],
                "inherited_val": float(r["accuracy"]),
                "finetuned_val": ft_val,
                "inherited_test": inherited_test,
                "finetuned_test": ft_test,
                "finetune_s": ft_s,
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    total_s = time.perf_counter() - t_start
    results = {
        "train_s": train_s,
        "search_s": search_s,
        "total_s": total_s,
        "history": history,
        "extremes": extremes,
        "trials": len(frame),
        "networks": int(n_networks),
        "front": front_all[["arch", "accuracy", "latency_ms"]].to_dict("records"),
        "finalists": rows,
        "tau_val": kendall_tau(list(table["inherited_val"]), list(table["finetuned_val"])),
        "tau_test": kendall_tau(list(table["inherited_test"]), list(table["finetuned_test"])),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=float))
    write_report(Path(args.out), args, space.name, results, settings)
    print(f"done in {total_s:.0f} s; wrote {args.out}", flush=True)


def write_report(out: Path, args: argparse.Namespace, space: str, res: dict[str, Any], settings: TrainSettings) -> None:
    from nasplat_estimators.measured import local_device

    dev = local_device()
    hist = res["history"]
    epochs = "\n".join(
        f"| {h['epoch']} | {h['loss']:.3f} | {h['seconds']:.0f} | {h['images_per_s']:.0f} |" for h in hist
    )
    front = "\n".join(f"| `{f['arch']}` | {f['accuracy']:.2f} | {f['latency_ms']:.3f} |" for f in res["front"])
    fin = "\n".join(
        f"| `{r['arch']}` | {r['front_layer']} | {r['latency_ms']:.3f} | {r['macs'] / 1e6:.2f} | {r['params'] / 1e3:.1f} "
        f"| {r['inherited_val']:.2f} | {r['finetuned_val']:.2f} | {r['inherited_test']:.2f} | {r['finetuned_test']:.2f} |"
        for r in res["finalists"]
    )
    gains = [r["finetuned_test"] - r["inherited_test"] for r in res["finalists"]]
    text = f"""# Hybrid CNN-transformer family: supernet, latency-aware search, fine-tuned finalists

Produced by `python benchmarks/hybrid_search.py` (run with `nice -n 10`, {args.epochs} supernet epochs,
{args.trials} trials). Machine: {dev.get("cpu_model")}, {dev.get("logical_cpus")} logical CPUs shared with other
jobs, one torch thread (torch {dev.get("torch")}), {platform.python_implementation()} {platform.python_version()}.
Times are wall-clock on that shared machine and vary with its load.

## What was run

- Space `{space}` (`search_spaces/hybrid/hybrid-cpu.yaml`): 16-channel stride-2 stem (28 -> 14 pixels), 5 blocks,
  each a residual conv block (width 16/24/32, kernel 3/5) or a transformer block over the feature map's tokens
  (width 16/24/32, 1/2/4 heads of 8 channels, MLP ratio 1/2/4); the resolution halves at block 2 or 3 and at
  block 4 or 5. 33 block settings per position and 4 downsampling layouts: 33^5 x 4 = 156.5 million networks.
- Data: Fashion-MNIST, {args.n_train} training images, {args.n_val} held-out validation images (from the
  official training split), the official 10,000-image test split for the last two columns only.
- Supernet: {args.epochs} epochs, batch {settings.batch_size}, SGD (Nesterov, momentum 0.9) lr {settings.lr} with
  {settings.warmup_epochs} warm-up epochs then cosine decay, weight decay {settings.weight_decay}; sandwich rule
  (largest, smallest and 2 random paths per step; the largest learns from labels and teaches the others through
  KL divergence, in-place distillation).
- Search: NSGA-II (population {args.population}), {args.trials} trials; objectives: accuracy inherited from the
  supernet on the validation split (BN recalibrated on 10 training batches per architecture) up, and
  `latency_ms` of the extracted stand-alone network measured on this machine (cost model `measured`: PyTorch
  eager, 1 thread, batch 1, median of 30 timed runs after 10 warm-up runs) down.
- Finalists: {len(res["finalists"])} networks from the Pareto front (filled from the next non-dominated layer when
  the front is shorter), each extracted with its supernet weights (BN recalibrated), then fine-tuned on its own for
  {args.finetune_epochs} epoch(s) (SGD, lr {args.finetune_lr}, cosine), and evaluated again.

## Supernet training

Total {res["train_s"]:.0f} s. Inherited validation accuracy after training: largest network
{res["extremes"]["largest"]:.2f} %, smallest {res["extremes"]["smallest"]:.2f} %.

| epoch | mean loss of the step's paths | seconds | images/s (x4 paths) |
|---:|---:|---:|---:|
{epochs}

## Search

{res["trials"]} trials ({res["networks"]} distinct networks after merging settings a block's kind does not use)
in {res["search_s"]:.0f} s. Pareto front (accuracy inherited, validation split; latency measured, batch 1):

| network | accuracy % | latency ms |
|---|---:|---:|
{front}

## Inherited against fine-tuned accuracy

String form: `c<width>k<kernel>` conv block, `a<width>h<heads>r<mlp ratio>` transformer block, `/` halves the
resolution. MACs and parameters from the analytical cost model.

| network | layer | latency ms | MMACs | k params | inherited val % | fine-tuned val % | inherited test % | fine-tuned test % |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{fin}

Fine-tuning changed test accuracy by {min(gains):+.2f} to {max(gains):+.2f} points (mean {np.mean(gains):+.2f}).
Kendall's tau between inherited and fine-tuned accuracy over these networks: {res["tau_val"]:.2f} (validation),
{res["tau_test"]:.2f} (test).

Whole benchmark: {res["total_s"] / 60:.1f} minutes.
"""
    out.write_text(text)


if __name__ == "__main__":
    main()
