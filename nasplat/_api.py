"""The Python API: what a notebook user needs, without reading the source.

Every function takes plain values (paths, URLs, names) and returns plain values (spaces, run specs, pandas
DataFrames, paths), so that a search can be run, continued, read and exported from Python as from the CLI::

    import nasplat

    run = nasplat.load_run("run.yaml")
    result = nasplat.run_search(run)                   # train the supernet if needed, then search
    front = nasplat.pareto_front(result.storage_url, result.study_name)
    nasplat.export_trial(result.storage_url, "knee", "bundle/", study=result.study_name)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from nasplat.search import RunSpec, SearchResult


def _quiet(_message: str) -> None:
    return None


def load_run(path: str | Path) -> RunSpec:
    """A run file, validated (bad keys fail here, naming the file and key)."""
    from nasplat.search import load_run as _load

    return _load(path)


def run_search(
    run: RunSpec | str | Path,
    *,
    n_trials: int | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    log: Callable[[str], None] = _quiet,
) -> SearchResult:
    """Run, or continue, the search ``run`` declares (a run file path or a :func:`load_run` result).

    Trains the supernet first when the run file asks for it (resuming what a previous run trained); stops
    when the study holds ``n_trials`` completed trials (default: the run file's ``trials``)."""
    from nasplat.search import _run as search

    run_file = Path(run) if isinstance(run, (str, Path)) else None
    spec = load_run(run) if isinstance(run, (str, Path)) else run
    return search.run_search(
        spec, run_file=run_file, log=log, progress=False, trials=n_trials, workers=workers, ray_address=ray_address
    )


def train_supernet(
    run: RunSpec | str | Path, *, workers: int | None = None, log: Callable[[str], None] = _quiet
) -> Path:
    """Train (or resume training) the run's supernet; returns its checkpoint. ``workers``: Ray Train workers."""
    from nasplat.search import prepare_supernet
    from nasplat.space import load_space

    run_file = Path(run) if isinstance(run, (str, Path)) else None
    spec = load_run(run) if isinstance(run, (str, Path)) else run
    return prepare_supernet(
        spec, load_space(spec.space), log, progress=False, run_file=str(run_file) if run_file else None,
        workers=workers,
    )  # fmt: skip


def open_study(storage: str, study: str | None = None) -> optuna.Study:
    """An existing study (the newest in the storage when ``study`` is None), as a plain Optuna study."""
    from nasplat.study import load_study, make_storage

    return load_study(make_storage(storage), study)


def trials(storage: str, study: str | None = None, *, states: tuple[str, ...] = ("COMPLETE",)) -> pd.DataFrame:
    """One row per trial: number, objectives by metric name, every metric, the architecture and its choices."""
    from nasplat.study import trials_frame

    return trials_frame(open_study(storage, study), states=states)


def pareto_front(storage: str, study: str | None = None, *, by: str = "inherited") -> pd.DataFrame:
    """The study's Pareto front (feasible, one row per architecture); ``by="finetuned"`` ranks stand-alone
    accuracies where ``nasplat finetune`` measured them."""
    from nasplat.study import pareto_frame

    front, _hv = pareto_frame(open_study(storage, study), by=by)
    return front


def export_trial(
    storage: str, trial: int | str, out_dir: str | Path, *, study: str | None = None, overwrite: bool = False
) -> Path:
    """Export a completed trial (its number, or ``"knee"``) as a stand-alone bundle; returns the bundle folder."""
    from nasplat.export import _trial as results

    opened = open_study(storage, study)
    result = results.export_trial(opened, results.pick_trial(opened, str(trial)), Path(out_dir), overwrite=overwrite)
    return Path(result.bundle_dir)


def components(role: str | None = None) -> dict[str, list[str]]:
    """Registered components by role (shipped and from plugins), or those of one ``role``."""
    from nasplat import registry
    from nasplat.errors import UnknownNameError

    if role is not None and role not in registry.ROLES:
        raise UnknownNameError("role", role, list(registry.ROLES))
    roles = registry.ROLES if role is None else (role,)
    return {r: registry.available(r) for r in roles}
