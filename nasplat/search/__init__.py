"""The search: the run file (typed sections), the search loop, samplers (Optuna's by name and nasplat's
own), the checks a run passes before any work, and tabular benchmark runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._bench import (
        BenchObjective,
        TableFront,
        joined_table,
        mean_sem,
        parse_seeds,
        run_tabular,
        score_runs,
        temp_dir,
        write_jsonl,
    )
    from ._check import (
        FIXED_OPTIONS,
        check_file,
        check_run_file,
        existing_storage,
        load_components,
        require_existing_storage,
    )
    from ._evolution import EvolutionSampler, GuidedSampler, crowding, greedy_front_order, hv_gains, pareto_ranks
    from ._run import SearchResult, build_estimator, check_dataset_fits, make_estimator, prepare_supernet, run_search
    from ._runfile import (
        Constraint,
        EstimatorSection,
        Objective,
        RunSpec,
        SamplerSection,
        SupernetSection,
        load_run,
        parse_run,
    )
    from ._samplers import driver_sampler, make_sampler, reseed_sampler

__all__ = [
    "FIXED_OPTIONS",
    "BenchObjective",
    "Constraint",
    "EstimatorSection",
    "EvolutionSampler",
    "GuidedSampler",
    "Objective",
    "RunSpec",
    "SamplerSection",
    "SearchResult",
    "SupernetSection",
    "TableFront",
    "build_estimator",
    "check_dataset_fits",
    "check_file",
    "check_run_file",
    "crowding",
    "driver_sampler",
    "existing_storage",
    "greedy_front_order",
    "hv_gains",
    "joined_table",
    "load_components",
    "load_run",
    "make_estimator",
    "make_sampler",
    "mean_sem",
    "pareto_ranks",
    "parse_run",
    "parse_seeds",
    "prepare_supernet",
    "require_existing_storage",
    "reseed_sampler",
    "run_search",
    "run_tabular",
    "score_runs",
    "temp_dir",
    "write_jsonl",
]

__getattr__, __dir__ = exports(__name__)
