"""Quantization-policy family (registered as family ``quant``): per-layer weight and activation formats.

A quant space assigns each quantizable layer of a base network (another family's space, or the built-in
ResNet-8) a weight format and an activation format. The supernet shares one set of float weights across
policies through fake quantization (:mod:`.supernet`); extraction stores weights in their formats
(:mod:`.standalone`, torch-only, exportable).
"""

from __future__ import annotations

from .family import QuantFamily, QuantMacro, QuantPlan
from .supernet import QuantSupernet

__all__ = ["QuantFamily", "QuantMacro", "QuantPlan", "QuantSupernet"]
