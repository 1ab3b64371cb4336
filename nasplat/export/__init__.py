"""Exporting subnets: the stand-alone bundle (weights, ONNX, spec, metrics, preprocessing), QDQ ONNX for
quantised architectures and the export of a study's trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._bundle import (
        ExportResult,
        Preprocessing,
        calibration_inputs,
        check_standalone_source,
        export_bundle,
        preprocessing_for,
    )
    from ._onnx_qdq import INTEGER_OPS, QDQ_TOLERANCE, declared_layers, write_qdq_onnx
    from ._trial import export_trial, front_table, pick_trial, study_space

__all__ = [
    "INTEGER_OPS",
    "QDQ_TOLERANCE",
    "ExportResult",
    "Preprocessing",
    "calibration_inputs",
    "check_standalone_source",
    "declared_layers",
    "export_bundle",
    "export_trial",
    "front_table",
    "pick_trial",
    "preprocessing_for",
    "study_space",
    "write_qdq_onnx",
]

__getattr__, __dir__ = exports(__name__)
