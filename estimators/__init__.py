"""nasplat's accuracy estimators and hardware cost models (package ``nasplat_estimators``).

Estimators (role ``estimator``): ``supernet`` and ``tabular`` (:mod:`.accuracy`), ``combined`` (inherited
accuracy and the zero-cost score as one estimate, calibrated on a few stand-alone anchors: :mod:`.combined`).

Cost models (registered under role ``cost_model``): ``analytical`` (MACs, parameters, bytes, BOPs),
``measured`` / ``measured_onnx`` (latency timed on this machine), ``lut`` (per-layer lookup tables built by
``nasplat profile``), ``roofline`` (YAML device profiles in ``devices/``). :mod:`.learned` holds the
few-shot latency model that the predictor commands wrap.
"""

from __future__ import annotations

from . import accuracy, analytical, combined, learned, lut, measured, roofline

__all__ = ["accuracy", "analytical", "combined", "learned", "lut", "measured", "roofline"]
