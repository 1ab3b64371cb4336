"""NAS-Bench-201-style cell family (registered as family ``cell``) and its space declarations.

``nb201.yaml`` is NAS-Bench-201's space at its CIFAR size; ``nb201-cpu.yaml`` a small variant for
Fashion-MNIST on a CPU. The stand-alone network lives in :mod:`.standalone` (torch-only, exportable).
"""

from __future__ import annotations

from .family import EDGE_LABELS, CellFamily, CellMacro
from .supernet import CellSupernet

__all__ = ["EDGE_LABELS", "CellFamily", "CellMacro", "CellSupernet"]
