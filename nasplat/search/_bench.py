"""Search on tabular benchmarks: every sampler against a table of measured architectures, many seeds.

Each evaluation is a look-up, so samplers can be compared honestly by what they find for a budget of
*distinct* architectures (a repeated proposal is answered from the study and does not use budget).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.space import SearchSpace

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class BenchObjective:
    column: str
    direction: str  # maximize | minimize

    @classmethod
    def parse(cls, text: str) -> BenchObjective:
        col, sep, d = text.rpartition(":")
        directions = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
        if not sep or not col or d not in directions:
            raise NasplatError(f"objective '{text}': expected COLUMN:max or COLUMN:min")
        return cls(col, directions[d])


def parse_seeds(text: str) -> list[int]:
    """``0-19``, ``3``, or ``0,2,5-7``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise NasplatError(f"seeds '{text}': expected e.g. 0-19 or 0,3,5-7") from None
    if not seeds:
        raise NasplatError(f"seeds '{text}': no seed given")
    return seeds


def joined_table(tables: Sequence[Path], arch_column: str, out_dir: Path) -> Path:
    """One CSV from several tables joined on the architecture column (inner join)."""

    from nasplat.files import read_csv

    if len(tables) == 1:
        return tables[0]
    frames = []
    for t in tables:
        if not t.is_file():
            raise NasplatError(f"benchmark table {t}: file not found")
        f = read_csv(t)
        if arch_column not in f.columns:
            raise NasplatError(
                f"benchmark table {t} has no column '{arch_column}'; columns: {', '.join(map(str, f.columns))}"
            )
        frames.append(f)
    joined = frames[0]
    for f in frames[1:]:
        joined = joined.merge(f, on=arch_column, how="inner", suffixes=("", "_dup"))
    path = out_dir / "joined.csv"
    joined.to_csv(path, index=False)
    return path


@dataclass(frozen=True)
class TableFront:
    """A table's true Pareto front and the strict scores of a run against it (multi-objective benchmarks).

    - ``hv_ratio``: hypervolume of the run's evaluated points over that of the true front, both bounded by
      the *median* of each objective over the table (:func:`nasplat.pareto.median_reference`); the worst
      point of the table as reference lets random search reach 0.95 and more, the median does not;
    - ``front_share``: the share of the true front's cells (distinct architectures, every table row on the
      front counted) that the run evaluated.
    """

    directions: tuple[str, ...]
    columns: tuple[str, ...]
    reference: tuple[float, ...]
    front_values: np.ndarray
    front_keys: frozenset[str]

    @classmethod
    def of_table(cls, space: SearchSpace, table: Path | str | pd.DataFrame, arch_column: str,
                 objectives: Sequence[BenchObjective]) -> TableFront:  # fmt: skip
        from nasplat.files import read_csv
        from nasplat.pareto import median_reference, non_dominated_mask

        frame = read_csv(Path(table)) if isinstance(table, str | Path) else table
        columns = tuple(o.column for o in objectives)
        missing = [c for c in (arch_column, *columns) if c not in frame.columns]
        if missing:
            raise NasplatError(
                f"benchmark table has no column '{missing[0]}'; columns: {', '.join(map(str, frame.columns))}"
            )
        directions = tuple(o.direction for o in objectives)
        values = frame[list(columns)].to_numpy(dtype=float)
        mask = non_dominated_mask(values, directions)
        keys = frozenset(space.from_string(str(a)).key for a in frame[arch_column][mask])
        ref = tuple(float(x) for x in median_reference(values, directions))
        return cls(directions, columns, ref, values[mask], keys)

    def score(self, space: SearchSpace, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """``hv_ratio`` and ``front_share`` of one run's records (as :func:`run_tabular` yields them)."""
        from nasplat.pareto import front_share, hypervolume_ratio

        found = np.array([[float(r[c]) for c in self.columns] for r in records], dtype=float)
        found = found.reshape(len(records), len(self.columns))
        keys = [space.from_string(r["arch"]).key for r in records]
        return {
            "hv_ratio": hypervolume_ratio(found, self.front_values, self.reference, self.directions),
            "front_share": front_share(keys, self.front_keys),
        }


def score_runs(front: TableFront, space: SearchSpace, records: Sequence[dict[str, Any]],
               budgets: Sequence[int]) -> dict[int, dict[str, list[float]]]:  # fmt: skip
    """Per budget, each seed's ``hv_ratio`` and ``front_share`` after its first B distinct evaluations
    (records of one sampler, any seeds, as :func:`run_tabular` yields them)."""
    by_seed: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        by_seed.setdefault(r["seed"], []).append(r)
    out: dict[int, dict[str, list[float]]] = {b: {"hv_ratio": [], "front_share": []} for b in budgets}
    for seed in sorted(by_seed):
        recs = sorted(by_seed[seed], key=lambda r: r["step"])
        for b in budgets:
            for name, value in front.score(space, recs[:b]).items():
                out[b][name].append(value)
    return out


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN for one value)."""
    v = np.asarray(values, dtype=float)
    sem = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(np.mean(v)), sem


def run_tabular(
    space: SearchSpace,
    table: Path,
    arch_column: str,
    objectives: Sequence[BenchObjective],
    sampler: str,
    budget: int,
    seeds: Sequence[int],
    *,
    sampler_options: dict[str, Any] | None = None,
    storage: str | None = None,
    study_prefix: str = "bench",
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one record per distinct evaluation: seed, step, arch (the family string), objective values."""
    import optuna

    from nasplat.study import make_storage, record_result, suggest_architecture

    from ._samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    estimator = registry.get("estimator", "tabular")(
        space, table=table, arch_column=arch_column, columns={o.column: o.direction for o in objectives}
    )
    names = [o.column for o in objectives]
    directions = [o.direction for o in objectives]
    store = make_storage(storage) if storage else None
    for seed in seeds:
        sampler_obj = make_sampler(sampler, seed=seed, n_objectives=len(names), space=space, options=sampler_options)
        study = optuna.create_study(
            storage=store or optuna.storages.InMemoryStorage(),
            study_name=f"{study_prefix}-{sampler}-seed{seed}",
            directions=directions,  # type: ignore[arg-type]
            sampler=sampler_obj,
            load_if_exists=False,
        )
        _record_study(study, space, names, directions, sampler=sampler, seed=seed, table=table)
        seen: dict[str, dict[str, float]] = {}
        step, asks, t0 = 0, 0, time.perf_counter()
        while step < budget and asks < 20 * budget:
            asks += 1
            trial = study.ask()
            arch = suggest_architecture(trial, space)
            fresh = arch.key not in seen
            if fresh:
                seen[arch.key] = estimator.lookup(arch)
            metrics = seen[arch.key]
            record_result(trial, space, arch, metrics, {"estimator": "tabular", "table": str(table), "seed": seed})
            study.tell(trial, [metrics[n] for n in names])
            if fresh:
                step += 1
                rec = {"sampler": sampler, "seed": seed, "step": step, "arch": space.to_string(arch)}
                rec.update({n: metrics[n] for n in names})
                rec["seconds"] = round(time.perf_counter() - t0, 4)
                yield rec
                if progress:
                    progress(seed, step)


def _record_study(study: Any, space: SearchSpace, names: Sequence[str], directions: Sequence[str], *,
                  sampler: str, seed: int, table: Path) -> None:  # fmt: skip
    """What nasplat's readers (``nasplat pareto``, the dashboard's NAS views) need of a benchmark study, written
    through :mod:`nasplat.study.record` as a search writes it: the space's stored record, the family, the
    objectives (also as Optuna's metric names), the estimator and its table; ``nasplat_format`` last."""
    import nasplat
    from nasplat.study import quiet_optuna
    from nasplat.study import record as R

    with quiet_optuna():
        study.set_metric_names(list(names))
    attrs = {
        R.VERSION: nasplat.__version__,
        **R.space_attrs(space),
        R.FAMILY: space.spec.family,
        R.OBJECTIVES: [{"metric": n, "direction": d} for n, d in zip(names, directions, strict=True)],
        "estimator": "tabular",
        "dataset": str(table),
        "sampler": sampler,
        "seed": seed,
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr(R.FORMAT, R.STUDY_FORMAT)


def write_jsonl(records: Iterator[dict[str, Any]], out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            n += 1
    return n


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="nasplat-bench-"))
