"""Registry of named components, filled by plugins through the ``nasplat.plugins`` entry-point group.

Each entry point names a module; importing it registers its components with :func:`register`.
The core never imports a plugin folder directly: it asks the registry by role and name.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from nasplat.errors import NasplatError, SpecError, UnknownNameError

ENTRY_POINT_GROUP = "nasplat.plugins"

#: The roles a component can be registered under.
ROLES = ("family", "cost_model", "estimator", "predictor", "encoder", "sampler", "strategy", "dataset", "dashboard")

T = TypeVar("T")

#: Core modules that register components of a role, imported the first time that role is asked for (so
#: ``import nasplat`` stays light and every role lists its core components without the caller importing them).
CORE_MODULES: dict[str, tuple[str, ...]] = {
    "sampler": ("nasplat.search._samplers", "nasplat.search._evolution"),
    "strategy": ("nasplat.train._strategies",),
    "dataset": ("nasplat.datasets",),
}
_core_loaded: set[str] = set()

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


def _load_core(role: str) -> None:
    with _lock:
        if role in _core_loaded:
            return
        _core_loaded.add(role)
    for module in CORE_MODULES.get(role, ()):
        importlib.import_module(module)


def get(role: str, name: str) -> Any:
    """The component registered as ``name`` for ``role``; unknown names list the allowed ones."""
    load_plugins()
    _load_core(role)
    table = _components[role]
    if name not in table:
        raise UnknownNameError(role.replace("_", " "), name, list(table))
    return table[name]


def available(role: str) -> list[str]:
    load_plugins()
    _load_core(role)
    return sorted(_components[role])


def space_dirs() -> list[Path]:
    load_plugins()
    return list(_space_dirs)


# --------------------------------------------------------------------------------------------------------------
# the one component factory: every role's options are checked against what the component accepts


#: Attribute a registered factory may carry: a callable returning the class (or function) whose keyword
#: parameters are the factory's options, for factories that forward ``**options`` (Optuna's samplers).
OPTIONS_OF = "nasplat_options_of"


def option_names(component: Any, *, fixed: tuple[str, ...] = ()) -> list[str] | None:
    """The keyword options ``component`` accepts (None: it declares none and takes any), minus ``fixed``.

    Follows ``**kwargs`` passed on to base classes, and a factory's :data:`OPTIONS_OF` target."""
    targets: list[Any] = [component]
    if callable(getattr(component, OPTIONS_OF, None)):
        targets.append(getattr(component, OPTIONS_OF)())
    names: list[str] = []
    open_ended = False
    for target in targets:
        chain = target.__mro__ if isinstance(target, type) else (target,)
        for klass in chain:
            if klass is object:
                open_ended = False
                break
            fn = klass.__dict__.get("__init__") if isinstance(target, type) else klass
            if fn is None:
                continue
            params = list(inspect.signature(fn).parameters.values())
            if isinstance(target, type):
                params = params[1:]
            names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
            open_ended = any(p.kind == p.VAR_KEYWORD for p in params)
            if not open_ended:
                break
    if open_ended and len(targets) == 1:
        return None
    return [n for n in names if n not in fixed]


def check_options(
    role: str,
    name: str,
    options: dict[str, Any] | None,
    *,
    fixed: tuple[str, ...] = (),
    file: str | None = None,
    key: str | None = None,
) -> None:
    """Reject options ``name`` does not take, naming the allowed ones (and ``file``/``key`` when given)."""
    component = get(role, name)
    allowed = option_names(component, fixed=fixed)
    unknown = [k for k in (options or {}) if allowed is not None and k not in allowed]
    if unknown:
        what = f"{role.replace('_', ' ')} '{name}' has no option {', '.join(repr(u) for u in unknown)}"
        expected = f"{what}; allowed: {', '.join(allowed or []) or '(none)'}"
        if file is not None or key is not None:
            raise SpecError(file, key or "", expected)
        raise NasplatError(expected)


def build(role: str, name: str, *args: Any, options: dict[str, Any] | None = None, **fixed: Any) -> Any:
    """Build the component registered as ``name`` for ``role``: ``component(*args, **fixed, **options)``.

    ``fixed`` are what the caller always passes (a seed, the space...); ``options`` come from the user and are
    checked first: an unknown one names the allowed ones, a bad value becomes one line naming the component."""
    component = get(role, name)
    check_options(role, name, options, fixed=tuple(fixed))
    try:
        return component(*args, **fixed, **(options or {}))
    except (TypeError, ValueError) as exc:
        raise NasplatError(f"{role.replace('_', ' ')} '{name}': bad options {options or {}} ({exc})") from None
