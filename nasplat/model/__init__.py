"""Networks: the :class:`Family` contract, :class:`Supernet`, the :class:`Task` (loss and metrics), the
checkpoint format, BatchNorm recalibration and the one "checkpoint -> recalibrated inherited module" recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._checkpoint import (
        CHECKPOINT_FORMAT,
        CorruptCheckpointError,
        apply_weights,
        check_checkpoint_data,
        check_checkpoint_space,
        checkpoint_epoch,
        checkpoint_name,
        checkpoints_dir,
        complete_checkpoints,
        file_sha256,
        latest_target,
        load_checkpoint,
        notice,
        point_latest,
        read_checkpoint_state,
        read_optimizer,
        read_state,
        read_weights,
        resolve_checkpoint,
        set_aside,
        tensors_digest,
        write_checkpoint,
        write_checkpoint_files,
    )
    from ._family import Family, MacroSettings
    from ._inherit import Calibration, load_supernet, recalibrate_path
    from ._recalibrate import batch_norms, evaluate_subnet, kept_bn_statistics, recalibrate_bn
    from ._supernet import Supernet, seeded
    from ._task import Batch, ClassificationTask, Task

__all__ = [
    "CHECKPOINT_FORMAT",
    "Batch",
    "Calibration",
    "ClassificationTask",
    "CorruptCheckpointError",
    "Family",
    "MacroSettings",
    "Supernet",
    "Task",
    "apply_weights",
    "batch_norms",
    "check_checkpoint_data",
    "check_checkpoint_space",
    "checkpoint_epoch",
    "checkpoint_name",
    "checkpoints_dir",
    "complete_checkpoints",
    "evaluate_subnet",
    "file_sha256",
    "kept_bn_statistics",
    "latest_target",
    "load_checkpoint",
    "load_supernet",
    "notice",
    "point_latest",
    "read_checkpoint_state",
    "read_optimizer",
    "read_state",
    "read_weights",
    "recalibrate_bn",
    "recalibrate_path",
    "resolve_checkpoint",
    "seeded",
    "set_aside",
    "tensors_digest",
    "write_checkpoint",
    "write_checkpoint_files",
]

__getattr__, __dir__ = exports(__name__)
