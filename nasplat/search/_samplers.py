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
    import nasplat.search._evolution  # noqa: F401 - registers nasplat's own samplers

    return build("sampler", name, options=options, seed=seed, n_objectives=n_objectives, space=space)


# --------------------------------------------------------------------------------------------------------------
# drivers that do not replay each other's proposals


def reseed_sampler(sampler: Any, seed: int) -> int:
    """Reseed, in place, every random state a sampler holds (Optuna's ``LazyRandomState``s and numpy
    Generators, in its attributes and those of the samplers and strategies it holds); returns how many."""
    import numpy as np
    from optuna.samplers._lazy_random_state import LazyRandomState

    from nasplat.seeds import derive_seed

    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, (LazyRandomState, np.random.Generator)):
            found.append(obj)
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
            return
        if (
            hasattr(obj, "__dict__")
            and not isinstance(obj, type)
            and type(obj).__module__.startswith(("optuna", "nasplat"))
        ):
            for value in vars(obj).values():
                walk(value, depth + 1)

    walk(sampler, 0)
    for i, rng in enumerate(found):
        s = derive_seed(seed, i)
        if isinstance(rng, np.random.Generator):
            rng.bit_generator.state = np.random.PCG64(s).state
        else:
            rng.rng.seed(s % 2**32)
    return len(found)


def driver_sampler(inner: Any, seed: int) -> Any:
    """``inner`` wrapped so that its randomness for a trial is drawn from the run's seed and the trial's number.

    Trial numbers are handed out atomically by the storage, so a resumed driver (its trials have new numbers)
    and several drivers on one study (each gets other numbers) never replay one another's proposals, while a
    run of one driver stays the same for the same seed. Everything else is the wrapped sampler's.
    """
    import optuna

    from nasplat.seeds import SAMPLER, derive_seed

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = inner
            self.seed = seed

        def before_trial(self, study: Any, trial: Any) -> None:
            reseed_sampler(self.inner, derive_seed(self.seed, SAMPLER, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

        def __getattr__(self, name: str) -> Any:  # the wrapped sampler's own attributes and methods
            return getattr(self.__dict__["inner"], name)

    return TrialSeededSampler()
