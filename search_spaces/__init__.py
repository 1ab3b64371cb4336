"""nasplat's built-in search-space families (package ``nasplat_search_spaces``).

Registered through the ``nasplat.plugins`` entry point: importing this package registers each family and
makes the YAML declarations in its sub-folders discoverable by name.
"""

from __future__ import annotations

from pathlib import Path

from nasplat.registry import register_space_dir

from .cell import CellFamily
from .controlnet import ControlNetFamily
from .hybrid import HybridFamily
from .quant import QuantFamily

register_space_dir(Path(__file__).parent)

__all__ = ["CellFamily", "ControlNetFamily", "HybridFamily", "QuantFamily"]
