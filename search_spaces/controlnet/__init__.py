"""ControlNet block gating (registered as family ``controlnet``) and its space declarations.

``controlnet-fmnist.yaml`` gates the control branch of a small diffusion UNet for Fashion-MNIST (1x28x28).
The frozen base UNet is trained first (:func:`train_base`, writing the space's ``macro.base_weights``); the
stand-alone network lives in :mod:`.standalone` (torch-only, exportable with a sampling script).
"""

from __future__ import annotations

from .base import base_path, load_base, train_base
from .family import ControlNetFamily, ControlNetMacro
from .supernet import ControlSupernet
from .task import DiffusionControlTask

__all__ = [
    "ControlNetFamily",
    "ControlNetMacro",
    "ControlSupernet",
    "DiffusionControlTask",
    "base_path",
    "load_base",
    "train_base",
]
