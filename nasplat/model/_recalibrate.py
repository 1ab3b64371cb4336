"""BatchNorm recalibration of a path and the metrics of a subnet inheriting the supernet's weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

from ._supernet import Supernet

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.space import Architecture

    from ._task import Batch, Task

# --------------------------------------------------------------------------------------------------------------
# batch-norm recalibration and subnet evaluation


def batch_norms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
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


@contextmanager
def kept_bn_statistics(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Whatever runs inside leaves the BatchNorm buffers of ``modules`` (running statistics, batch count) as they
    were: they are saved on entry and copied back on exit."""
    bns = batch_norms(modules)
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, state in zip(bns, saved):
                for k, v in state.items():
                    getattr(bn, k).copy_(v)


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
        bns = batch_norms(model.path_modules(arch))
    else:
        bns = batch_norms([model])
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
    modes = {m: m.training for m in supernet.modules()}
    from ._inherit import Calibration, recalibrate_path

    try:
        with kept_bn_statistics(supernet.path_modules(arch)):
            recalibrate_path(supernet, arch, task, calib_data, Calibration(calib_batches, batch_size, seed))
            supernet.eval()
            with supernet.activate(arch):
                return task.evaluate(supernet, eval_data.batches(batch_size, seed=None, shuffle=False))
    finally:
        for m, training in modes.items():
            m.training = training
