"""Checks of run files and space files before any work starts: every problem at once, one line each.

``nasplat check FILE...`` runs them, and so do ``nasplat search`` and ``nasplat train-supernet`` (and
:func:`nasplat.search.run_search`) before any data is loaded, any supernet trained or any study created: a
run that would fail after an hour of training fails at once instead, naming every mistake, and a first run
with a mistake leaves no study behind that a corrected run would then refuse.

A run file is checked for: its schema (every unknown key, missing key and bad value, not just the first);
the space it names loads; every component it names (dataset, estimator, sampler, cost models, the supernet's
training strategy) is registered; every option is one the component takes (:func:`nasplat.registry.check_options`,
the arguments nasplat passes itself excepted) and the sampler builds with them; every objective's and
constraint's metric is one its source produces (a cost model's ``metrics``, an estimator's
:meth:`~nasplat.measure.Estimator.declared_metrics`); every device is one its cost model knows; the paths it
names exist (``supernet.checkpoint``) or can be created (``run_dir``, a SQLite storage's folder).

Each problem is a :class:`Problem`: ``file: at 'key.path': what was expected``, with "did you mean 'x'?" for
a near miss.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nasplat import registry
from nasplat.errors import NasplatError, SpecError, UnknownNameError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from nasplat.space import SearchSpace

    from ._runfile import RunSpec

FileKind = Literal["run", "space"]

#: The arguments nasplat itself passes to each role's components (never options of a run file).
FIXED_OPTIONS: dict[str, tuple[str, ...]] = {
    "sampler": ("seed", "n_objectives", "space"),
    "estimator": ("space",),
    "strategy": ("space",),
}


@dataclass(frozen=True)
class Problem:
    """One mistake in a declaration: where it is and what was expected there."""

    file: str | None
    key: str
    expected: str

    def __str__(self) -> str:
        return str(SpecError(self.file, self.key, self.expected))


class InvalidRunError(SpecError):
    """A run file has problems; the message lists every one, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(first.file, first.key, first.expected)
        self.args = ("\n".join(str(p) for p in self.problems),)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class FileReport:
    """What :func:`check_file` found: the file's kind (None: neither), its problems, a one-line summary."""

    file: str
    kind: FileKind | None
    problems: list[Problem]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------------- entry points
def check_file(path: str | Path, *, training: bool = False) -> FileReport:
    """Check a run file or a space file (told apart by content) without running anything."""
    from nasplat.space import read_yaml_mapping

    p = Path(path)
    file = str(p)
    try:
        data = read_yaml_mapping(p)
    except SpecError as exc:
        return FileReport(file, None, [Problem(exc.file, exc.key, exc.expected)], "")
    except NasplatError as exc:
        return FileReport(file, None, [Problem(None, "", str(exc))], "")
    kind = file_kind(data)
    if kind == "space":
        problems, space = check_space_data(data, file, p)
        summary = "" if space is None else _space_summary(file, space)
        return FileReport(file, kind, problems, summary)
    if kind == "run":
        from ._runfile import resolve_run_paths

        problems, run = check_run_data(resolve_run_paths(dict(data), p), file, training=training)
        return FileReport(file, kind, problems, "" if run is None or problems else _run_summary(file, run))
    expected = (
        "expected a run file (with 'space', 'dataset', 'objectives'...) or a search space (with 'family', "
        f"'dimensions'...); found the keys: {', '.join(map(str, data)) or '(none)'}"
    )
    return FileReport(file, None, [Problem(file, "", expected)], "")


def file_kind(data: Mapping[str, Any]) -> FileKind | None:
    """``"run"`` for a run file, ``"space"`` for a space declaration, None when the keys say neither."""
    if "objectives" in data or ("space" in data and "dataset" in data):
        return "run"
    if "family" in data and "dimensions" in data:
        return "space"
    return None


def check_run_file(path: str | Path, *, training: bool = False) -> tuple[list[Problem], RunSpec | None]:
    """A run file's problems, and the run when it has none (what ``search`` and ``train-supernet`` start with)."""
    from nasplat.space import read_yaml_mapping

    from ._runfile import resolve_run_paths

    p = Path(path)
    try:
        data = read_yaml_mapping(p)
    except SpecError as exc:
        return [Problem(exc.file, exc.key, exc.expected)], None
    problems, run = check_run_data(resolve_run_paths(data, p), str(p), training=training)
    return problems, None if problems else run


def require_valid_run(run: RunSpec, *, run_file: str | Path | None = None, training: bool = False) -> None:
    """Raise :class:`InvalidRunError` listing every problem of an already parsed run, before any work starts."""
    problems = _check_run(run.model_dump(), str(run_file) if run_file else None, training=training)
    if problems:
        raise InvalidRunError(problems)


def check_run_data(
    data: Mapping[str, Any], file: str | None, *, training: bool = False
) -> tuple[list[Problem], RunSpec | None]:
    """Every problem of a run file's content; the run itself when its schema is valid."""
    from pydantic import ValidationError

    from ._runfile import RunSpec

    problems: list[Problem] = []
    run: RunSpec | None = None
    try:
        run = RunSpec.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(file, exc)
    problems += _check_run(data, file, training=training)
    return _unique(problems), run


def check_space_data(
    data: Mapping[str, Any], file: str | None, path: Path | None = None
) -> tuple[list[Problem], SearchSpace | None]:
    """Every schema problem of a space declaration, else the first one building it finds (family, macro...)."""
    from pydantic import ValidationError

    from nasplat.space import SpaceSpec, parse_space

    try:
        SpaceSpec.model_validate(data)
    except ValidationError as exc:
        return validation_problems(file, exc), None
    try:
        return [], parse_space(dict(data), file, path)
    except SpecError as exc:
        return [Problem(exc.file, exc.key, exc.expected)], None
    except NasplatError as exc:
        return [Problem(file, "", str(exc))], None


def validation_problems(file: str | None, exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Each of pydantic's errors as a problem, worded as :func:`nasplat.space.spec_error_from_validation` words
    the first (unknown keys first, with a "did you mean" for a near miss)."""
    from pydantic import ValidationError

    from nasplat.space import spec_error_from_validation
    from nasplat.space._space import _allowed_keys

    out: list[Problem] = []
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        try:
            single = ValidationError.from_exception_data(
                exc.title,
                [{"type": err["type"], "loc": err["loc"], "input": err.get("input"), "ctx": err.get("ctx", {})}],  # type: ignore[typeddict-item]
            )
            e = spec_error_from_validation(file, single, prefix)
            key, expected = e.key, e.expected
        except (TypeError, KeyError, ValueError):  # an error type pydantic cannot rebuild: its own words
            key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
            expected = err["msg"]
        if err["type"] == "extra_forbidden" and err["loc"]:
            expected += did_you_mean(str(err["loc"][-1]), _allowed_keys(exc, err))
        out.append(Problem(file, key, expected))
    return out


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when ``name`` is close to one of ``allowed``, else ``""``."""
    close = difflib.get_close_matches(name, [str(a) for a in allowed], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close and close[0] != name else ""


# ---------------------------------------------------------------------------------------------------- storage
def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None: not a SQLite file URL, or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///").split("?", 1)[0]
    if name in ("", ":memory:"):
        return None
    return Path(name).expanduser()


def require_existing_storage(url: str) -> None:
    """Refuse (one line) a SQLite URL whose file does not exist: reading it would create an empty database."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise NasplatError(
            f"storage {url}: no such SQLite file {path}, so no study to read; check the path "
            "(a run's study is in its run_dir, e.g. sqlite:///nasplat-runs/quickstart/study.db)"
        )


def existing_storage(url: str) -> Any:
    """The Optuna storage of an existing study database (for commands that only read, or delete)."""
    from nasplat.study import make_storage

    require_existing_storage(url)
    return make_storage(url)


# ---------------------------------------------------------------------------------------------------- the run checks
def _check_run(data: Mapping[str, Any], file: str | None, *, training: bool) -> list[Problem]:
    """The checks past the schema, on the raw (or dumped) run file: each part that is well-formed is checked."""
    problems: list[Problem] = []

    def add(key: str, expected: str) -> None:
        problems.append(Problem(file, key, expected))

    load_components()
    space = _check_space(data, add)
    dataset = _section(data, "dataset")
    if dataset is not None and isinstance(dataset.get("name"), str):
        _check_name("dataset", dataset["name"], "dataset.name", add)

    estimator = _section(data, "estimator", {})
    est_name = estimator.get("name", "supernet") if estimator is not None else None
    est_options = estimator.get("options") if estimator is not None else None
    est_options = est_options if isinstance(est_options, dict) else {}
    est_cls = None
    if isinstance(est_name, str) and _check_name("estimator", est_name, "estimator.name", add):
        _check_options("estimator", est_name, est_options, "estimator.options", add)
        est_cls = registry.get("estimator", est_name)

    _check_supernet(data, est_name, training, add)
    _check_metrics(data, space, est_name, est_cls, est_options, add)
    _check_sampler(data, space, add)
    _check_paths(data, add)
    return problems


def _check_space(data: Mapping[str, Any], add: Callable[[str, str], None]) -> SearchSpace | None:
    from nasplat.space import load_space

    name = data.get("space")
    if not isinstance(name, str):
        return None
    try:
        return load_space(name)
    except UnknownNameError as exc:
        add("space", f"{exc}{did_you_mean(name, exc.allowed)}")
    except NasplatError as exc:
        add("space", f"the space does not load: {exc}")
    return None


def _check_supernet(data: Mapping[str, Any], est_name: Any, training: bool, add: Callable[[str, str], None]) -> None:
    supernet = _section(data, "supernet", {})
    if supernet is None:
        return
    checkpoint = supernet.get("checkpoint")
    if isinstance(checkpoint, str) and not Path(checkpoint).expanduser().exists():
        add(
            "supernet.checkpoint",
            f"an existing checkpoint or training run folder; {checkpoint} does not exist "
            "(remove 'checkpoint' to train the supernet instead)",
        )
    train = supernet.get("train")
    if (training or _needs_supernet(est_name)) and not checkpoint and not train:
        add("supernet", "give 'checkpoint' (a trained supernet) or 'train' (training settings, with 'epochs')")
    if isinstance(train, Mapping):
        strategy = train.get("strategy", "uniform")
        if isinstance(strategy, str) and _check_name("strategy", strategy, "supernet.train.strategy", add):
            options = train.get("strategy_options")
            if isinstance(options, dict):
                _check_options("strategy", strategy, options, "supernet.train.strategy_options", add)


def _check_metrics(
    data: Mapping[str, Any],
    space: SearchSpace | None,
    est_name: Any,
    est_cls: Any,
    est_options: dict[str, Any],
    add: Callable[[str, str], None],
) -> None:
    """Every objective's and constraint's metric exists in its source; every device in its cost model."""
    est_metrics: list[str] | None = None
    if est_cls is not None and space is not None:
        declared = getattr(est_cls, "declared_metrics", None)
        try:
            found = declared(space, est_options) if declared is not None else None
        except NasplatError as exc:
            add("estimator.options", str(exc))
        else:
            est_metrics = None if found is None else list(found)
    models: dict[str, Any] = {}
    for section in ("objectives", "constraints"):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            at = f"{section}[{i}]"
            metric, cost_model, device = item.get("metric"), item.get("cost_model"), item.get("device")
            if cost_model is None:
                if device is not None:
                    add(f"{at}.device", "a device only applies to a cost model's metric: add 'cost_model' or remove it")
                if isinstance(metric, str) and est_metrics is not None and metric not in est_metrics:
                    add(f"{at}.metric", _no_metric(f"estimator '{est_name}'", metric, est_metrics))
                continue
            if not isinstance(cost_model, str) or not _check_name("cost_model", cost_model, f"{at}.cost_model", add):
                continue
            model = models.get(cost_model)
            if model is None:
                try:
                    model = models[cost_model] = registry.build("cost_model", cost_model)
                except NasplatError as exc:
                    add(f"{at}.cost_model", f"cost model '{cost_model}' cannot be built: {exc}")
                    continue
            if isinstance(metric, str) and metric not in model.metrics:
                add(f"{at}.metric", _no_metric(f"cost model '{cost_model}'", metric, list(model.metrics)))
            if device is None or isinstance(device, str):
                try:
                    model.check_device(device)
                except NasplatError as exc:
                    known = model.devices() or []
                    add(f"{at}.device", f"{exc}{did_you_mean(device, known) if device else ''}")


def _check_sampler(data: Mapping[str, Any], space: SearchSpace | None, add: Callable[[str, str], None]) -> None:
    sampler = _section(data, "sampler", {})
    if sampler is None:
        return
    name = sampler.get("name", "nsga2")
    options = sampler.get("options", {})
    if not isinstance(name, str) or not _check_name("sampler", name, "sampler.name", add):
        return
    if not isinstance(options, dict) or not _check_options("sampler", name, options, "sampler.options", add):
        return
    objectives = data.get("objectives")
    if space is None or not isinstance(objectives, list) or not objectives:
        return
    from ._samplers import make_sampler

    try:  # builds in microseconds; catches bad option values (a negative population size...)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_sampler(name, seed=0, n_objectives=len(objectives), space=space, options=options)
    except (NasplatError, TypeError, ValueError) as exc:
        add("sampler.options" if options else "sampler", str(exc))


def _check_paths(data: Mapping[str, Any], add: Callable[[str, str], None]) -> None:
    """The run folder, and a SQLite storage's folder (when it is not the run folder), exist or can be created."""
    from ._runfile import RunSpec

    run_dir = data.get("run_dir", RunSpec.model_fields["run_dir"].default)
    if isinstance(run_dir, str):
        why = _cannot_create(Path(run_dir).expanduser())
        if why:
            add("run_dir", f"a folder nasplat can create or write to; {why}")
    storage = data.get("storage")
    if not isinstance(storage, str):
        return  # the default storage is a SQLite file in the run folder
    if "://" not in storage:
        add("storage", f"a SQLAlchemy URL such as sqlite:///results.db or postgresql://host/db, got '{storage}'")
        return
    path = sqlite_path(storage)
    if path is not None:
        why = _cannot_create(path.parent)
        if why:
            add("storage", f"a SQLite file in a folder that exists or can be created; {why}")


# ---------------------------------------------------------------------------------------------------- helpers
def load_components() -> None:
    """Register nasplat's own samplers, strategies and datasets (the plugins register the rest)."""
    import nasplat.datasets
    import nasplat.search._evolution
    import nasplat.search._samplers
    import nasplat.train._strategies  # noqa: F401 - registers the sampling strategies

    registry.load_plugins()


def _section(data: Mapping[str, Any], key: str, default: dict[str, Any] | None = None) -> dict[str, Any] | None:
    value = data.get(key, default)
    return value if isinstance(value, dict) else None


def _needs_supernet(name: object) -> bool:
    """Whether the estimator ``name`` (if registered) is built from a trained supernet."""
    if not isinstance(name, str) or name not in registry.available("estimator"):
        return False
    return bool(getattr(registry.get("estimator", name), "needs_supernet", False))


def _check_name(role: str, name: str, key: str, add: Callable[[str, str], None]) -> bool:
    allowed = registry.available(role)
    if name in allowed:
        return True
    what = role.replace("_", " ")
    add(
        key,
        f"unknown {what} '{name}'; allowed: {', '.join(allowed) or '(none registered)'}{did_you_mean(name, allowed)}",
    )
    return False


def _check_options(role: str, name: str, options: dict[str, Any], key: str, add: Callable[[str, str], None]) -> bool:
    """One problem per option ``name`` does not take (the arguments nasplat passes itself are not options)."""
    fixed = FIXED_OPTIONS.get(role, ())
    allowed = registry.option_names(registry.get(role, name), fixed=fixed) or []
    ok = True
    for option, value in options.items():
        try:
            registry.check_options(role, name, {option: value}, fixed=fixed, key=f"{key}.{option}")
        except SpecError as exc:
            add(exc.key, exc.expected + did_you_mean(str(option), allowed))
            ok = False
    return ok


def _no_metric(source: str, metric: str, allowed: list[str]) -> str:
    return f"{source} has no metric '{metric}'; it has: {', '.join(allowed) or '(none)'}{did_you_mean(metric, allowed)}"


def _cannot_create(folder: Path) -> str | None:
    """Why ``folder`` can neither be used nor created (None: it exists as a writable folder, or can be made)."""
    from nasplat.files import folder_problem

    return folder_problem(folder)


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _space_summary(file: str, space: SearchSpace) -> str:
    return (
        f"ok {file}: space '{space.name}' (family {space.spec.family}), {len(space.dimensions)} dimensions, "
        f"{_size(space)} architectures"
    )


def _run_summary(file: str, run: RunSpec) -> str:
    objectives = ", ".join(f"{o.metric} ({o.direction[:3]})" for o in run.objectives)
    return (
        f"ok {file}: run file, space '{run.space}', estimator '{run.estimator.name}', objectives {objectives}, "
        f"sampler '{run.sampler.name}', {run.trials} trials, study '{run.study}' in {run.storage_url}"
    )


def _size(space: SearchSpace) -> str:
    try:
        return f"{space.size():,}"
    except NasplatError:
        return "many"
