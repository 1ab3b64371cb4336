"""nasplat: neural architecture search with search spaces as data.

The Python API (see the README's "From Python" section)::

    import nasplat

    run = nasplat.load_run("run.yaml")                 # a validated run file
    result = nasplat.run_search(run)                       # train the supernet if needed, then search
    front = nasplat.pareto_front(result.storage_url)         # the Pareto front as a DataFrame
    nasplat.export_trial(result.storage_url, "knee", "bundle/")

Importing ``nasplat`` stays light: torch, Optuna, Ray and Dash are imported by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from nasplat._api import (
    components,
    export_trial,
    load_run,
    open_study,
    pareto_front,
    run_search,
    train_supernet,
    trials,
)
from nasplat.errors import NasplatError, SpecError
from nasplat.space import Architecture, SearchSpace, list_spaces, load_space

__all__ = [
    "Architecture",
    "NasplatError",
    "SearchSpace",
    "SpecError",
    "__version__",
    "components",
    "export_trial",
    "list_spaces",
    "load_run",
    "load_space",
    "open_study",
    "pareto_front",
    "run_search",
    "train_supernet",
    "trials",
]
