"""Supernet training: typed settings, path-sampling strategies (uniform, sandwich, fair, attentive), the
single-process trainer with exact resume, and training on Ray Train workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._ray import train_supernet_ray
    from ._settings import TrainSettings
    from ._standalone import StandaloneBudget, train_standalone
    from ._strategies import AttentiveStrategy, SamplingStrategy, make_strategy
    from ._trainer import LineProgress, PathsLoss, SupernetTrainer, lr_at, progress_line, train_supernet

__all__ = [
    "AttentiveStrategy",
    "LineProgress",
    "PathsLoss",
    "SamplingStrategy",
    "StandaloneBudget",
    "SupernetTrainer",
    "TrainSettings",
    "lr_at",
    "make_strategy",
    "progress_line",
    "train_standalone",
    "train_supernet",
    "train_supernet_ray",
]

__getattr__, __dir__ = exports(__name__)
