"""Registry of named components, filled by plugins through the ``nasplat.plugins`` entry-point group.

Each entry point names a module; importing it registers its components with :func:`register`.
The core never imports a plugin folder directly: it asks the registry by role and name.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from nasplat.errors import NasplatError, UnknownNameError

ENTRY_POINT_GROUP = "nasplat.plugins"

#: The roles a component can be registered under.
ROLES = ("family", "cost_model", "estimator", "predictor", "encoder", "sampler", "strategy", "dataset", "dashboard")

T = TypeVar("T")

_components: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
_space_dirs: list[Path] = []
_loaded = False
_lock = threading.RLock()


def register(role: str, name: str) -> Callable[[T], T]:
    """Decorator: register ``obj`` under ``role`` and ``name``."""
    if role not in _components:
        raise ValueError(f"unknown role '{role}'; allowed: {', '.join(ROLES)}")

    def deco(obj: T) -> T:
        with _lock:
            _components[role][name] = obj
        return obj

    return deco


def register_space_dir(path: Path) -> None:
    """Make every ``*.yaml`` below ``path`` discoverable by name (``nasplat spaces list``)."""
    with _lock:
        if path not in _space_dirs:
            _space_dirs.append(path)


def load_plugins() -> None:
    """Import every module named in the ``nasplat.plugins`` entry-point group (once)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except ImportError as exc:  # a broken third-party plugin must not take nasplat down silently
                raise NasplatError(f"plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc


def get(role: str, name: str) -> Any:
    """The component registered as ``name`` for ``role``; unknown names list the allowed ones."""
    load_plugins()
    table = _components[role]
    if name not in table:
        raise UnknownNameError(role.replace("_", " "), name, list(table))
    return table[name]


def available(role: str) -> list[str]:
    load_plugins()
    return sorted(_components[role])


def space_dirs() -> list[Path]:
    load_plugins()
    return list(_space_dirs)
