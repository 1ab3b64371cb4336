"""nasplat's own samplers drive Ray Tune through its Optuna integration (ask/tell), as the search issue asks."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nasplat import registry
from nasplat.samplers import make_sampler
from nasplat.space import load_space
from nasplat.study import suggest_architecture

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")


@functools.cache
def _space() -> Any:
    return load_space(SPACE)


def _define(trial: Any) -> None:
    """Optuna's define-by-run form of the space (module level: Tune pickles its searcher)."""
    suggest_architecture(trial, _space())


def _score(config: dict[str, Any]) -> None:
    from ray import tune

    space = _space()
    arch = space.make(config)
    cost = registry.get("cost_model", "analytical")().estimate(space, arch)
    tune.report({"params": float(cost["params_count"])})


def test_evolution_and_guided_samplers_run_as_ray_tune_searchers(tmp_path: Path) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray.cloudpickle
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from nasplat.distributed import connect_ray

    # Ray workers cannot import this test file: ship its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    connect_ray(num_cpus=2)
    space = load_space(SPACE)
    model = registry.get("cost_model", "analytical")()
    every = [float(model.estimate(space, a)["params_count"]) for a in space.enumerate()]
    median = float(np.median(every))

    for name, options in (("evolution", {"population_size": 8, "tournament_size": 3}), ("guided", {"n_init": 6})):
        sampler = make_sampler(name, seed=0, n_objectives=1, space=space, options=options)
        search = OptunaSearch(space=_define, metric="params", mode="max", sampler=sampler, seed=0)
        tuner = tune.Tuner(
            _score,
            tune_config=tune.TuneConfig(search_alg=search, num_samples=14, max_concurrent_trials=2),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
        )
        results = tuner.fit()
        assert not results.errors, name
        values = [r.metrics["params"] for r in results]
        assert len(values) == 14
        # every proposal is a member of the space, and the searcher found far better than a typical cell
        for r in results:
            space.make(r.config)
        assert max(values) > median, name
        assert all(v > median for v in sorted(values)[-5:]), name
