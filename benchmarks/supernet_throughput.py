"""Supernet training throughput: the cost of weight sharing, and 1 versus 2 Ray Train workers.

Part ``sharing`` (any device): for ``--archs`` seeded random cells, training steps per second of the supernet
with that cell active (nasplat's training step: ``PathsLoss`` + SGD, exactly what ``SupernetTrainer`` runs)
against the same cell extracted as a plain stand-alone module trained by a plain PyTorch loop, on the same
batches, in the same process. The ratio plain / supernet is the weight-sharing overhead. On CUDA it also
times the largest cell (``Family.extremes``) in fp32 and bf16 autocast: supernet images/s against a plain
PyTorch loop of the extracted largest subnet.

Part ``workers`` (CPU, needs Ray): ``train_supernet_ray`` with 1 and with 2 workers on the same data and the
same global batch, reporting the training images/s inside epochs and the wall time with Ray's start-up.

Part ``nccl`` (CUDA): one DDP step of the supernet over a 1-process NCCL group (the collective path Ray Train
sets up on GPUs), to show the CUDA path runs end to end.

    .venv/bin/python benchmarks/supernet_throughput.py --part all [--device cpu|cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_steps(step: Any, n_steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    _sync(device)
    return n_steps / (time.perf_counter() - t0)


def sharing(
    space_name: str, device: torch.device, batch: int, n_archs: int, steps: int, precision: str
) -> dict[str, Any]:
    from nasplat.space import load_space
    from nasplat.train import PathsLoss

    space = load_space(space_name)
    macro: Any = space.macro
    shape = tuple(int(v) for v in macro.input_shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=gen).to(device)
    y = torch.randint(0, int(macro.num_classes), (batch,), generator=gen).to(device)
    supernet = space.family.build_supernet(space, seed=0).to(device).train()
    step_module = PathsLoss(supernet, space.family.task(space))
    opt = torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(n_archs)]
    if device.type == "cuda":
        archs = [space.family.extremes(space)[0], *archs]
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    rows = []
    for arch in archs:

        def super_step(arch: Any = arch) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(**autocast):  # type: ignore[arg-type]
                loss, _ = step_module((x, y), [arch], None, False)
            loss.backward()
            opt.step()

        plain = supernet.extract(arch).to(device).train()
        plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

        def plain_step(plain: Any = plain, plain_opt: Any = plain_opt) -> None:
            plain_opt.zero_grad(set_to_none=True)
            with torch.autocast(**autocast):  # type: ignore[arg-type]
                loss = F.cross_entropy(plain(x), y)
            loss.backward()
            plain_opt.step()

        s_rate = _time_steps(super_step, steps, 3, device)
        p_rate = _time_steps(plain_step, steps, 3, device)
        rows.append(
            {
                "arch": space.to_string(arch),
                "supernet_steps_per_s": s_rate,
                "plain_steps_per_s": p_rate,
                "supernet_images_per_s": s_rate * batch,
                "plain_images_per_s": p_rate * batch,
                "overhead_ratio": p_rate / s_rate,
            }
        )
        print(
            f"{rows[-1]['arch']}: supernet {s_rate:.2f} steps/s, plain {p_rate:.2f} steps/s, ratio {p_rate / s_rate:.2f}",
            flush=True,
        )
    return {
        "space": space_name,
        "device": str(device),
        "precision": precision,
        "batch": batch,
        "steps": steps,
        "rows": rows,
        "median_overhead_ratio": statistics.median(r["overhead_ratio"] for r in rows),
    }


def workers(space_name: str, dataset: str, n_train: int, batch: int, epochs: int) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from nasplat.datasets import DataSpec
    from nasplat.space import load_space
    from nasplat.train import TrainSettings, train_supernet_ray

    space = load_space(space_name)
    data = DataSpec(name=dataset, n_train=n_train, n_val=500, batch_size=batch)
    out: dict[str, Any] = {"space": space_name, "dataset": dataset, "n_train": n_train, "global_batch": batch}
    for n in (1, 2):
        settings = TrainSettings(epochs=epochs, batch_size=batch // n, lr=0.05 / n, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = train_supernet_ray(space, data, settings, Path(tmp) / "run", workers=n)
            wall = time.perf_counter() - t0
        rates = [h["images_per_s"] for h in result.history]
        out[f"workers_{n}"] = {
            "images_per_s_median": statistics.median(rates),
            "epoch_seconds": [h["seconds"] for h in result.history],
            "wall_s": wall,
            "final_loss": result.history[-1]["loss"],
        }
        print(f"{n} worker(s): {statistics.median(rates):.0f} img/s, wall {wall:.1f} s", flush=True)
        import ray

        ray.shutdown()
    out["speedup_2_over_1"] = out["workers_2"]["images_per_s_median"] / out["workers_1"]["images_per_s_median"]
    return out


def nccl_step(space_name: str) -> dict[str, Any]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nasplat.space import load_space
    from nasplat.train import PathsLoss

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        space = load_space(space_name)
        macro: Any = space.macro
        device = torch.device("cuda", 0)
        supernet = space.family.build_supernet(space, seed=0).to(device)
        ddp = DistributedDataParallel(PathsLoss(supernet, space.family.task(space)), find_unused_parameters=True)
        x = torch.randn((32, *macro.input_shape), device=device)
        y = torch.randint(0, int(macro.num_classes), (32,), device=device)
        archs = [space.sample(np.random.default_rng(1)) for _ in range(2)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = ddp((x, y), archs, None, False)
        loss.backward()
        grads = sum(int(p.grad is not None) for p in supernet.parameters())
        return {"backend": dist.get_backend(), "loss": float(loss), "params_with_grad": grads}
    finally:
        dist.destroy_process_group()


def write_report(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Supernet training throughput",
        "",
        f"Produced by `benchmarks/supernet_throughput.py` (`{' '.join(result['argv']) or 'defaults'}`), "
        f"{time.strftime('%Y-%m-%d')}, on {result['machine']} (load average {os.getloadavg()[0]:.1f} at the end).",
    ]
    for key in ("sharing_fp32", "sharing_bf16"):
        part = result.get(key)
        if not part:
            continue
        lines += [
            "",
            f"## Weight-sharing overhead ({part['space']}, {part['device']}, {part['precision']}, batch {part['batch']})",
            "",
            "Training steps per second of the supernet with the cell active (nasplat's step: `PathsLoss` + SGD) and "
            "of the same cell extracted as a plain module in a plain PyTorch loop, same batches, same process. "
            "Ratio = plain / supernet (1.0: sharing costs nothing).",
            "",
            "| cell | supernet steps/s | plain steps/s | supernet img/s | plain img/s | ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in part["rows"]:
            cell = r["arch"].replace("|", "\\|")
            lines.append(
                f"| `{cell}` | {r['supernet_steps_per_s']:.2f} | {r['plain_steps_per_s']:.2f} | "
                f"{r['supernet_images_per_s']:.0f} | {r['plain_images_per_s']:.0f} | {r['overhead_ratio']:.2f} |"
            )
        lines += ["", f"Median ratio: **{part['median_overhead_ratio']:.2f}**."]
    w = result.get("workers")
    if w:
        lines += [
            "",
            f"## 1 versus 2 Ray Train workers ({w['space']}, {w['dataset']}, {w['n_train']} images, global batch "
            f"{w['global_batch']})",
            "",
            "Same data and global batch; 1 worker uses every core's threads, 2 workers split them (DDP over gloo). "
            "Images/s is the median over epochs inside training; wall includes Ray Train's start-up.",
            "",
            "| workers | images/s | wall s | final loss |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for n in (1, 2):
            r = w[f"workers_{n}"]
            lines.append(f"| {n} | {r['images_per_s_median']:.0f} | {r['wall_s']:.1f} | {r['final_loss']:.3f} |")
        lines += ["", f"2 over 1: **{w['speedup_2_over_1']:.2f}x**."]
    if result.get("nccl"):
        lines += ["", f"NCCL/DDP step on CUDA: {result['nccl']}."]
    path.write_text("\n".join(lines) + "\n")


def machine(device: torch.device) -> str:
    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["sharing", "workers", "nccl", "all"], default="all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--space", default=None, help="default: nb201-cpu on CPU, nb201 on CUDA")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 256 on CUDA")
    ap.add_argument("--archs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "nasplat-runs" / "bench-throughput" / "results.json"))
    ap.add_argument("--report", default=None, help="also write the results as a markdown page")
    ap.add_argument("--from-results", action="store_true", help="only write --report from the --out file")
    args = ap.parse_args()
    device = torch.device(args.device)
    space = args.space or ("nb201" if device.type == "cuda" else "nb201-cpu")
    batch = args.batch or (256 if device.type == "cuda" else 64)
    if args.from_results:
        write_report(json.loads(Path(args.out).read_text()), Path(args.report))
        return
    result: dict[str, Any] = {"machine": machine(device), "argv": sys.argv[1:]}
    if args.part in ("sharing", "all"):
        result["sharing_fp32"] = sharing(space, device, batch, args.archs, args.steps, "fp32")
        if device.type == "cuda":
            result["sharing_bf16"] = sharing(space, device, batch, args.archs, args.steps, "bf16")
    if args.part in ("workers", "all") and device.type == "cpu":
        result["workers"] = workers(space, args.dataset, args.n_train, batch, args.epochs)
    if args.part in ("nccl", "all") and device.type == "cuda":
        result["nccl"] = nccl_step(space)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written: {out}")
    if args.report:
        write_report(result, Path(args.report))
        print(f"written: {args.report}")


if __name__ == "__main__":
    main()
