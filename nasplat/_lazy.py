"""Curated subpackage exports, imported on first use.

Each stage subpackage's ``__init__`` lists what it offers as plain imports under ``if TYPE_CHECKING:`` (what
type checkers and readers see) and in ``__all__``, then hands its module to :func:`exports`. The names are
imported from their private modules on first access, so ``import nasplat.train`` or reading one run-file class
does not pull in torch, Optuna or Ray, and subpackages can name each other's offer without import cycles.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _offered(init_file: str) -> dict[str, str]:
    """name -> relative module, from the ``from .module import name`` lines under ``if TYPE_CHECKING:``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    where: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom) and imp.level == 1 and imp.module:
                    for alias in imp.names:
                        where[alias.asname or alias.name] = "." + imp.module
    return where


def exports(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, checked against its ``__all__`` (a name listed in one
    place and not the other is a mistake caught at import)."""
    module = sys.modules[package]
    where = _offered(module.__file__ or "")
    listed = set(getattr(module, "__all__", ()))
    if listed != set(where):
        raise ImportError(f"{package}: __all__ and the TYPE_CHECKING imports differ: {sorted(listed ^ set(where))}")

    def __getattr__(name: str) -> Any:
        try:
            source = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(source, package), name)
        setattr(module, name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(where))

    return __getattr__, __dir__
