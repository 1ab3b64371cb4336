"""Measuring architectures: the :class:`Estimator`, :class:`CostModel`, :class:`Predictor` and
:class:`Encoder` contracts, layer records, predictor manifests and the Ray actor pool that evaluates in parallel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._actors import RayPoolEstimator, connect_ray
    from ._costs import FORMAT_BITS, LAYER_OPS, CostModel, LayerRecord
    from ._estimator import Estimator, rank_percentiles
    from ._predictor import (
        MANIFEST,
        Encoder,
        Predictor,
        PriorTable,
        archs_from_column,
        check_extra,
        check_space,
        check_training_data,
        encode,
        load_predictor,
        make_encoder,
        make_predictor,
        prediction_quality,
        predictor_parameters,
        read_manifest,
        space_from_manifest,
        space_record,
        supported_encoders,
        target_values,
        update_manifest,
        write_manifest,
    )

__all__ = [
    "FORMAT_BITS",
    "LAYER_OPS",
    "MANIFEST",
    "CostModel",
    "Encoder",
    "Estimator",
    "LayerRecord",
    "Predictor",
    "PriorTable",
    "RayPoolEstimator",
    "archs_from_column",
    "check_extra",
    "check_space",
    "check_training_data",
    "connect_ray",
    "encode",
    "load_predictor",
    "make_encoder",
    "make_predictor",
    "prediction_quality",
    "predictor_parameters",
    "rank_percentiles",
    "read_manifest",
    "space_from_manifest",
    "space_record",
    "supported_encoders",
    "target_values",
    "update_manifest",
    "write_manifest",
]

__getattr__, __dir__ = exports(__name__)
