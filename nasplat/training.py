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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.supernet import Supernet
from nasplat.train_settings import TrainSettings

if TYPE_CHECKING:
    from nasplat.architecture import Architecture
    from nasplat.data import ArrayDataset
    from nasplat.space import SearchSpace
    from nasplat.task import Batch, Task

CHECKPOINT_FORMAT = 1
_SEED_TAG_DATA, _SEED_TAG_PATHS, _SEED_TAG_TASK, _SEED_TAG_PROGRESS = 0, 1, 2, 3


# Settings that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every_epochs", "progress_subnets", "progress_images"})


# --------------------------------------------------------------------------------------------------------------
# sampling strategies


class SamplingStrategy:
    """Which paths of the supernet are trained on a step (their losses are averaged).

    Strategies are registered with ``registry.register("strategy", NAME)`` and built as
    ``cls(space, **options)`` (options from ``TrainSettings.strategy_options``). :meth:`setup` hands them the
    supernet and task before training starts. ``distill = True`` makes the first path of every step the
    teacher of the others (in-place distillation through ``Task.distill_loss``). A strategy that keeps state
    between steps must return it from ``state_dict`` (JSON-able) and take it back in ``load_state_dict`` so
    that resumed runs are exact.
    """

    name: ClassVar[str] = ""
    distill: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.supernet: Supernet | None = None
        self.task: Task | None = None

    def setup(self, supernet: Supernet, task: Task) -> None:
        self.supernet, self.task = supernet, task

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@registry.register("strategy", "uniform")
class UniformStrategy(SamplingStrategy):
    """SPOS: one uniformly random path per step."""

    name: ClassVar[str] = "uniform"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [space.sample(rng)]


@registry.register("strategy", "sandwich")
class SandwichStrategy(SamplingStrategy):
    """The sandwich rule (BigNAS): the largest, the smallest and ``n_random`` random paths every step; the
    largest learns from the labels and teaches the others (in-place distillation). Largest and smallest come
    from the family (``Family.extremes``)."""

    name: ClassVar[str] = "sandwich"
    distill: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, n_random: int = 2) -> None:
        super().__init__(space)
        if n_random < 0:
            raise NasplatError(f"strategy 'sandwich': n_random must be >= 0, got {n_random}")
        self.n_random = int(n_random)
        self.largest, self.smallest = space.family.extremes(space)

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [self.largest, self.smallest, *(space.sample(rng) for _ in range(self.n_random))]


@registry.register("strategy", "fair")
class FairStrategy(SamplingStrategy):
    """Fair sampling (FairNAS): every step trains K paths such that each choice of every dimension is used
    exactly once (K = the largest choice count; dimensions with fewer choices repeat theirs in a shuffled
    cycle). A path that breaks a space constraint is replaced by a random valid one."""

    name: ClassVar[str] = "fair"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        k = max(len(d.choices) for d in space.dimensions)
        columns = []
        for d in space.dimensions:
            n = len(d.choices)
            order = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k]
            columns.append([d.choices[int(i)] for i in order])
        out = []
        for i in range(k):
            choices = {d.label: col[i] for d, col in zip(space.dimensions, columns)}
            out.append(space.make(choices) if space.satisfies(choices) else space.sample(rng))
        return out


@registry.register("strategy", "attentive")
class AttentiveStrategy(SamplingStrategy):
    """Pareto-aware sampling (after AttentiveNAS): each step draws ``candidates`` random paths, scores them by a
    cost model's ``metric`` and by their loss on the step's batch (no gradients), and trains ``train_paths`` of
    those on the current (cost, loss) front, so training favours subnets near the accuracy/cost front. With
    ``with_extremes`` the family's largest and smallest paths are trained too (sandwich-style, no distillation
    unless ``distill`` is set)."""

    name: ClassVar[str] = "attentive"

    def __init__(
        self,
        space: SearchSpace,
        cost_model: str = "analytical",
        metric: str = "macs",
        device: str | None = None,
        candidates: int = 4,
        train_paths: int = 1,
        with_extremes: bool = False,
    ) -> None:
        super().__init__(space)
        if candidates < 1 or train_paths < 1:
            raise NasplatError("strategy 'attentive': candidates and train_paths must be >= 1")
        model = registry.get("cost_model", cost_model)()
        model.check_device(device)
        if metric not in model.metrics:
            raise NasplatError(
                f"strategy 'attentive': cost model '{cost_model}' has no metric '{metric}'; it has {list(model.metrics)}"
            )
        self.cost_model, self.metric, self.device = model, metric, device
        self.candidates, self.train_paths, self.with_extremes = int(candidates), int(train_paths), bool(with_extremes)
        self._costs: dict[str, float] = {}
        self.extremes = space.family.extremes(space) if with_extremes else ()

    def cost(self, arch: Architecture) -> float:
        if arch.key not in self._costs:
            self._costs[arch.key] = float(self.cost_model.estimate(self.space, arch, self.device)[self.metric])
        return self._costs[arch.key]

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        if self.supernet is None or self.task is None or batch is None:
            raise NasplatError("strategy 'attentive' needs setup(supernet, task) and the step's batch")
        pool = list({a.key: a for a in (space.sample(rng) for _ in range(self.candidates))}.values())
        scores = []
        with torch.no_grad(), _frozen_bn(self.supernet):
            for arch in pool:
                with self.supernet.activate(arch):
                    scores.append((self.cost(arch), float(self.task.loss(self.supernet, batch, None))))
        front = [
            a
            for a, (c, v) in zip(pool, scores)
            if not any(c2 <= c and v2 <= v and (c2, v2) != (c, v) for c2, v2 in scores)
        ]
        picked = [front[int(i)] for i in rng.permutation(len(front))[: self.train_paths]]
        return [*self.extremes, *picked]


@contextmanager
def _frozen_bn(model: nn.Module) -> Iterator[None]:
    """Score paths without moving BatchNorm running statistics (train-mode normalisation, buffers restored)."""
    bns = _batch_norms([model])
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, state in zip(bns, saved):
                for k, v in state.items():
                    getattr(bn, k).copy_(v)


def make_strategy(name: str, space: SearchSpace, options: dict[str, Any] | None = None) -> SamplingStrategy:
    strategy = registry.build("strategy", name, space, options=options)
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


def _make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
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


def checkpoints_dir(run_dir: Path) -> Path:
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


def write_checkpoint_files(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """The files of one checkpoint (weights, optimizer state, state.json) into an existing empty ``folder``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "nasplat-supernet"})
    (folder / "model.safetensors").chmod(0o644)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps(state, indent=1))


def point_latest(ckpt_root: Path, name: str) -> None:
    """Make ``ckpt_root/latest`` name checkpoint folder ``name`` (atomically)."""
    fd, latest_tmp = tempfile.mkstemp(dir=ckpt_root, prefix=".latest-")
    with os.fdopen(fd, "w") as fh:
        fh.write(name + "\n")
    os.chmod(latest_tmp, 0o644)
    os.replace(latest_tmp, ckpt_root / "latest")


def _write_checkpoint(
    run_dir: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    ckpt_root = checkpoints_dir(run_dir)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(epoch)
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".tmp-{final.name}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        write_checkpoint_files(tmp, model, optimizer, state)
        if final.exists():  # left by a run that crashed before updating `latest`
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_latest(ckpt_root, final.name)
    return final


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


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


class PathsLoss(nn.Module):
    """One training step's loss over several paths as a single forward pass.

    Wrapping the step in one module call is what lets DistributedDataParallel (one forward per backward) train
    several paths per step, and lets it synchronise the gradients of weights a worker's paths did not touch
    (``find_unused_parameters``: they count as zero on that worker). With ``distill`` the first path's output
    teaches the others.
    """

    def __init__(self, supernet: Supernet, task: Task) -> None:
        super().__init__()
        self.supernet = supernet
        self.task = task

    def forward(  # type: ignore[override]
        self, batch: Batch, archs: list[Architecture], generator: torch.Generator | None, distill: bool
    ) -> tuple[torch.Tensor, list[float]]:
        total: torch.Tensor | None = None
        teacher: torch.Tensor | None = None
        losses: list[float] = []
        for i, arch in enumerate(archs):
            with self.supernet.activate(arch):
                if distill and i == 0:
                    loss, out = self.task.loss_and_output(self.supernet, batch, generator)
                    teacher = None if out is None else out.detach()
                elif distill and teacher is not None:
                    loss = self.task.distill_loss(self.supernet, batch, teacher, generator)
                else:
                    loss = self.task.loss(self.supernet, batch, generator)
            losses.append(float(loss.detach()))
            total = loss if total is None else total + loss
        assert total is not None
        return total / len(archs), losses


class SupernetTrainer:
    """The training state of one process (one worker of ``world`` when distributed) and its epoch loop.

    Used as is by :func:`train_supernet` (one process) and by every Ray Train worker
    (:mod:`nasplat.distributed_train`), so both train, checkpoint and resume the same way. Worker ``rank`` reads
    its own slice of every global batch (``batch_size`` images per worker) and samples its own paths from a
    generator seeded by ``(seed, rank)``; the learning rate is scaled by ``world`` under ``lr_scaling: linear``.
    """

    def __init__(
        self,
        supernet: Supernet,
        task: Task,
        train_data: ArrayDataset,
        settings: TrainSettings,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.supernet, self.task, self.data, self.settings = supernet, task, train_data, settings
        self.rank, self.world = rank, world
        self.space = supernet.space
        self.strategy = make_strategy(settings.strategy, self.space, settings.strategy_options)
        self.strategy.setup(supernet, task)
        global_batch = settings.batch_size * world
        steps = len(train_data) // global_batch
        if steps == 0:
            raise NasplatError(
                f"dataset '{train_data.name}' has {len(train_data)} images, fewer than one global batch of "
                f"{global_batch} ({settings.batch_size} x {world} workers)"
            )
        if settings.max_steps_per_epoch is not None:
            steps = min(steps, settings.max_steps_per_epoch)
        self.steps_per_epoch = steps
        if settings.augment:
            from nasplat.data import check_augmentable

            check_augmentable(train_data)
        self.optimizer = _make_optimizer(supernet, settings)
        self.lr_scale = float(world) if settings.lr_scaling == "linear" else 1.0
        # rank 0 of a distributed run draws the same paths as a single-process run of the same seed
        self.path_rng = np.random.default_rng(derive_seed(settings.seed, _SEED_TAG_PATHS, rank))
        self.epochs_done, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.first_paths: list[str] = []  # the paths of the last epoch's first step (a record of what was sampled)
        self.data_info = {"name": train_data.name, "n_images": len(train_data)}

    # state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epochs_done": self.epochs_done,
            "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "path_rng": self.path_rng.bit_generator.state,
            "strategy_state": self.strategy.state_dict(),
            "settings": _settings_json(self.settings),
            "space_name": self.space.name,
            "space_hash": self.space.hash,
            "data": self.data_info,
            "world": self.world,
            "history": self.history,
        }

    def restore(self, checkpoint: Path) -> None:
        """Continue from ``checkpoint`` (same space, data, settings and worker count)."""
        state = _read_state(checkpoint)
        _check_space(state, self.space, checkpoint)
        saved = state.get("settings", {})
        now = _settings_json(self.settings)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise NasplatError(f"{checkpoint}: cannot resume with different settings ({diffs}); use a new run folder")
        if state.get("data") != self.data_info:
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('data')}, not {self.data_info}; use a new run folder"
            )
        if int(state.get("world", 1)) != self.world:
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('world', 1)} worker(s), not {self.world}; resume with the same "
                "number of workers or use a new run folder"
            )
        _load_weights(self.supernet, checkpoint)
        try:
            opt_state = torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location="cpu")
            self.optimizer.load_state_dict(opt_state)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise NasplatError(f"{checkpoint / 'optimizer.pt'}: cannot restore optimizer ({exc})") from None
        rng_state = state["path_rng"]
        if self.rank != 0:  # every worker's own generator, saved by rank 0 in "worker_rngs"
            rng_state = state.get("worker_rngs", {}).get(str(self.rank), rng_state)
        self.path_rng.bit_generator.state = rng_state
        self.strategy.load_state_dict(state.get("strategy_state", {}))
        self.epochs_done, self.step = int(state["epochs_done"]), int(state["steps"])
        self.history = [dict(h) for h in state.get("history", [])]

    def save(self, run_dir: Path, extra_state: dict[str, Any] | None = None) -> Path:
        return _write_checkpoint(
            run_dir, self.epochs_done, self.supernet, self.optimizer, {**self.state(), **(extra_state or {})}
        )

    def should_checkpoint(self) -> bool:
        done = self.epochs_done
        return done % self.settings.checkpoint_every_epochs == 0 or done == self.settings.epochs

    # training ------------------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This worker's slices of epoch ``epoch``'s global batches (the same shuffle on every worker)."""
        s = self.settings
        per = s.batch_size
        for x, y in self.data.batches(
            per * self.world,
            seed=derive_seed(s.seed, _SEED_TAG_DATA, epoch),
            shuffle=True,
            augment=s.augment,
            drop_last=True,
        ):
            yield x[self.rank * per : (self.rank + 1) * per], y[self.rank * per : (self.rank + 1) * per]

    def run_epoch(
        self,
        step_module: nn.Module,
        *,
        device: torch.device | None = None,
        on_step: Callable[[int, float, float], None] | None = None,
    ) -> dict[str, Any]:
        """Train one epoch through ``step_module`` (a :class:`PathsLoss`, or DDP around one); return its record."""
        s = self.settings
        epoch = self.epochs_done
        params = [p for p in self.supernet.parameters() if p.requires_grad]
        autocast_device = (device or torch.device("cpu")).type
        t0 = time.perf_counter()
        loss_sum, n_steps, n_images, n_paths = 0.0, 0, 0, 0
        self.supernet.train()
        for x_cpu, y_cpu in self.epoch_batches(epoch):
            if n_steps >= self.steps_per_epoch:
                break
            batch: Batch = (x_cpu, y_cpu)
            if device is not None and device.type != "cpu":
                batch = (x_cpu.to(device, non_blocking=True), y_cpu.to(device, non_blocking=True))
            lr = lr_at(s, self.step, self.steps_per_epoch) * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            archs = self.strategy.paths(self.space, self.path_rng, self.step, batch)
            if n_steps == 0:
                self.first_paths = [a.key for a in archs]
            gen = torch.Generator().manual_seed(derive_seed(s.seed, _SEED_TAG_TASK, self.step * 1_000 + self.rank))
            with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                loss, path_losses = step_module(batch, archs, gen, self.strategy.distill)
            if not torch.isfinite(loss):
                raise NasplatError(f"training diverged: loss {float(loss)} at epoch {epoch + 1}, step {self.step}")
            loss.backward()
            if s.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip_norm)
            self.optimizer.step()
            self.step += 1
            n_steps += 1
            n_paths += len(archs)
            n_images += int(batch[0].shape[0])
            loss_sum += sum(path_losses) / len(path_losses)
            if on_step is not None:
                on_step(n_steps, loss_sum / n_steps, n_steps / max(time.perf_counter() - t0, 1e-9))
        seconds = time.perf_counter() - t0
        self.epochs_done = epoch + 1
        return {
            "epoch": epoch + 1,
            "loss": loss_sum / max(n_steps, 1),
            "seconds": seconds,
            "images_per_s": n_images / max(seconds, 1e-9),
            "paths_per_step": n_paths / max(n_steps, 1),
            "steps": n_steps,
            "lr": lr_at(s, self.step - 1, self.steps_per_epoch) * self.lr_scale,
        }

    def progress_eval(self, eval_data: ArrayDataset | None) -> dict[str, float]:
        """Mean metrics of ``progress_subnets`` fixed random subnets (BN recalibrated) on a validation slice."""
        s = self.settings
        if eval_data is None or s.progress_subnets == 0:
            return {}
        rng = np.random.default_rng(derive_seed(s.seed, _SEED_TAG_PROGRESS))
        archs = [self.space.sample(rng) for _ in range(s.progress_subnets)]
        subset = eval_data.subset(range(min(s.progress_images, len(eval_data))))
        rows = [
            evaluate_subnet(
                self.supernet, a, self.task, subset, self.data, batch_size=256, calib_batches=4, seed=s.seed
            )
            for a in archs
        ]
        self.supernet.train()
        return {f"subnet_{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}


def progress_line(settings: TrainSettings, record: dict[str, Any]) -> str:
    """One line per epoch: loss, sampled-subnet metrics (when measured) and throughput."""
    extra = "".join(f" · {k.removeprefix('subnet_')} {v:.2f}" for k, v in record.items() if k.startswith("subnet_"))
    workers = record.get("workers", 1)
    return (
        f"epoch {record['epoch']}/{settings.epochs} · loss {record['loss']:.4f}{extra} · "
        f"{record['images_per_s']:.0f} img/s"
        + (f" on {workers} workers" if workers != 1 else "")
        + f" · {record['seconds']:.1f} s"
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
    eval_data: ArrayDataset | None = None,
) -> TrainResult:
    """Train ``supernet`` on ``train_data`` in this process, checkpointing into ``run_dir``; resume if it holds
    a checkpoint.

    Resuming needs the same space (hash), dataset size and settings (only ``checkpoint_every_epochs`` and the
    progress options may change); the run then continues after the latest checkpoint's epoch and ends with the
    same weights as an uninterrupted run. ``on_epoch`` gets each epoch's record (epoch, loss, seconds,
    images_per_s, steps, lr and, with ``eval_data`` and ``progress_subnets``, ``subnet_<metric>``).
    For several workers or machines, see :func:`nasplat.distributed_train.train_supernet_ray`.
    """
    run_dir = Path(run_dir)
    trainer = SupernetTrainer(supernet, task, train_data, settings)
    checkpoint: Path | None = None
    if (checkpoints_dir(run_dir) / "latest").is_file():
        checkpoint = resolve_checkpoint(run_dir)
        trainer.restore(checkpoint)
    step_module = PathsLoss(supernet, task)
    with _progress_bar(progress) as bar:
        while trainer.epochs_done < settings.epochs:
            on_step = None
            if bar is not None:
                task_id = bar.add_task(
                    f"epoch {trainer.epochs_done + 1}/{settings.epochs}",
                    total=trainer.steps_per_epoch,
                    loss=0.0,
                    rate=0.0,
                )

                def on_step(n: int, loss: float, rate: float, _id: Any = task_id) -> None:
                    bar.update(_id, completed=n, loss=loss, rate=rate)

            record = trainer.run_epoch(step_module, on_step=on_step)
            record.update(trainer.progress_eval(eval_data))
            trainer.history.append(record)
            if trainer.should_checkpoint():
                checkpoint = trainer.save(run_dir)
            if on_epoch is not None:
                on_epoch(dict(record))
    assert checkpoint is not None  # the last epoch always checkpoints
    return TrainResult(epochs_done=settings.epochs, checkpoint=checkpoint, history=tuple(trainer.history))


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
