"""Short stand-alone training of one network, in this process: what an estimator spends when it is granted a few
steps per architecture to check its own ranking (the ``combined`` estimator's anchors).

The recipe is the supernet trainer's (SGD with Nesterov momentum, weight decay on weights of two or more
dimensions only, warm-up then cosine decay set per step by :func:`~nasplat.train.lr_at`), applied to a plain
module for a number of steps rather than epochs. Every random choice is derived from ``seed``: the data order
and augmentation of each pass over the training split, and the task's generator at each step, so the same call
gives the same weights and metrics (on the same machine and thread count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nasplat import seeds
from nasplat.errors import NasplatError
from nasplat.seeds import derive_seed

from ._settings import TrainSettings
from ._trainer import _make_optimizer, lr_at

if TYPE_CHECKING:
    from torch import nn

    from nasplat.datasets import ArrayDataset
    from nasplat.model import Task


@dataclass(frozen=True)
class StandaloneBudget:
    """How much one stand-alone network is trained."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    augment: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise NasplatError(
                "stand-alone training needs steps >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0; "
                f"got steps={self.steps}, batch_size={self.batch_size}, lr={self.lr}, weight_decay={self.weight_decay}"
            )
        if not 0 <= self.momentum < 1:
            raise NasplatError(f"stand-alone training needs 0 <= momentum < 1, got {self.momentum}")


def train_standalone(
    model: nn.Module,
    task: Task,
    train: ArrayDataset,
    val: ArrayDataset,
    budget: StandaloneBudget,
    *,
    seed: int,
    eval_batch_size: int = 256,
) -> dict[str, float]:
    """Train ``model`` in place for ``budget.steps`` steps on ``train``, then return the task's metrics on ``val``
    (and ``train_loss``, the mean loss of the last pass's steps)."""
    batch_size = min(budget.batch_size, len(train))
    per_pass = train.num_batches(batch_size, drop_last=True)
    if per_pass == 0:
        raise NasplatError(f"dataset '{train.name}' has {len(train)} images, fewer than one batch of {batch_size}")
    schedule = TrainSettings(
        epochs=1,
        batch_size=batch_size,
        lr=budget.lr,
        momentum=budget.momentum,
        weight_decay=budget.weight_decay,
        nesterov=budget.momentum > 0,
    )
    optimizer = _make_optimizer(model, schedule)
    model.train()
    step, losses = 0, list[float]()
    while step < budget.steps:
        data_seed = derive_seed(seed, seeds.ANCHOR_DATA, step // per_pass)
        losses = []
        for batch in train.batches(batch_size, seed=data_seed, shuffle=True, augment=budget.augment, drop_last=True):
            if step >= budget.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(schedule, step, budget.steps)  # one "epoch" of budget.steps steps
            optimizer.zero_grad(set_to_none=True)
            gen = torch.Generator().manual_seed(derive_seed(seed, seeds.ANCHOR_STEP, step))
            loss = task.loss(model, batch, gen)
            if not torch.isfinite(loss):
                raise NasplatError(
                    f"stand-alone training diverged: loss {float(loss)} at step {step + 1} (lr {budget.lr})"
                )
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
    metrics = task.evaluate(model, val.batches(eval_batch_size, seed=None, shuffle=False))
    return {**metrics, "train_loss": sum(losses) / max(len(losses), 1)}
