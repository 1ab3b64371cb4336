"""Samplers by name: Optuna's own, ready for ask/tell over a space's flat dimensions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nasplat.errors import NasplatError
from nasplat.registry import OPTIONS_OF, build, register

SamplerFactory = Callable[..., Any]


def _optuna_factory(attr: str, *, multi_objective_only: bool = False) -> SamplerFactory:
    def make(seed: int, n_objectives: int, space: Any = None, **options: Any) -> Any:
        import optuna

        if multi_objective_only and n_objectives < 2:
            raise NasplatError(f"sampler '{attr}' needs at least two objectives")
        return getattr(optuna.samplers, attr)(seed=seed, **options)

    def options_of() -> Any:
        import optuna

        return getattr(optuna.samplers, attr)

    setattr(make, OPTIONS_OF, options_of)
    return make


for _name, _attr, _mo in (
    ("tpe", "TPESampler", False),
    ("nsga2", "NSGAIISampler", False),
    ("nsga3", "NSGAIIISampler", False),
    ("random", "RandomSampler", False),
    ("gp", "GPSampler", False),
    ("qmc", "QMCSampler", False),
):
    register("sampler", _name)(_optuna_factory(_attr, multi_objective_only=_mo))


def make_sampler(name: str, *, seed: int, n_objectives: int, space: Any, options: dict[str, Any] | None = None) -> Any:
    """An Optuna sampler by registered name, seeded; nasplat's own samplers also get the space."""
    import nasplat.evolution  # noqa: F401 - registers nasplat's own samplers

    return build("sampler", name, options=options, seed=seed, n_objectives=n_objectives, space=space)
