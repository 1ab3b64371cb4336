"""Mixed-precision policy search over ResNet-8 on Fashion-MNIST, with nasplat's own pipeline.

1. ``run_search`` trains the quant supernet of ``quant-resnet8-fmnist`` (one set of float weights, a random
   per-layer policy per step, fake quantization with straight-through gradients) and searches with NSGA-II on
   validation accuracy (inherited weights, BN recalibrated per policy) against model size (analytical
   ``model_bytes``; bits = 8x).
2. The Pareto front is compared with uniform policies (float32, bfloat16, int8, int4 weights) evaluated the
   same way: which front policies dominate uniform int8 and uniform float32 (higher accuracy, fewer bits)?
3. Ten front policies: test accuracy with inherited weights next to test accuracy after a short stand-alone
   fine-tune of that policy alone (quantization-aware, straight-through, on a copy of the supernet).
4. Three front policies are exported with ``export_bundle`` (integer / float8 weights with scales); the
   bundle is loaded through its own ``load.py`` and its test accuracy compared with the supernet's estimate.

    nice -n 10 .venv/bin/python benchmarks/quant_search.py [--out nasplat-runs/bench-quant] [--quick]

Prints markdown tables and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when maximising the first value and minimising the second."""
    out = []
    for i, (acc, size) in enumerate(points):
        dominated = any((a >= acc and s <= size) and (a > acc or s < size) for j, (a, s) in enumerate(points) if j != i)
        if not dominated:
            out.append(i)
    return sorted(out, key=lambda i: points[i][1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="nasplat-runs/bench-quant")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=30000)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=120)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="tiny settings to check the script runs")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.n_train, args.n_val, args.trials, args.finetune_steps = 1, 2000, 500, 12, 10
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import nasplat_search_spaces  # noqa: F401 - registers the families
    from nasplat.datasets import DataSpec, load_dataset, load_splits
    from nasplat.export import export_bundle
    from nasplat.model import evaluate_subnet, load_checkpoint, recalibrate_bn
    from nasplat.search import parse_run, run_search
    from nasplat.seeds import derive_seed
    from nasplat.space import load_space
    from nasplat.study import load_study, make_storage
    from nasplat_estimators.analytical import AnalyticalCostModel
    from nasplat_estimators.roofline import RooflineCostModel

    out = Path(args.out)  # an existing run folder is continued: no retraining, finished trials kept
    out.mkdir(parents=True, exist_ok=True)
    space = load_space("quant-resnet8-fmnist")
    data = {"name": "fashion_mnist", "n_train": args.n_train, "n_val": args.n_val, "batch_size": 128}
    run = parse_run(
        {
            "space": "quant-resnet8-fmnist",
            "dataset": data,
            "supernet": {"train": {"epochs": args.epochs, "lr": 0.05, "warmup_epochs": min(0.5, args.epochs)}},
            "estimator": {"name": "supernet", "options": {"calib_batches": args.calib_batches}},
            "objectives": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "model_bytes", "direction": "minimize", "cost_model": "analytical"},
            ],
            "sampler": {"name": "nsga2", "options": {"population_size": 24}},
            "trials": args.trials,
            "batch_size": 8,
            "run_dir": str(out / "run"),
            "study": "quant",
            "seed": 0,
        }
    )
    t0 = time.perf_counter()
    result = run_search(run, log=lambda msg: print(msg, flush=True), progress=False)
    search_s = time.perf_counter() - t0
    assert result.checkpoint is not None
    state = json.loads((Path(result.checkpoint) / "state.json").read_text())
    train_s = sum(h["seconds"] for h in state["history"])

    study = load_study(make_storage(run.storage_url), "quant")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    eval_s = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    archs = [space.from_key(str(t.user_attrs["arch_key"])) for t in trials]
    vals = [(float(t.values[0]), float(t.values[1])) for t in trials]
    # one row per architecture (a policy evaluated twice keeps its first value)
    seen: dict[Any, int] = {}
    for i, a in enumerate(archs):
        seen.setdefault(a, i)
    uniq = sorted(seen.values())
    front_idx = [uniq[k] for k in pareto([vals[i] for i in uniq])]

    # the supernet as trained, for baselines, fine-tunes and exports
    supernet = space.family.build_supernet(space, seed=0)
    load_checkpoint(supernet, result.checkpoint)
    task = space.family.task(space)
    train, val = load_splits(DataSpec.model_validate(data))
    test = load_dataset("fashion_mnist", "test")
    analytical = AnalyticalCostModel()
    roofline = RooflineCostModel()

    def costs(arch: Any) -> dict[str, Any]:
        c = analytical.estimate(space, arch)
        try:
            lat: float | None = roofline.estimate(space, arch, "x86-avx512-2core")["latency_ms"]
        except Exception:  # formats this CPU does not run natively (int4, int2, fp8) are refused
            lat = None
        return {"model_bits": 8 * c["model_bytes"], "bops": c["bops"], "latency_ms_x86": lat}

    def inherited(arch: Any, on: Any) -> float:
        m = evaluate_subnet(supernet, arch, task, on, train, batch_size=256, calib_batches=args.calib_batches, seed=0)
        return float(m["accuracy"])

    def uniform(w: str, a: str) -> Any:
        return space.make({d.label: (w if d.label.endswith(".w") else a) for d in space.dimensions})

    baselines = {}
    for name, (w, a) in {
        "uniform float32": ("float32", "float32"),
        "uniform bfloat16": ("bfloat16", "bfloat16"),
        "uniform int8": ("int8", "int8"),
        "uniform int4": ("int4", "int4"),
        "int4 weights, int8 activations": ("int4", "int8"),
    }.items():
        arch = uniform(w, a)
        baselines[name] = {"val_acc": inherited(arch, val), "test_acc": inherited(arch, test), **costs(arch)}
        print(name, baselines[name], flush=True)

    front = []
    for i in front_idx:
        arch = archs[i]
        row = {"string": space.to_string(arch), "val_acc": vals[i][0], **costs(arch)}
        for base in ("uniform int8", "uniform float32"):
            b = baselines[base]
            row[f"dominates {base}"] = row["val_acc"] >= b["val_acc"] and row["model_bits"] < b["model_bits"]
        w_bits = [
            {"int2": 2, "int4": 4, "int8": 8, "fp8_e4m3": 8, "fp8_e5m2": 8, "bfloat16": 16, "float32": 32}[str(v)]
            for k, v in arch.as_dict().items()
            if k.endswith(".w")
        ]
        row["weight_formats_4bit_or_less"] = sum(b <= 4 for b in w_bits)
        front.append(row)

    # ten front policies: inherited vs fine-tuned test accuracy
    # ten policies: spread over the front, or the whole front topped up from the next non-dominated layers
    front_level = dict.fromkeys(front_idx, 1)
    if len(front_idx) >= 10:
        pick = [front_idx[round(k)] for k in np.linspace(0, len(front_idx) - 1, 10)]
    else:
        pick, remaining, level = [], list(uniq), 0
        while remaining and len(pick) < 10:
            level += 1
            layer = [remaining[k] for k in pareto([vals[i] for i in remaining])]
            for i in layer[: 10 - len(pick)]:
                front_level[i] = level
                pick.append(i)
            remaining = [i for i in remaining if i not in layer]
    finetune = []
    for n, i in enumerate(pick):
        arch = archs[i]
        before = inherited(arch, test)
        net = copy.deepcopy(supernet)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        t1 = time.perf_counter()
        steps = 0
        batches = train.batches(128, seed=derive_seed(7, n), shuffle=True, drop_last=True)
        for batch in batches:
            if steps >= args.finetune_steps:
                break
            for g in opt.param_groups:
                g["lr"] = 0.005 * (1 + math.cos(math.pi * steps / args.finetune_steps))
            with net.activate(arch):
                loss = task.loss(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        ft_s = time.perf_counter() - t1
        after = evaluate_subnet(net, arch, task, test, train, batch_size=256, calib_batches=args.calib_batches)
        row = {"string": space.to_string(arch), "model_bits": costs(arch)["model_bits"], "val_acc": vals[i][0]}
        row.update({"front_level": front_level[i], "inherited_test_acc": before})
        row.update({"finetuned_test_acc": float(after["accuracy"]), "finetune_s": ft_s, "steps": steps})
        finetune.append(row)
        print("finetune", row, flush=True)

    # export three front policies and check the bundle's test accuracy against the supernet's estimate
    exports = []
    gen = torch.Generator().manual_seed(0)
    for i in [front_idx[0], front_idx[len(front_idx) // 2], front_idx[-1]]:
        arch = archs[i]

        def forward(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> Any:
            return task.loss(model, batch, gen)

        recalibrate_bn(
            supernet, train.batches(256, seed=0, shuffle=True), args.calib_batches, arch=arch, forward=forward
        )
        supernet.eval()
        with supernet.activate(arch):
            estimate = task.evaluate(supernet, test.batches(256, seed=None, shuffle=False))["accuracy"]
        bundle = out / f"bundle-{len(exports)}"
        t1 = time.perf_counter()
        res = export_bundle(
            supernet, arch, bundle, metrics={"test_accuracy_estimate": estimate}, provenance={"benchmark": "quant"},
            example_input=next(val.batches(4, seed=None, shuffle=False))[0], onnx=True, overwrite=True,
            extras=space.family.bundle_extras(space, arch),
        )  # fmt: skip
        export_s = time.perf_counter() - t1
        sys.path.insert(0, str(bundle))
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"bundle_load_{len(exports)}", bundle / "load.py")
        assert spec is not None and spec.loader is not None
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        model = loader.load(bundle)
        sys.path.remove(str(bundle))
        bundle_acc = task.evaluate(model, test.batches(256, seed=None, shuffle=False))["accuracy"]
        dtypes: dict[str, int] = {}
        for t in model.state_dict().values():
            dtypes[str(t.dtype).replace("torch.", "")] = dtypes.get(str(t.dtype).replace("torch.", ""), 0) + t.numel()
        row = {
            "string": space.to_string(arch),
            "supernet_test_acc": estimate,
            "bundle_test_acc": bundle_acc,
            "onnx_dynamic_batch": res.onnx_dynamic_batch,
            "onnx_max_abs_diff": res.onnx_max_abs_diff,
            "weights_bytes_file": (bundle / "weights.safetensors").stat().st_size,
            "stored_elements_by_dtype": dtypes,
            "export_s": export_s,
        }
        exports.append(row)
        print("export", row, flush=True)

    report = {
        "settings": vars(args),
        "search_s": search_s,
        "supernet_train_s": train_s,
        "trial_evaluation_s": eval_s,
        "train_history": state["history"],
        "trials": len(trials),
        "unique_policies": len(uniq),
        "baselines": baselines,
        "front": front,
        "finetune": finetune,
        "exports": exports,
        "torch": torch.__version__,
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print_tables(report)


def print_tables(r: dict[str, Any]) -> None:
    print(
        f"\nsupernet training {r['supernet_train_s']:.0f} s; evaluating {r['trials']} trials "
        f"{r['trial_evaluation_s']:.0f} s; this invocation's run_search {r['search_s']:.0f} s\n"
    )
    print("| policy | val acc % | test acc % | model bits | BOPs | roofline ms (x86) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, b in r["baselines"].items():
        lat = "n/a" if b["latency_ms_x86"] is None else f"{b['latency_ms_x86']:.3f}"
        print(
            f"| {name} | {b['val_acc']:.2f} | {b['test_acc']:.2f} | {b['model_bits']:.0f} | {b['bops']:.3g} | {lat} |"
        )
    print("\n| front policy | val acc % | model bits | BOPs | <=4-bit weight layers | dominates int8 | dominates f32 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for f in r["front"]:
        print(
            f"| `{f['string']}` | {f['val_acc']:.2f} | {f['model_bits']:.0f} | {f['bops']:.3g} | "
            f"{f['weight_formats_4bit_or_less']}/10 | {f['dominates uniform int8']} | {f['dominates uniform float32']} |"
        )
    print("\n| policy | model bits | inherited test acc % | fine-tuned test acc % |")
    print("| --- | --- | --- | --- |")
    for f in r["finetune"]:
        print(
            f"| `{f['string']}` | {f['model_bits']:.0f} | {f['inherited_test_acc']:.2f} | {f['finetuned_test_acc']:.2f} |"
        )
    print("\n| exported policy | supernet test acc % | bundle test acc % | weights file bytes |")
    print("| --- | --- | --- | --- |")
    for e in r["exports"]:
        print(
            f"| `{e['string']}` | {e['supernet_test_acc']:.2f} | {e['bundle_test_acc']:.2f} | {e['weights_bytes_file']} |"
        )


if __name__ == "__main__":
    main()
