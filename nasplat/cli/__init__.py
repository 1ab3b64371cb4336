"""The ``nasplat`` command line: one module per command group; :func:`main` is the entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._main import app, main
    from ._predictor import fit_from_table, predict_from_table
    from ._quickstart import run_quickstart

__all__ = ["app", "fit_from_table", "main", "predict_from_table", "run_quickstart"]

__getattr__, __dir__ = exports(__name__)
