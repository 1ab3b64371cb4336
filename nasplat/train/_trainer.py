"""Single-process supernet training (SPOS-style), checkpoints with exact resume, BN recalibration, subnet evaluation.

Every step trains the paths a :class:`SamplingStrategy` picks (``uniform``: one random path, as in SPOS) on one
batch, averaging their losses. All randomness is derived from ``TrainSettings.seed``: epoch ``e`` shuffles and
augments its data with a seed derived from ``(seed, e)``, paths come from a numpy Generator whose state is
checkpointed, and the task gets a torch Generator derived from ``(seed, step)``. So training 2 epochs straight
and training 1 epoch, stopping, and resuming give the same weights, bit for bit (on the same machine and
thread count; modules that draw from torch's global RNG, such as ``nn.Dropout``, break this guarantee).

The checkpoint format is :mod:`nasplat.model` (``_checkpoint``); this module writes and resumes from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from nasplat import seeds
from nasplat.errors import NasplatError
from nasplat.model import (
    CHECKPOINT_FORMAT,
    CorruptCheckpointError,
    Supernet,
    apply_weights,
    check_checkpoint_space,
    checkpoint_epoch,
    checkpoints_dir,
    complete_checkpoints,
    evaluate_subnet,
    latest_target,
    notice,
    point_latest,
    read_optimizer,
    read_state,
    read_weights,
    write_checkpoint,
)
from nasplat.seeds import derive_seed

from ._settings import TrainSettings
from ._strategies import make_strategy

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.model import Batch, Task
    from nasplat.space import Architecture

_SEED_TAG_DATA, _SEED_TAG_PATHS, _SEED_TAG_TASK, _SEED_TAG_PROGRESS = (
    seeds.TRAIN_DATA,
    seeds.TRAIN_PATHS,
    seeds.TASK,
    seeds.PROGRESS,
)


# Settings that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every_epochs", "progress_subnets", "progress_images"})


# --------------------------------------------------------------------------------------------------------------
# helpers


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


def resume_newest(
    trainer: SupernetTrainer,
    ckpt_root: Path,
    *,
    extra: Sequence[Path] = (),
    log: Callable[[str], None] = notice,
    repair_latest: bool = True,
) -> Path | None:
    """Restore ``trainer`` from the newest intact checkpoint in ``ckpt_root`` (or in ``extra``, first on a tie);
    ``None`` when there is none at all.

    A missing or dangling ``latest`` is no reason to start again: the newest complete folder is used (one line
    says so). A damaged checkpoint is skipped for the one before it (one line says so). When every checkpoint is
    damaged, a NasplatError: none is ever deleted or overwritten with a restart. With ``repair_latest``,
    ``latest`` is made to name the checkpoint resumed from.
    """
    named, problem = latest_target(ckpt_root)
    seen = {p.resolve() for p in extra}
    candidates = list(extra) + [p for p in complete_checkpoints(ckpt_root) if p.resolve() not in seen]
    candidates.sort(key=checkpoint_epoch, reverse=True)  # stable: `extra` first on a tie
    if not candidates:
        return None
    if named is None:
        log(f"{problem}; resuming from {candidates[0].name}, the newest complete checkpoint")
    for i, ckpt in enumerate(candidates):
        try:
            trainer.restore(ckpt)
        except CorruptCheckpointError as exc:
            if i + 1 == len(candidates):
                raise NasplatError(
                    f"{exc}; no older intact checkpoint in {ckpt_root} to resume from (move the folder away to "
                    "train from the start)"
                ) from None
            log(f"{exc}; resuming from {candidates[i + 1].name}, the checkpoint before it")
            continue
        if repair_latest and ckpt.resolve().parent == ckpt_root.resolve() and named != ckpt:
            point_latest(ckpt_root, ckpt.name)
        return ckpt
    return None


# --------------------------------------------------------------------------------------------------------------
# training


#: Seconds between progress lines when output is not a terminal (a log file, a pipe, CI).
HEARTBEAT_S = 30.0


class LineProgress:
    """Progress for output that is not a terminal: a line per task at most every ``interval_s`` seconds and
    one when it completes, instead of bars that only appear (all at once) when the run ends."""

    def __init__(
        self, interval_s: float = HEARTBEAT_S, write: Callable[[str], None] | None = None, unit: str = "steps"
    ) -> None:
        self.interval_s = interval_s
        self.unit = unit
        self._write = write or (lambda line: print(line, flush=True))
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, **fields: Any) -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = {"description": description, "total": total, "start": time.monotonic(), "last": 0.0}
        return task_id

    def update(self, task_id: int, completed: int, **fields: Any) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        done = completed >= task["total"]
        if not done and now - (task["last"] or task["start"]) < self.interval_s:
            return
        task["last"] = now
        elapsed = now - task["start"]
        extra = "".join(f" · {k} {v:.4g}" for k, v in fields.items() if isinstance(v, (int, float)))
        self._write(f"{task['description']}: {completed}/{task['total']} {self.unit}{extra} · {elapsed:.0f} s")


def _progress_bar(enabled: bool) -> Any:
    import sys
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    if not sys.stdout.isatty():
        return LineProgress()
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
    (:mod:`nasplat.train._ray`), so both train, checkpoint and resume the same way. Worker ``rank`` reads
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
            from nasplat.datasets import check_augmentable

            check_augmentable(train_data)
        self.optimizer = _make_optimizer(supernet, settings)
        self.lr_scale = float(world) if settings.lr_scaling == "linear" else 1.0
        # rank 0 of a distributed run draws the same paths as a single-process run of the same seed
        self.path_rng = np.random.default_rng(derive_seed(settings.seed, _SEED_TAG_PATHS, rank))
        self.epochs_done, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.first_paths: list[str] = []  # the paths of the last epoch's first step (a record of what was sampled)
        self.data_info: dict[str, Any] = {
            "name": train_data.name,
            "n_images": len(train_data),
            "input_shape": list(train_data.input_shape),
            "num_classes": train_data.num_classes,
        }

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
        """Continue from ``checkpoint`` (same space, data, settings and worker count).

        Every file of the checkpoint is checked before anything is restored: a damaged one raises a
        :class:`CorruptCheckpointError` and leaves this trainer as it was.
        """
        state = read_state(checkpoint)
        check_checkpoint_space(state, self.space, checkpoint)
        saved = state.get("settings", {})
        now = _settings_json(self.settings)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise NasplatError(f"{checkpoint}: cannot resume with different settings ({diffs}); use a new run folder")
        saved_data = state.get("data") or {}
        # checkpoints written before the data's shape and classes were recorded compare on name and size
        compared = ("name", "n_images", *(k for k in ("input_shape", "num_classes") if k in saved_data))
        if any(saved_data.get(k) != self.data_info[k] for k in compared):
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('data')}, not {self.data_info}; use a new run folder"
            )
        if int(state.get("world", 1)) != self.world:
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('world', 1)} worker(s), not {self.world}; resume with the same "
                "number of workers or use a new run folder"
            )
        tensors = read_weights(checkpoint, state)
        opt_state = read_optimizer(checkpoint, state)
        apply_weights(self.supernet, tensors, checkpoint)
        try:
            self.optimizer.load_state_dict(opt_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise NasplatError(f"{checkpoint / 'optimizer.pt'}: cannot restore optimizer ({exc})") from None
        rng_state = state["path_rng"]
        if self.rank != 0:  # every worker's own generator, saved by rank 0 in "worker_rngs"
            rng_state = state.get("worker_rngs", {}).get(str(self.rank), rng_state)
        self.path_rng.bit_generator.state = rng_state
        self.strategy.load_state_dict(state.get("strategy_state", {}))
        self.epochs_done, self.step = int(state["epochs_done"]), int(state["steps"])
        self.history = [dict(h) for h in state.get("history", [])]

    def save(self, run_dir: Path, extra_state: dict[str, Any] | None = None) -> Path:
        return write_checkpoint(
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
    progress options may change); the run then continues after the newest intact checkpoint's epoch (see
    :func:`resume_newest`: a missing ``latest`` or a damaged checkpoint is no reason to start again) and ends
    with the same weights as an uninterrupted run. ``on_epoch`` gets each epoch's record (epoch, loss, seconds,
    images_per_s, steps, lr and, with ``eval_data`` and ``progress_subnets``, ``subnet_<metric>``).
    For several workers or machines, see :func:`nasplat.train.train_supernet_ray`.
    """
    run_dir = Path(run_dir)
    trainer = SupernetTrainer(supernet, task, train_data, settings)
    checkpoint = resume_newest(trainer, checkpoints_dir(run_dir))
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
