"""A small real search to look at: for trying the dashboard, its tests, screenshots and benchmark.

:func:`write_demo_search` writes a tiny cell space and a synthetic benchmark table (one row per architecture
of the space, a made-up but plausible validation accuracy), then runs real searches over it with
:func:`nasplat.search.run_search`: the ``tabular`` estimator looks accuracies up in the table and the
``analytical`` cost model counts MACs and parameters, so no network is trained and a search of a few dozen
trials takes seconds. The accuracies are synthetic: use this for looking at the dashboard, never as results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: a 4-node NAS-Bench-201 cell in a tiny 2-stage network for 8x8 inputs (sklearn's digits size)
DEMO_SPACE = """\
name: demo-cell
version: 1
family: cell
description: NAS-Bench-201 cell space in a tiny network, for dashboard demos and tests
dimensions:
  - type: categorical
    labels: [cell.edge_1_0, cell.edge_2_0, cell.edge_2_1, cell.edge_3_0, cell.edge_3_1, cell.edge_3_2]
    choices: [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]
macro:
  input_shape: [1, 8, 8]
  num_classes: 10
  stem_channels: 4
  cells_per_stage: 1
  num_stages: 2
"""

_OP_GAIN = {"none": 0.0, "skip_connect": 0.03, "avg_pool_3x3": 0.02, "nor_conv_1x1": 0.06, "nor_conv_3x3": 0.09}


@dataclass(frozen=True)
class DemoStudy:
    """One search of the demo: study name, sampler and completed trials wanted.

    ``supernet_epochs`` > 0 makes it a real one-shot search instead: a tiny supernet is trained on sklearn's
    digits for that many epochs and architectures are scored with inherited weights (a few seconds on a CPU),
    so the study has a checkpoint (training history, export) like a real search.
    """

    study: str
    sampler: str
    trials: int
    sampler_options: tuple[tuple[str, Any], ...] = ()
    supernet_epochs: int = 0
    seed: int | None = None  # the search's seed (default: write_demo_search's)


DEFAULT_STUDIES = (
    DemoStudy("demo-nsga2", "nsga2", 32, (("population_size", 8),)),
    DemoStudy("demo-random", "random", 16, seed=1),
)


def write_demo_table(space_file: Path, table: Path, *, seed: int = 0) -> Path:
    """A CSV with one row per architecture of the space: ``arch`` (NB201 string), ``val_acc``, ``test_acc``."""
    import pandas as pd

    from nasplat.space import load_space

    space = load_space(space_file)
    rng = np.random.default_rng(seed)
    rows = []
    for arch in space.enumerate():
        ops = [str(v) for _, v in arch.choices]
        gain = sum(_OP_GAIN[o] for o in ops)
        cut = 0.25 if all(o == "none" for o in (ops[3], ops[4], ops[5])) else 0.0  # nothing reaches the output
        acc = float(np.clip(0.45 + gain - cut + rng.normal(0, 0.03), 0.05, 0.99))
        rows.append({"arch": space.to_string(arch), "val_acc": acc, "test_acc": acc - abs(rng.normal(0, 0.01))})
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def write_demo_search(
    folder: Path,
    studies: Sequence[DemoStudy] = DEFAULT_STUDIES,
    *,
    objectives: Sequence[dict[str, Any]] | None = None,
    storage_url: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> str:
    """Run the demo searches into one storage under ``folder``; returns the storage URL."""
    from nasplat.search import parse_run, run_search

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / "demo-cell.yaml"
    space_file.write_text(DEMO_SPACE)
    table = folder / "demo-table.csv"
    if not table.exists():
        write_demo_table(space_file, table, seed=seed)
    url = storage_url or f"sqlite:///{(folder / 'study.db').as_posix()}"
    objs = list(
        objectives
        or [
            {"metric": "val_acc", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ]
    )
    for s in studies:
        if s.supernet_epochs:
            estimator: dict[str, Any] = {"name": "supernet", "options": {"calib_batches": 2, "eval_batch_size": 360}}
            supernet: dict[str, Any] = {"train": {"epochs": s.supernet_epochs, "lr": 0.1, "warmup_epochs": 0}}
            run_objs = [{**o, "metric": "accuracy"} if o["metric"] == "val_acc" else o for o in objs]
        else:
            estimator = {
                "name": "tabular",
                "options": {"table": str(table), "arch_column": "arch", "columns": {"val_acc": "maximize"}},
            }
            supernet = {}
            run_objs = objs
        run = parse_run(
            {
                "space": str(space_file),
                "dataset": {"name": "digits", "n_val": 360, "batch_size": 64},
                "supernet": supernet,
                "estimator": estimator,
                "objectives": run_objs,
                "sampler": {"name": s.sampler, "options": dict(s.sampler_options)},
                "trials": s.trials,
                "batch_size": 8,
                "run_dir": str(folder / s.study),
                "storage": url,
                "study": s.study,
                "seed": seed if s.seed is None else s.seed,
            },
            str(folder / f"{s.study}.yaml"),
        )
        run_search(run, log=log or (lambda _m: None), progress=False)
    return url
