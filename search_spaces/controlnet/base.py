"""The frozen base UNet of a controlnet space: training it (unconditionally) and reading its weights file.

A controlnet space names its base in ``macro.base_weights`` (a safetensors file; a relative path is taken
relative to the space file, ``~`` is expanded). :func:`train_base` produces that file::

    from nasplat.space import load_space
    from nasplat_search_spaces.controlnet import train_base
    train_base(load_space("controlnet-fmnist"), dataset="fashion_mnist", steps=1500)

or from a shell: ``python -m nasplat_search_spaces.controlnet.base controlnet-fmnist --steps 1500``.

The file's metadata records the UNet's configuration (checked against the space when a supernet is built),
the dataset and the training settings. Training holds out the same validation images a search with the
same ``n_val`` and ``data_seed`` evaluates on (``nasplat.datasets.load_splits``), uses Adam and keeps an
exponential moving average of the weights (the EMA weights are what is saved), all seeded.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from nasplat.errors import NasplatError
from nasplat.model import seeded

from .standalone import UNet, alpha_bars

if TYPE_CHECKING:
    from nasplat.space import SearchSpace

BASE_FORMAT = "nasplat-controlnet-base"
#: The config keys that must agree between a base file and the space that loads it.
UNET_KEYS: tuple[str, ...] = ("input_shape", "channels", "norm_groups", "timesteps", "beta_start", "beta_end")


def base_path(space: SearchSpace) -> Path:
    """Where ``space``'s base weights live (``macro.base_weights``, relative to the space file)."""
    raw = Path(str(getattr(space.macro, "base_weights", ""))).expanduser()
    if raw.is_absolute():
        return raw
    root = space.path.resolve().parent if space.path is not None else Path.cwd()
    return root / raw


def unet_config(space: SearchSpace) -> dict[str, Any]:
    from .supernet import model_config

    cfg = model_config(space)
    return {k: cfg[k] for k in UNET_KEYS}


def load_base(space: SearchSpace) -> dict[str, torch.Tensor]:
    """The base UNet's state dict for ``space``; errors name the file and say how to produce it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = base_path(space)
    if not path.is_file():
        target = space.path if space.path is not None else space.name
        raise NasplatError(
            f"space '{space.name}': base UNet weights {path} not found (macro.base_weights). Train the base first: "
            f"python -m nasplat_search_spaces.controlnet.base {target} (or nasplat_search_spaces.controlnet.train_base)"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise NasplatError(f"{path}: cannot read base UNet weights ({exc})") from None
    if meta.get("format") != BASE_FORMAT:
        raise NasplatError(f"{path}: not a controlnet base weights file (metadata format {meta.get('format')!r})")
    saved = json.loads(meta.get("unet_config", "{}"))
    want = unet_config(space)
    diffs = [k for k in UNET_KEYS if saved.get(k) != want[k]]
    if diffs:
        detail = ", ".join(f"{k}: file {saved.get(k)!r}, space {want[k]!r}" for k in diffs)
        raise NasplatError(f"{path}: base UNet does not fit space '{space.name}' ({detail}); train it again")
    return state


def train_base(
    space: SearchSpace,
    *,
    dataset: str = "fashion_mnist",
    n_train: int | None = None,
    n_val: int = 1000,
    data_seed: int = 0,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    ema_decay: float = 0.995,
    seed: int = 0,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train ``space``'s base UNet without a condition and write it to ``out`` (default: the space's
    ``macro.base_weights``). Returns the file written."""
    from safetensors.torch import save_file

    from nasplat.datasets import DataSpec, load_splits
    from nasplat.search import check_dataset_fits

    from .supernet import model_config
    from .task import DiffusionControlTask

    target = Path(out) if out is not None else base_path(space)
    data = DataSpec(name=dataset, n_train=n_train, n_val=n_val, seed=data_seed, batch_size=batch_size)
    train, _ = load_splits(data)
    check_dataset_fits(space, train.input_shape, len(train.classes), dataset)
    cfg = model_config(space)
    task = space.family.task(space)
    assert isinstance(task, DiffusionControlTask)
    with seeded(seed):
        net = UNet(cfg)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    abar = alpha_bars(cfg)
    gen = torch.Generator().manual_seed(seed)
    step, epoch, t0 = 0, 0, time.perf_counter()
    loss_avg = 0.0
    net.train()
    while step < steps:
        for batch in train.batches(batch_size, seed=seed * 1000 + epoch, shuffle=True, drop_last=True):
            if step >= steps:
                break
            x0, _ = task.prepare(batch)
            t = torch.randint(0, len(abar), (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            lr_now = lr * min(1.0, (step + 1) / 100) * (0.5 + 0.5 * (1 - step / steps))
            for group in opt.param_groups:
                group["lr"] = lr_now
            loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t.float()), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                decay = min(ema_decay, (1 + step) / (10 + step))
                for k, v in net.state_dict().items():
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            loss_avg = 0.98 * loss_avg + 0.02 * float(loss.detach()) if step else float(loss.detach())
            step += 1
            if log is not None and (step % 100 == 0 or step == steps):
                log(f"base UNet step {step}/{steps}: loss {loss_avg:.4f} ({time.perf_counter() - t0:.0f} s)")
        epoch += 1
    meta = {
        "format": BASE_FORMAT,
        "unet_config": json.dumps(unet_config(space)),
        "space": space.name,
        "dataset": dataset,
        "n_train": str(len(train)),
        "n_val": str(n_val),
        "data_seed": str(data_seed),
        "steps": str(steps),
        "batch_size": str(batch_size),
        "lr": str(lr),
        "ema_decay": str(ema_decay),
        "seed": str(seed),
        "final_loss": f"{loss_avg:.5f}",
        "seconds": f"{time.perf_counter() - t0:.1f}",
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp), metadata=meta)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> None:
    from nasplat.space import load_space

    parser = argparse.ArgumentParser(description="Train the frozen base UNet a controlnet space names.")
    parser.add_argument("space", help="a controlnet space name or YAML file")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: the space's macro.base_weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    space = load_space(args.space)
    path = train_base(
        space, dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        n_train=args.n_train, n_val=args.n_val, seed=args.seed, out=args.out,
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
