"""The one recipe from a supernet checkpoint to an architecture's inherited weights.

The accuracy a search stores for an architecture, the bundle ``nasplat export`` writes and the starting point
of ``nasplat finetune`` must be the same network: the same weights and the same BatchNorm statistics. The
statistics are re-estimated for each path (:func:`recalibrate_path`) by one :class:`Calibration`, which the
estimator records in each trial's provenance and export and fine-tune read back from it
(:meth:`Calibration.of_trial`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasplat import seeds

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.space import Architecture, SearchSpace

    from ._supernet import Supernet
    from ._task import Task

#: The estimator's defaults (``SupernetEstimator``'s ``calib_batches`` and ``eval_batch_size``).
DEFAULT_BATCHES, DEFAULT_BATCH_SIZE = 10, 256


@dataclass(frozen=True)
class Calibration:
    """How a path's BatchNorm statistics are re-estimated: ``batches`` shuffled batches of ``batch_size``
    images of the training split, drawn with ``seed`` (0 batches: keep the statistics stored in the checkpoint)."""

    batches: int = DEFAULT_BATCHES
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0

    def provenance(self) -> dict[str, str]:
        """What a trial's provenance records of it (strings, as every provenance value)."""
        return {
            "calib_batches": str(self.batches),
            "calib_batch_size": str(self.batch_size),
            "seed": str(self.seed),
        }

    @classmethod
    def of_trial(cls, provenance: Mapping[str, Any] | None, run_spec: Mapping[str, Any] | None) -> Calibration:
        """The calibration behind a trial's stored metrics: from its provenance, or, for trials stored before
        provenance recorded it, from the run file's estimator options as the estimator read them."""
        prov: dict[str, Any] = dict(provenance or {})
        spec: dict[str, Any] = dict(run_spec or {})
        options: dict[str, Any] = dict((spec.get("estimator") or {}).get("options") or {})
        return cls(
            batches=int(prov.get("calib_batches", options.get("calib_batches", DEFAULT_BATCHES))),
            batch_size=int(prov.get("calib_batch_size", options.get("eval_batch_size", DEFAULT_BATCH_SIZE))),
            seed=int(prov.get("seed", options.get("seed", spec.get("seed", 0)))),
        )


def recalibrate_path(
    supernet: Supernet, arch: Architecture, task: Task, calib_data: ArrayDataset, calibration: Calibration
) -> None:
    """Re-estimate the BatchNorm statistics of ``arch``'s path in ``supernet`` by ``calibration``."""
    import torch

    from ._recalibrate import recalibrate_bn

    if calibration.batches <= 0:
        return
    gen = torch.Generator().manual_seed(seeds.derive_seed(calibration.seed, seeds.TASK))

    def forward(model: torch.nn.Module, batch: Any) -> Any:
        return task.loss(model, batch, gen)

    batches = calib_data.batches(calibration.batch_size, seed=calibration.seed, shuffle=True)
    recalibrate_bn(supernet, batches, calibration.batches, arch=arch, forward=forward)


def load_supernet(space: SearchSpace, checkpoint: str | Path) -> tuple[Supernet, dict[str, Any]]:
    """``space``'s supernet with the weights of ``checkpoint`` (a checkpoint or run folder), and its metadata."""
    from ._checkpoint import load_checkpoint, resolve_checkpoint

    supernet = space.family.build_supernet(space)
    info = dict(load_checkpoint(supernet, resolve_checkpoint(checkpoint)) or {})
    supernet.eval()
    return supernet, info
