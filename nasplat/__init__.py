"""nasplat: neural architecture search with search spaces as data.

Importing ``nasplat`` stays light: torch, Optuna, Ray and Dash are imported by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from nasplat.architecture import Architecture
from nasplat.errors import NasplatError, SpecError
from nasplat.space import SearchSpace, list_spaces, load_space

__all__ = ["Architecture", "NasplatError", "SearchSpace", "SpecError", "__version__", "list_spaces", "load_space"]
