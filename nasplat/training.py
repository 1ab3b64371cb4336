"""Single-process supernet training (SPOS-style), checkpoints with exact resume, BN recalibration, subnet evaluation.

Every step trains the paths a :class:`SamplingStrategy` picks (``uniform``: one random path, as in SPOS) on one
batch, averaging their losses. All randomness is derived from ``TrainSettings.seed``: epoch ``e`` shuffles and
augments its data with a seed derived from ``(seed, e)``, paths come from a numpy Generator whose state is
checkpointed, and the task gets a torch Generator derived from ``(seed, step)``. So training 2 epochs straight
and training 1 epoch, stopping, and resuming give the same weights, bit for bit (on the same machine and
thread count; modules that draw from torch's global RNG, such as ``nn.Dropout``, break this guarantee).

Checkpoint layout (``run_dir/checkpoints/``)::

    epoch-0001/model.safetensors   supernet state_dict (weights and BN buffers)
    epoch-0001/optimizer.pt        optimizer state_dict (torch.save; read back with weights_only=True)
    epoch-0001/state.json          epochs done, steps, path-RNG state, settings, space name and hash, history
    latest                         text file naming the newest complete checkpoint folder

A checkpoint folder is written under a temporary name and renamed into place, then ``latest`` is replaced
atomically, so a crash never leaves ``latest`` pointing at a partial checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.supernet import Supernet

if TYPE_CHECKING:
    from nasplat.architecture import Architecture
    from nasplat.data import ArrayDataset
    from nasplat.space import SearchSpace
    from nasplat.task import Batch, Task

CHECKPOINT_FORMAT = 1
_SEED_TAG_DATA, _SEED_TAG_PATHS, _SEED_TAG_TASK = 0, 1, 2


class TrainSettings(BaseModel):
    """Hyper-parameters of supernet training (SGD, linear warm-up then cosine decay, set per step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, description="applied to weights with 2+ dims, not to BN/bias")
    nesterov: bool = True
    warmup_epochs: float = Field(default=0.0, ge=0)
    strategy: str = "uniform"
    seed: int = 0
    augment: bool = Field(default=False, description="random crop + flip of training batches (32×32 colour)")
    grad_clip_norm: float | None = Field(default=None, gt=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap steps per epoch (short CPU runs)")
    checkpoint_every_epochs: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self


# Settings that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every_epochs"})


# --------------------------------------------------------------------------------------------------------------
# sampling strategies


class SamplingStrategy:
    """Which paths of the supernet are trained on a step (their losses are averaged).

    Strategies are registered with ``registry.register("strategy", NAME)`` and built as ``cls(space)``. A
    strategy that keeps state between steps (e.g. fair sampling's permutation) must return it from
    ``state_dict`` (JSON-able) and take it back in ``load_state_dict`` so that resumed runs are exact.
    """

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def paths(self, space: SearchSpace, rng: np.random.Generator, step: int) -> list[Architecture]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@registry.register("strategy", "uniform")
class UniformStrategy(SamplingStrategy):
    """SPOS: one uniformly random path per step."""

    name: ClassVar[str] = "uniform"

    def paths(self, space: SearchSpace, rng: np.random.Generator, step: int) -> list[Architecture]:
        return [space.sample(rng)]


def make_strategy(name: str, space: SearchSpace) -> SamplingStrategy:
    cls = registry.get("strategy", name)
    strategy = cls(space)
    if not isinstance(strategy, SamplingStrategy):
        raise NasplatError(f"strategy '{name}' is not a SamplingStrategy")
    return strategy


# --------------------------------------------------------------------------------------------------------------
# helpers


def derive_seed(seed: int, tag: int, index: int = 0) -> int:
    """A 63-bit seed for stream ``tag`` number ``index`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, tag, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def lr_at(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``lr``, then cosine decay to 0 at the last step."""
    total = settings.epochs * steps_per_epoch
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * (step - warmup) / span))


def _make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)


def _settings_json(settings: TrainSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class TrainResult:
    epochs_done: int
    checkpoint: Path
    history: tuple[dict[str, Any], ...]


def _checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, a run folder or a ``checkpoints`` folder (via ``latest``)."""
    p = Path(path)
    if (p / "state.json").is_file():
        return p
    for latest in (p / "checkpoints" / "latest", p / "latest"):
        if latest.is_file():
            target = latest.parent / latest.read_text().strip()
            if not (target / "state.json").is_file():
                raise NasplatError(f"{latest} names {target.name}, which is not a complete checkpoint")
            return target
    raise NasplatError(f"{p}: no checkpoint here (expected state.json, or checkpoints/latest in a run folder)")


def _read_state(ckpt: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NasplatError(f"{ckpt / 'state.json'}: unreadable checkpoint state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NasplatError(f"{ckpt / 'state.json'}: not a nasplat checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def _check_space(state: dict[str, Any], space: SearchSpace, ckpt: Path) -> None:
    if state.get("space_hash") != space.hash:
        raise NasplatError(
            f"{ckpt}: checkpoint is of space '{state.get('space_name')}' (hash {state.get('space_hash')}), "
            f"not '{space.name}' (hash {space.hash}); use the same space file or a new run folder"
        )


def _load_weights(model: nn.Module, ckpt: Path) -> None:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(ckpt / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise NasplatError(f"{ckpt / 'model.safetensors'}: cannot read weights ({exc})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise NasplatError(f"{ckpt}: weights do not fit this supernet: {detail}") from None


def load_checkpoint(supernet: Supernet, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights into ``supernet`` (strictly) and return its ``state.json`` content.

    ``path`` is a checkpoint folder or a run folder (its latest checkpoint). The checkpoint must be of the
    supernet's space (same hash).
    """
    ckpt = resolve_checkpoint(path)
    state = _read_state(ckpt)
    _check_space(state, supernet.space, ckpt)
    _load_weights(supernet, ckpt)
    return state


def _write_checkpoint(
    run_dir: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    from safetensors.torch import save_file

    ckpt_root = _checkpoints_dir(run_dir)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".tmp-{final.name}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "nasplat-supernet"})
        (tmp / "model.safetensors").chmod(0o644)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if final.exists():  # left by a run that crashed before updating `latest`
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fd, latest_tmp = tempfile.mkstemp(dir=ckpt_root, prefix=".latest-")
    with os.fdopen(fd, "w") as fh:
        fh.write(final.name + "\n")
    os.chmod(latest_tmp, 0o644)
    os.replace(latest_tmp, ckpt_root / "latest")
    return final


# --------------------------------------------------------------------------------------------------------------
# training


def _progress_bar(enabled: bool) -> Any:
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} steps/s"),
        TimeElapsedColumn(),
    )


def train_supernet(
    supernet: Supernet,
    task: Task,
    train_data: ArrayDataset,
    settings: TrainSettings,
    run_dir: str | Path,
    *,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``supernet`` on ``train_data``, checkpointing into ``run_dir``; resume if it holds a checkpoint.

    Resuming needs the same space (hash), dataset size and settings (only ``checkpoint_every_epochs`` may
    change); the run then continues after the latest checkpoint's epoch and ends with the same weights as an
    uninterrupted run. ``on_epoch`` gets each epoch's record (epoch, loss, seconds, images_per_s, steps, lr).
    """
    run_dir = Path(run_dir)
    space = supernet.space
    strategy = make_strategy(settings.strategy, space)
    steps_per_epoch = train_data.num_batches(settings.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise NasplatError(
            f"dataset '{train_data.name}' has {len(train_data)} images, fewer than one batch of {settings.batch_size}"
        )
    if settings.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, settings.max_steps_per_epoch)
    if settings.augment:
        from nasplat.data import check_augmentable

        check_augmentable(train_data)

    optimizer = _make_optimizer(supernet, settings)
    path_rng = np.random.default_rng(derive_seed(settings.seed, _SEED_TAG_PATHS))
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    checkpoint: Path | None = None
    data_info = {"name": train_data.name, "n_images": len(train_data)}

    if (_checkpoints_dir(run_dir) / "latest").is_file():
        checkpoint = resolve_checkpoint(run_dir)
        state = _read_state(checkpoint)
        _check_space(state, space, checkpoint)
        saved = state.get("settings", {})
        now = _settings_json(settings)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise NasplatError(f"{checkpoint}: cannot resume with different settings ({diffs}); use a new run folder")
        if state.get("data") != data_info:
            raise NasplatError(f"{checkpoint}: trained on {state.get('data')}, not {data_info}; use a new run folder")
        _load_weights(supernet, checkpoint)
        try:
            optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise NasplatError(f"{checkpoint / 'optimizer.pt'}: cannot restore optimizer ({exc})") from None
        path_rng.bit_generator.state = state["path_rng"]
        strategy.load_state_dict(state.get("strategy_state", {}))
        start_epoch, step = int(state["epochs_done"]), int(state["steps"])
        history = [dict(h) for h in state.get("history", [])]

    params = [p for p in supernet.parameters() if p.requires_grad]
    supernet.train()
    with _progress_bar(progress) as bar:
        for epoch in range(start_epoch, settings.epochs):
            t0 = time.perf_counter()
            loss_sum, n_steps, n_images = 0.0, 0, 0
            task_id = None
            if bar is not None:
                task_id = bar.add_task(
                    f"epoch {epoch + 1}/{settings.epochs}", total=steps_per_epoch, loss=0.0, rate=0.0
                )
            batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = train_data.batches(
                settings.batch_size,
                seed=derive_seed(settings.seed, _SEED_TAG_DATA, epoch),
                shuffle=True,
                augment=settings.augment,
                drop_last=True,
            )
            for batch in batches:
                if n_steps >= steps_per_epoch:
                    break
                lr = lr_at(settings, step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                archs = strategy.paths(space, path_rng, step)
                gen = torch.Generator().manual_seed(derive_seed(settings.seed, _SEED_TAG_TASK, step))
                step_loss = 0.0
                for arch in archs:
                    with supernet.activate(arch):
                        loss = task.loss(supernet, batch, gen)
                    if not torch.isfinite(loss):
                        raise NasplatError(f"training diverged: loss {float(loss)} at epoch {epoch + 1}, step {step}")
                    (loss / len(archs)).backward()
                    step_loss += float(loss.detach()) / len(archs)
                if settings.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, settings.grad_clip_norm)
                optimizer.step()
                step += 1
                n_steps += 1
                n_images += int(batch[0].shape[0])
                loss_sum += step_loss
                if bar is not None:
                    elapsed = time.perf_counter() - t0
                    bar.update(task_id, advance=1, loss=loss_sum / n_steps, rate=n_steps / max(elapsed, 1e-9))
            seconds = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(n_steps, 1),
                "seconds": seconds,
                "images_per_s": n_images / max(seconds, 1e-9),
                "steps": n_steps,
                "lr": lr_at(settings, step - 1, steps_per_epoch),
            }
            history.append(record)
            done = epoch + 1
            if done % settings.checkpoint_every_epochs == 0 or done == settings.epochs:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "epochs_done": done,
                    "steps": step,
                    "steps_per_epoch": steps_per_epoch,
                    "path_rng": path_rng.bit_generator.state,
                    "strategy_state": strategy.state_dict(),
                    "settings": _settings_json(settings),
                    "space_name": space.name,
                    "space_hash": space.hash,
                    "data": data_info,
                    "history": history,
                }
                checkpoint = _write_checkpoint(run_dir, done, supernet, optimizer, state)
            if on_epoch is not None:
                on_epoch(dict(record))
    assert checkpoint is not None  # the last epoch always checkpoints
    return TrainResult(epochs_done=settings.epochs, checkpoint=checkpoint, history=tuple(history))


# --------------------------------------------------------------------------------------------------------------
# batch-norm recalibration and subnet evaluation


def _batch_norms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    seen: set[int] = set()
    out = []
    for top in modules:
        for m in top.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


def _default_forward(model: nn.Module, batch: Batch) -> Any:
    return model(batch[0])


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Batch],
    n_batches: int,
    *,
    arch: Architecture | None = None,
    forward: Callable[[nn.Module, Batch], Any] | None = None,
) -> int:
    """Re-estimate BatchNorm running statistics from ``n_batches`` batches; returns the batches used.

    Resets every BatchNorm of ``model`` (or, with ``arch`` and a Supernet, those in
    ``model.path_modules(arch)``, running with ``arch`` active), then runs forward passes in train mode without
    gradients with ``momentum=None`` (a cumulative average over the batches), restores each BN's momentum and
    leaves the model in eval mode. ``forward(model, batch)`` defaults to ``model(batch[0])``.
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if arch is not None:
        if not isinstance(model, Supernet):
            raise TypeError("recalibrate_bn: 'arch' needs a Supernet")
        bns = _batch_norms(model.path_modules(arch))
    else:
        bns = _batch_norms([model])
    run = forward or _default_forward
    momenta = [bn.momentum for bn in bns]
    used = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            if arch is not None:
                assert isinstance(model, Supernet)
                with model.activate(arch):
                    used = _run_batches(model, batches, n_batches, run)
            else:
                used = _run_batches(model, batches, n_batches, run)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()
    if used == 0:
        raise NasplatError("BN recalibration got no batches")
    return used


def _run_batches(model: nn.Module, batches: Iterable[Batch], n_batches: int, run: Callable[..., Any]) -> int:
    used = 0
    for batch in batches:
        if used >= n_batches:
            break
        run(model, batch)
        used += 1
    return used


def evaluate_subnet(
    supernet: Supernet,
    arch: Architecture,
    task: Task,
    eval_data: ArrayDataset,
    calib_data: ArrayDataset,
    *,
    batch_size: int = 256,
    calib_batches: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics of ``arch`` inheriting the supernet's weights, after BN recalibration on ``calib_data``.

    Recalibration uses ``calib_batches`` shuffled batches of ``calib_data`` (seeded by ``seed``, no
    augmentation; 0 keeps the stored statistics). The supernet is left as it was found: the running statistics
    of the path's BatchNorms are saved before and restored after, so evaluations do not depend on each other's
    order, and the train/eval mode is restored.
    """
    bns = _batch_norms(supernet.path_modules(arch))
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    modes = {m: m.training for m in supernet.modules()}
    try:
        if calib_batches > 0:
            gen = torch.Generator().manual_seed(derive_seed(seed, _SEED_TAG_TASK))

            def forward(model: nn.Module, batch: Batch) -> Any:
                return task.loss(model, batch, gen)

            batches = calib_data.batches(batch_size, seed=seed, shuffle=True)
            recalibrate_bn(supernet, batches, calib_batches, arch=arch, forward=forward)
        supernet.eval()
        with supernet.activate(arch):
            return task.evaluate(supernet, eval_data.batches(batch_size, seed=None, shuffle=False))
    finally:
        with torch.no_grad():
            for bn, state in zip(bns, saved):
                for k, v in state.items():
                    getattr(bn, k).copy_(v)
        for m, training in modes.items():
            m.training = training
