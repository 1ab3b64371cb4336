"""The sampler suite: ask/tell proposals are architectures of the space; the same seed proposes the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nasplat.errors import NasplatError

from ._common import Check, expect, fail, run_checks

if TYPE_CHECKING:
    from nasplat.space import SearchSpace

#: ``make(seed)``: a fresh Optuna sampler seeded with ``seed``.
SamplerFactory = Callable[[int], Any]


def _objectives(space: SearchSpace, n_objectives: int, seed: int) -> np.ndarray:
    """Seeded linear objectives over the one-hot encoding (one column each)."""
    return np.random.default_rng(seed).normal(size=(space.encoding_width, n_objectives))


def _run(make: SamplerFactory, space: SearchSpace, n_trials: int, n_objectives: int, seed: int,
         what: str, check: str) -> list[str]:  # fmt: skip
    """Keys of the architectures the sampler proposes over ``n_trials`` ask/tell rounds (each checked)."""
    import optuna

    from nasplat.study import space_distributions, suggest_architecture

    weights = _objectives(space, n_objectives, seed)
    dists = space_distributions(space)
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=make(seed))
    keys = []
    for i in range(n_trials):
        trial = study.ask()
        arch = suggest_architecture(trial, space)
        try:
            space.validate(arch)
        except NasplatError as exc:
            fail(what, check, f"trial {i} proposed {arch.key}, not an architecture of the space: {exc}")
        expect(set(trial.params) == set(dists), what, check,
               f"trial {i} holds parameters {sorted(set(trial.params) ^ set(dists))} beyond the space's")  # fmt: skip
        for label, dist in dists.items():
            expect(trial.distributions[label] == dist, what, check,
                   f"trial {i}: '{label}' was sampled from {trial.distributions[label]}, not {dist}")  # fmt: skip
        values = space.encode(arch).astype(np.float64) @ weights
        study.tell(trial, [float(v) for v in values])
        keys.append(arch.key)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    expect(len(done) == n_trials, what, check, f"{len(done)} of {n_trials} told trials are complete")
    return keys


def check_proposals(make: SamplerFactory, space: SearchSpace, *, n_trials: int = 12, n_objectives: int = 1,
                    seed: int = 0) -> None:  # fmt: skip
    """Over ``n_trials`` rounds of ``study.ask()``, :func:`nasplat.study.suggest_architecture` and
    ``study.tell()`` (seeded linear objectives), every proposal is a valid architecture of the space, asked
    for from :func:`nasplat.study.space_distributions` and nothing else, and every trial completes."""
    what = f"sampler {type(make(seed)).__name__} (space '{space.name}', {n_objectives} objective(s))"
    _run(make, space, n_trials, n_objectives, seed, what, "proposals")


def check_seeded(make: SamplerFactory, space: SearchSpace, *, n_trials: int = 12, n_objectives: int = 1,
                 seed: int = 0) -> None:  # fmt: skip
    """Two studies run with samplers made from the same seed propose the same architectures, in order."""
    what = f"sampler {type(make(seed)).__name__} (space '{space.name}', {n_objectives} objective(s))"
    a = _run(make, space, n_trials, n_objectives, seed, what, "seeded")
    b = _run(make, space, n_trials, n_objectives, seed, what, "seeded")
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    expect(first is None, what, "seeded", f"the same seed proposed other architectures from trial {first} on")


#: Every sampler check, in the order :func:`check_sampler` runs them.
SAMPLER_CHECKS: dict[str, Check] = {"proposals": check_proposals, "seeded": check_seeded}


def check_sampler(make: SamplerFactory, space: SearchSpace, *, n_trials: int = 12, n_objectives: int = 1,
                  seed: int = 0, skip: Sequence[str] = ()) -> None:  # fmt: skip
    """Run every sampler check (:data:`SAMPLER_CHECKS`, but those in ``skip``); ``make(seed)`` returns a fresh
    Optuna sampler (``optuna.samplers.BaseSampler``) for ``space``, seeded with ``seed``."""
    run_checks(SAMPLER_CHECKS, skip, make, space, n_trials=n_trials, n_objectives=n_objectives, seed=seed)
