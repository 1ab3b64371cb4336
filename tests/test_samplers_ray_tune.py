"""nasplat's own samplers drive Ray Tune through its Optuna integration (ask/tell), as the search issue asks.

The Tune run happens in a fresh Python process running this file as a script: Ray ships the script's
functions to its workers by value, and the run does not depend on a Ray cluster some earlier test started.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")
SAMPLERS: dict[str, dict[str, Any]] = {
    "evolution": {"population_size": 8, "tournament_size": 3},
    "guided": {"n_init": 6},
}


@functools.cache
def _space() -> Any:
    from nasplat.space import load_space

    return load_space(SPACE)


def _define(trial: Any) -> None:
    """Optuna's define-by-run form of the space."""
    from nasplat.study import suggest_architecture

    suggest_architecture(trial, _space())


def _score(config: dict[str, Any]) -> None:
    from ray import tune

    from nasplat import registry
    from nasplat.space import load_space

    space = load_space(SPACE)  # runs on a Ray worker (the cached _space is not shipped)
    cost = registry.get("cost_model", "analytical")().estimate(space, space.make(config))
    tune.report({"params": float(cost["params_count"])})


def _run(out: Path) -> None:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from nasplat.measure import connect_ray
    from nasplat.search import make_sampler

    connect_ray(num_cpus=2)
    results: dict[str, Any] = {}
    for name, options in SAMPLERS.items():
        sampler = make_sampler(name, seed=0, n_objectives=1, space=_space(), options=options)
        search = OptunaSearch(space=_define, metric="params", mode="max", sampler=sampler, seed=0)
        tuner = tune.Tuner(
            _score,
            tune_config=tune.TuneConfig(search_alg=search, num_samples=14, max_concurrent_trials=2),
            run_config=tune.RunConfig(storage_path=str(out), name=name, verbose=0),
        )
        grid = tuner.fit()
        results[name] = {
            "errors": len(grid.errors),
            "values": [r.metrics.get("params") for r in grid],
            "configs": [r.config for r in grid],
        }
    (out / "results.json").write_text(json.dumps(results))


def test_evolution_and_guided_samplers_run_as_ray_tune_searchers(tmp_path: Path) -> None:
    import numpy as np

    from nasplat import registry

    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=600,
        env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    space = _space()
    model = registry.get("cost_model", "analytical")()
    median = float(np.median([model.estimate(space, a)["params_count"] for a in space.enumerate()]))
    for name in SAMPLERS:
        r = results[name]
        assert r["errors"] == 0 and len(r["values"]) == 14, name
        for config in r["configs"]:
            space.make(config)  # every proposal is a member of the space
        # the searcher found far better than a typical cell
        assert all(v > median for v in sorted(r["values"])[-5:]), (name, sorted(r["values"]), median)


if __name__ == "__main__":
    _run(Path(sys.argv[1]))
