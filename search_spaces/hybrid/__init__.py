"""Hybrid CNN-transformer family (registered as family ``hybrid``) and its space declarations.

``hybrid-cifar.yaml`` is a CIFAR-10-sized space (3x32x32); ``hybrid-cpu.yaml`` a small one for Fashion-MNIST on
a CPU. The stand-alone network lives in :mod:`.standalone` (torch-only, exportable).
"""

from __future__ import annotations

from .family import HybridFamily, HybridMacro, block_records, config_records
from .supernet import HybridSupernet

__all__ = ["HybridFamily", "HybridMacro", "HybridSupernet", "block_records", "config_records"]
