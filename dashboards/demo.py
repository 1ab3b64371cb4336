"""A small real search to look at: for trying the dashboard, its tests, screenshots and benchmark.

:func:`write_demo_search` writes a tiny cell space and a synthetic benchmark table (one row per architecture
of the space, a made-up but plausible validation accuracy), then runs real searches over it with
:func:`nasplat.search.run_search`: the ``tabular`` estimator looks accuracies up in the table and the
``analytical`` cost model counts MACs and parameters, so no network is trained and a search of a few dozen
trials takes seconds. The accuracies are synthetic: use this for looking at the dashboard, never as results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def write_bulk_studies(folder: Path, studies: Mapping[str, int], *, seed: int = 0, file: str = "bulk.db") -> str:
    """A SQLite storage of large synthetic nasplat studies (name -> completed trials), written in bulk.

    The studies are opened as ``nasplat search`` opens them (:func:`nasplat.study.open_study`, the demo cell
    space, objectives ``val_acc`` (max) and ``macs`` (min)); each trial has the space's six choices as
    parameters, both objective values, ``arch_key``, ``arch_string``, the analytical cost model's metrics and
    a provenance record, like a search writes them. The trials are written with one ``executemany`` per table in
    one transaction (Optuna's schema, as its SQLAlchemy models name it) instead of one ``tell`` each, which
    would take minutes at 50,000 trials. Architectures are drawn at random; the accuracy is synthetic (it grows
    with MACs, with noise), and study ``k`` of the mapping is shifted a little below study ``k - 1`` so that
    overlaid fronts differ. Returns the storage URL."""
    import datetime as dt
    import json
    import sqlite3

    import optuna
    from optuna.distributions import CategoricalDistribution, distribution_to_json
    from optuna.storages._rdb import models

    from nasplat import registry
    from nasplat.search import make_sampler
    from nasplat.space import load_space
    from nasplat.study import METRIC_PREFIX, make_storage, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / "demo-cell.yaml"
    space_file.write_text(DEMO_SPACE)
    space = load_space(space_file)
    db = folder / file
    url = f"sqlite:///{db.as_posix()}"
    storage = make_storage(url)
    objectives = [
        {"metric": "val_acc", "direction": "maximize", "cost_model": None, "device": None},
        {"metric": "macs", "direction": "minimize", "cost_model": "analytical", "device": None},
    ]
    ids = {}
    for k, (name, n_trials) in enumerate(studies.items()):
        study = open_study(
            storage, name, space=space, objectives=objectives,
            sampler=make_sampler("nsga2", seed=seed + k, n_objectives=2, space=space),
            attrs={"run_spec": {"trials": n_trials}, "estimator": "tabular", "sampler": "nsga2", "dataset": "digits"},
        )  # fmt: skip
        ids[name] = study._study_id
    cost = registry.get("cost_model", "analytical")()
    dims = space.dimensions
    dist_json = {d.label: distribution_to_json(CategoricalDistribution(list(d.choices))) for d in dims}  # type: ignore[arg-type]
    seen: dict[tuple[int, ...], tuple[str, str, list[tuple[str, str]], float]] = {}

    def described(idx: tuple[int, ...]) -> tuple[str, str, list[tuple[str, str]], float]:
        if idx not in seen:
            arch = space.make({d.label: d.choices[i] for d, i in zip(dims, idx, strict=True)})
            metrics = cost.estimate(space, arch, None)
            seen[idx] = (
                json.dumps(arch.key), json.dumps(space.to_string(arch)),
                [(METRIC_PREFIX + m, json.dumps(float(v))) for m, v in metrics.items()], float(metrics["macs"]),
            )  # fmt: skip
        return seen[idx]

    t0 = dt.datetime(2026, 1, 1)
    trials: list[tuple[Any, ...]] = []
    values: list[tuple[Any, ...]] = []
    params: list[tuple[Any, ...]] = []
    attrs: list[tuple[Any, ...]] = []
    trial_id = 0
    for k, (name, n_trials) in enumerate(studies.items()):
        rng = np.random.default_rng(seed + k)
        provenance = json.dumps({"estimator": "synthetic", "space": space.name, "space_hash": space.hash,
                                 "seed": seed + k})  # fmt: skip
        picks = rng.integers(5, size=(n_trials, len(dims)))
        noise = rng.normal(0, 0.05, size=n_trials)
        for n in range(n_trials):
            idx = tuple(int(i) for i in picks[n])
            key, string, metric_rows, macs = described(idx)
            val_acc = float(np.clip(0.4 + 0.1 * np.log10(macs) + noise[n] - 0.01 * k, 0, 1))
            trial_id += 1
            start = t0 + dt.timedelta(seconds=2 * n + k)
            done = start + dt.timedelta(seconds=1.5)
            trials.append((trial_id, n, ids[name], "COMPLETE", str(start), str(done)))
            values.extend(((trial_id, 0, val_acc, "FINITE"), (trial_id, 1, macs, "FINITE")))
            params.extend((trial_id, d.label, float(i), dist_json[d.label]) for d, i in zip(dims, idx, strict=True))
            attrs.extend(((trial_id, "arch_key", key), (trial_id, "arch_string", string)))
            attrs.extend((trial_id, m, v) for m, v in metric_rows)
            attrs.append((trial_id, "provenance", provenance))
    tables = {
        models.TrialModel.__tablename__: (
            "trial_id, number, study_id, state, datetime_start, datetime_complete",
            trials,
        ),
        models.TrialValueModel.__tablename__: ("trial_id, objective, value, value_type", values),
        models.TrialParamModel.__tablename__: ("trial_id, param_name, param_value, distribution_json", params),
        models.TrialUserAttributeModel.__tablename__: ("trial_id, key, value_json", attrs),
    }
    with sqlite3.connect(db) as conn:
        for table, (cols, rows) in tables.items():
            marks = ", ".join("?" * len(cols.split(",")))
            conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
    conn.close()
    # the storage reads back through Optuna like any other: a trial of each study, as Optuna decodes it
    rdb = optuna.storages.RDBStorage(url)
    try:
        for name, n_trials in studies.items():
            if not n_trials:
                continue
            sid = rdb.get_study_id_from_name(name)
            frozen = rdb.get_trial(rdb.get_trial_id_from_study_id_trial_number(sid, n_trials // 2))
            assert frozen.state == optuna.trial.TrialState.COMPLETE and len(frozen.params) == len(dims)
            assert frozen.user_attrs["arch_key"] and len(frozen.values or []) == 2
    finally:
        rdb.engine.dispose()
    return url
