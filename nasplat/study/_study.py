"""Optuna glue: the study is the system of record for a search.

Each trial is one architecture: its choices are the trial's parameters; its key, family string, every metric
and their provenance are user attributes. Study attributes record the space (name, hash, file, declaration),
the objectives and the run settings, so a study can be read, continued and exported on its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from nasplat.errors import NasplatError

from .record import (
    ARCH_KEY,
    ARCH_STRING,
    FINETUNE_PREFIX,
    METRIC_PREFIX,
    PREDICTED_PREFIX,
    STUDY_FORMAT,
    SUPERNET_EPOCH_PREFIX,
    trial_metrics,
)

if TYPE_CHECKING:
    import optuna

    from nasplat.space import Architecture, SearchSpace

METRIC_SOURCES = ("inherited", "finetuned")


def redact_url(url: str) -> str:
    """``url`` with its password masked, the form every message shows: ``postgresql://user:***@host/db``
    (a ``password=`` query parameter too). A URL without a password comes back unchanged."""
    import re

    scheme, sep, rest = url.partition("://") if "://" in url else ("", "", url)  # 'user:pw@host/db' too
    head, question, query = rest.partition("?")
    # the password runs from the first ':' to the last '@' (it may hold '@' or '/' when not percent-encoded)
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo and not head.startswith("/"):
        url = f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}{question}{query}"
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def _redact_in(exc: BaseException, url: str) -> str:
    """The first line of ``exc`` with ``url``'s password masked wherever it shows (drivers quote URLs)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
        secrets = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    except ValueError:  # not even parseable: mask what follows 'user:' up to the host
        userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
        secrets = [userinfo.partition(":")[2]]
    for secret in {s for p in secrets if p for s in (p, unquote(p))}:
        text = text.replace(secret, "***")
    return text


def make_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None) -> Any:
    """An Optuna storage for a SQLAlchemy URL (SQLite file, PostgreSQL...).

    With ``heartbeat_s``, running trials carry a heartbeat; a trial whose heartbeat is older than ``grace_s``
    (its worker died) is failed by :func:`fail_stale` and re-queued once more with the same architecture.
    """
    import optuna
    import sqlalchemy.exc

    if "://" not in url:
        raise NasplatError(
            f"storage '{redact_url(url)}' is not a URL; use e.g. sqlite:///results.db or postgresql://host/db"
        )
    url = normalise_url(url)
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    import time

    for attempt in range(5):
        try:
            with quiet_optuna():
                beat: dict[str, Any] = {}
                if heartbeat_s is not None:
                    beat = {
                        "heartbeat_interval": heartbeat_s,
                        "grace_period": grace_s or 3 * heartbeat_s,
                        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    }
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **beat)
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,  # SQLite's word for the same race
        ) as exc:
            # two workers creating the schema of a new database at once: the loser finds it made on retry
            racing = "already exists" in str(exc) or "duplicate key" in str(exc)
            if not racing or attempt == 4:
                raise NasplatError(f"cannot open storage {redact_url(url)}: {_redact_in(exc, url)}") from None
            time.sleep(0.5)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise NasplatError(f"cannot open storage {redact_url(url)}: {_redact_in(exc, url)}") from None
    raise AssertionError("unreachable")


def normalise_url(url: str) -> str:
    """A plain ``postgresql://`` URL uses psycopg2 when psycopg 3 (SQLAlchemy's default) is not installed."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notes about the experimental heartbeat API nasplat uses on purpose with ask/tell."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def open_study(
    storage: Any,
    study_name: str,
    *,
    space: SearchSpace,
    objectives: Sequence[dict[str, Any]],
    sampler: Any,
    attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study, or load it and check that it searches the same space for the same objectives."""
    import time

    import optuna

    directions = [o["direction"] for o in objectives]
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=directions, sampler=sampler, load_if_exists=False
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
        # another worker may be writing the attributes right now: `nasplat_format` is written last
        deadline = time.monotonic() + 30
        while "nasplat_format" not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        existing = study.user_attrs
        if "nasplat_format" not in existing:
            raise NasplatError(
                f"study '{study_name}' exists but was not written by nasplat; use another study name"
            ) from None
        if existing.get("space_hash") != space.hash:
            raise NasplatError(
                f"study '{study_name}' searches space '{existing.get('space')}' (hash {existing.get('space_hash')}), "
                f"not '{space.name}' (hash {space.hash}); use another study name"
            ) from None
        if existing.get("objectives") != list(objectives):
            raise NasplatError(
                f"study '{study_name}' has objectives {_fmt_obj(existing.get('objectives'))}, "
                f"the run file asks for {_fmt_obj(list(objectives))}; use another study name"
            ) from None
        for key, value in (attrs or {}).items():  # a study created by supernet training gets the search's attrs
            if existing.get(key) is None and value is not None:
                study.set_user_attr(key, value)
        return study
    with quiet_optuna():  # tools reading the study (Optuna's dashboard, plots) name the objectives
        study.set_metric_names([str(o["metric"]) for o in objectives])
    import nasplat

    from . import record as study_record

    base = {
        "nasplat_version": nasplat.__version__,
        **study_record.space_attrs(space),
        "family": space.spec.family,
        "objectives": list(objectives),
    }
    for key, value in {**base, **(attrs or {})}.items():
        study.set_user_attr(key, value)
    study.set_user_attr("nasplat_format", STUDY_FORMAT)  # last: marks the study as complete for other workers
    return study


def _fmt_obj(objs: Any) -> str:
    if not isinstance(objs, list):
        return repr(objs)
    return ", ".join(f"{o.get('metric')} ({o.get('direction')})" for o in objs)


def suggest_architecture(trial: optuna.Trial, space: SearchSpace) -> Architecture:
    """Ask the trial for every dimension of the space, by :func:`space_distributions`."""
    from optuna.distributions import IntDistribution

    values: dict[str, Any] = {}
    for label, dist in space_distributions(space).items():
        if isinstance(dist, IntDistribution):
            values[label] = trial.suggest_int(label, dist.low, dist.high, step=dist.step)
        else:
            values[label] = trial.suggest_categorical(label, dist.choices)
    return space.make(values, check=False)


def space_distributions(space: SearchSpace) -> dict[str, Any]:
    """The Optuna distribution of each dimension: the one mapping from a space's flat dimensions to what
    samplers see (an evenly stepped integer range as ``IntDistribution``, anything else as categorical)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, Any] = {}
    for d in space.dimensions:
        if d.kind == "integer" and len(d.choices) > 1:
            ints = [int(c) for c in d.choices]  # type: ignore[arg-type]
            out[d.label] = IntDistribution(ints[0], ints[-1], step=ints[1] - ints[0])
        else:
            out[d.label] = CategoricalDistribution(d.choices)  # type: ignore[arg-type]
    return out


def record_result(trial: optuna.Trial, space: SearchSpace, arch: Architecture, metrics: dict[str, float],
                  provenance: dict[str, Any]) -> None:  # fmt: skip
    """Store an evaluated architecture's identity, metrics and provenance on its trial."""
    trial.set_user_attr("arch_key", arch.key)
    trial.set_user_attr("arch_string", space.to_string(arch))
    for name, value in metrics.items():
        trial.set_user_attr(METRIC_PREFIX + name, float(value))
    trial.set_user_attr("provenance", provenance)


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names: nasplat's ``objectives`` attribute, else Optuna's ``metric_names``, else
    ``objective_0``, ``objective_1``... (as :mod:`nasplat.study.frames` names them)."""
    objs = study.user_attrs.get("objectives")
    if isinstance(objs, list) and len(objs) == len(study.directions):
        return [str(o["metric"]) for o in objs]
    named = study.metric_names
    if named is not None and len(named) == len(study.directions) and len(set(named)) == len(named):
        return [str(n) for n in named]
    return [f"objective_{i}" for i in range(len(study.directions))]


def load_study(storage: Any, study_name: str | None) -> optuna.Study:
    """Load an existing study (the most recently created one when ``study_name`` is None)."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = [s.study_name for s in summaries]
    if not names:
        raise NasplatError("the storage holds no study")
    if study_name is None:
        study_name = names[-1]
    if study_name not in names:
        raise NasplatError(f"no study '{study_name}' in the storage; studies: {', '.join(names)}")
    return optuna.load_study(study_name=study_name, storage=storage)


#: columns of :func:`nasplat.study.frames.trials_frame` that the core frame leaves out (the dashboard's)
_VIEW_COLUMNS = ("elapsed_s", "datetime_start", "datetime_complete")


def storage_url(study: optuna.Study) -> str | None:
    """The SQLAlchemy URL of the study's storage (None for a storage that is not SQL, e.g. in memory)."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    url = getattr(backend, "url", None)
    return url if isinstance(url, str) and getattr(backend, "engine", None) is not None else None


def trials_frame(study: optuna.Study, *, states: Sequence[str] = ("COMPLETE",)) -> pd.DataFrame:
    """One row per trial: number, state, objective values by metric name, choices, metrics, identity.

    Columns: ``trial``, ``state``, ``feasible``, each objective, every other ``metric:<name>`` and
    ``finetune:<name>``, ``arch``, ``arch_key``, ``param:<label>``, ``seconds``. A study in an SQL storage
    (every storage nasplat opens) is read by :func:`nasplat.study.frames.trials_frame`, the one reader the
    dashboard uses too; a study held in memory (a notebook's ``optuna.create_study()``) through Optuna's API.
    """
    url = storage_url(study)
    if url is not None:
        from . import frames as study_frames

        frame = study_frames.trials_frame(url, study.study_name, states=states, fresh=True)
        keep = [c for c in frame.columns if c not in _VIEW_COLUMNS and not str(c).startswith(PREDICTED_PREFIX)]
        return frame[keep]
    return _trials_frame_in_memory(study, states)


def _trials_frame_in_memory(study: optuna.Study, states: Sequence[str]) -> pd.DataFrame:
    import optuna

    wanted = {optuna.trial.TrialState[s] for s in states}
    names = objective_names(study)
    rows: list[dict[str, Any]] = []
    for t in sorted(study.get_trials(deepcopy=False, states=tuple(wanted)), key=lambda t: t.number):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
        row["feasible"] = all(v <= 0.0 for v in t.constraints.values())
        values = t.values or [float("nan")] * len(names)
        row.update(dict(zip(names, values, strict=True)))
        metrics = {**trial_metrics(t.user_attrs), **{FINETUNE_PREFIX + k: v for k, v in
                                                     trial_metrics(t.user_attrs, FINETUNE_PREFIX).items()}}  # fmt: skip
        row.update({k: v for k, v in sorted(metrics.items()) if k not in row})
        row["arch"] = t.user_attrs.get(ARCH_STRING)
        row["arch_key"] = t.user_attrs.get(ARCH_KEY)
        for k, v in t.params.items():
            row[f"param:{k}"] = v
        row["seconds"] = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_frame(
    study: optuna.Study, reference: Sequence[float] | None = None, *, by: str = "inherited"
) -> tuple[pd.DataFrame, float | None]:
    """The non-dominated feasible trials (one per architecture, sorted by the first objective) and hypervolume.

    ``by="inherited"`` ranks by the values the search recorded (accuracy inherited from the supernet);
    ``by="finetuned"`` ranks only the fine-tuned trials (see :mod:`nasplat.finetune`), with each objective that
    has a stand-alone value (``finetune:<metric>``) replaced by it; the search's value is kept in the column
    ``inherited:<metric>``.

    The front is :func:`nasplat.study.frames.front_flags`' (the dashboard's too). The hypervolume needs a
    reference point (in the objectives' units); without one, none is computed.
    """
    from nasplat.pareto import hypervolume

    from .frames import front_flags

    if by not in METRIC_SOURCES:
        raise NasplatError(f"unknown metric source '{by}'; allowed: {', '.join(METRIC_SOURCES)}")
    frame = trials_frame(study)
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    if by == "finetuned":
        frame = finetuned_frame(study, frame, names)
    if frame.empty:
        return frame, None
    front = frame[front_flags(frame, names, directions)]
    front = front.sort_values(names[0], ascending=directions[0] == "minimize", kind="stable").reset_index(drop=True)
    front = _merge_equivalents(study, front)
    hv = None
    if reference is not None:
        hv = hypervolume(front[names].to_numpy(dtype=float), list(reference), directions)
    return front, hv


def _merge_equivalents(study: optuna.Study, front: pd.DataFrame) -> pd.DataFrame:
    """One row per network: front members that are the same network (the family's canonical form, e.g. a cell
    reaching the same ops through dead edges) are merged into the first; ``equivalents`` counts the merged
    trials. Studies whose space cannot be rebuilt are left as they are."""
    from . import record as study_record

    if front.empty or "arch_key" not in front or not isinstance(study.user_attrs.get(study_record.SPACE_SPEC), dict):
        return front
    try:
        space = study_record.study_space(study.user_attrs, f"study '{study.study_name}' space")
        canonical = [space.family.canonical(space, space.from_key(str(k))).key for k in front["arch_key"]]
    except NasplatError:
        return front
    front = front.assign(canonical=canonical)
    counts = front.groupby("canonical", sort=False)["trial"].transform("size") - 1
    front = front.assign(equivalents=counts.astype(int))
    return front.drop_duplicates("canonical").drop(columns="canonical").reset_index(drop=True)


def finetuned_frame(study: optuna.Study, frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The fine-tuned rows of a trials frame, objectives replaced by their stand-alone values where measured."""
    replaced = [n for n in names if f"{FINETUNE_PREFIX}{n}" in frame]
    if frame.empty or not replaced:
        raise NasplatError(
            f"study '{study.study_name}' has no fine-tuned trial with a stand-alone value of "
            f"{' or '.join(names)}; run 'nasplat finetune' first"
        )
    frame = frame[frame[[f"{FINETUNE_PREFIX}{n}" for n in replaced]].notna().all(axis=1)].copy()
    for n in replaced:
        frame[f"inherited:{n}"] = frame[n]
        frame[n] = frame[f"{FINETUNE_PREFIX}{n}"]
    return frame.reset_index(drop=True)


def set_finished_trial_attrs(study: optuna.Study, number: int, attrs: dict[str, Any]) -> None:
    """Set user attributes on a finished trial of ``study`` (one transaction), e.g. results measured later.

    Optuna's API refuses to change finished trials (``UpdateFinishedTrialError``), so this writes the rows of
    its ``trial_user_attributes`` table directly, JSON-encoded as Optuna does. Only RDB storages (every
    storage nasplat opens) are supported. Optuna caches finished trials per process: load the study again
    to read the new values.
    """
    import json

    import sqlalchemy

    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    engine = getattr(backend, "engine", None)
    if engine is None:
        raise NasplatError("results can only be added to finished trials of an SQL storage (sqlite://, postgresql://)")
    with engine.begin() as conn:
        row = conn.execute(
            sqlalchemy.text("SELECT trial_id, state FROM trials WHERE study_id = :sid AND number = :n"),
            {"sid": study._study_id, "n": number},
        ).first()
        if row is None:
            raise NasplatError(f"study '{study.study_name}' has no trial {number}")
        trial_id = row[0]
        for key, value in attrs.items():
            text = json.dumps(value)
            updated = conn.execute(
                sqlalchemy.text("UPDATE trial_user_attributes SET value_json = :v WHERE trial_id = :tid AND key = :k"),
                {"v": text, "tid": trial_id, "k": key},
            )
            if updated.rowcount == 0:
                conn.execute(
                    sqlalchemy.text(
                        "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:tid, :k, :v)"
                    ),
                    {"v": text, "tid": trial_id, "k": key},
                )


DRIVER_ATTR = "nasplat:driver"  # trial system attribute: host:pid of the driver that asked for the trial
MAX_RETRIES = 3


def mark_driver(storage: Any, trial: optuna.Trial) -> None:
    """Record which process holds ``trial`` (so a resumed run on the same host sees at once that it died)."""
    import os
    import socket

    storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


def _driver_dead(value: Any) -> bool:
    """True when ``host:pid`` names a process of this host that no longer runs."""
    import os
    import socket

    if not isinstance(value, str) or ":" not in value:
        return False
    host, _, pid = value.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def stale_trial_ids(study: optuna.Study, grace_s: int) -> list[int]:
    """Running trials whose worker is gone: silent (no heartbeat, or none) for ``grace_s``, or held by a
    process of this host that has exited (no need to wait for the grace period then)."""
    import datetime

    import sqlalchemy

    engine = _engine(study)
    if engine is None:
        return []
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.datetime_start, h.heartbeat, a.value_json FROM trials t "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "LEFT JOIN trial_system_attributes a ON a.trial_id = t.trial_id AND a.key = :driver "
        "WHERE t.study_id = :sid AND t.state = 'RUNNING'"
    )
    import json

    with engine.connect() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = list(conn.execute(query, {"sid": study._study_id, "driver": DRIVER_ATTR}))
    # heartbeats carry the database server's clock (as Optuna writes them), start times the client's
    server_now = (now if isinstance(now, datetime.datetime) else _as_datetime(now)).replace(tzinfo=None)
    client_now = datetime.datetime.now()
    grace = datetime.timedelta(seconds=grace_s)
    out = []
    for trial_id, started, beat, driver in rows:
        if beat is not None:
            silent = server_now - _as_datetime(beat) > grace
        else:
            silent = started is not None and client_now - _as_datetime(started) > grace
        if silent or _driver_dead(json.loads(driver) if driver else None):
            out.append(int(trial_id))
    return out


def _as_datetime(value: Any) -> Any:
    """A naive datetime from what a raw query returns (SQLite gives text)."""
    import datetime as dt

    out = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return out.replace(tzinfo=None)


def recover_stale_trials(study: optuna.Study, grace_s: int) -> int:
    """Queue a retry of every stale trial (:func:`stale_trial_ids`), then fail it; returns how many were failed.

    The retry (a WAITING copy with the same choices, ``failed_trial`` naming the original, as Optuna's retry
    callback writes it, at most :data:`MAX_RETRIES` per chain) is queued *before* the trial is failed, and only
    if the trial has none yet, so a driver killed anywhere in here loses no retry and queues none twice: the
    next driver finds the trial still running and stale, or failed with its retry queued."""
    import optuna

    ids = stale_trial_ids(study, grace_s)
    if not ids:
        return 0
    storage = study._storage
    retried = _retried(study)
    failed = 0
    for trial_id in ids:
        trial = storage.get_trial(trial_id)
        if trial.state != optuna.trial.TrialState.RUNNING:
            continue  # another driver got there first
        _queue_retry(study, trial, retried)
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another driver failed it meanwhile (its retry is queued: it checked as we did)
    return failed


def requeue(study: optuna.Study, number: int) -> None:
    """Queue trial ``number`` (finished as FAIL) again with its choices, as a retry (``failed_trial``), unless it
    already has one or its retries are spent."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    _queue_retry(study, trial, _retried(study))


def _retried(study: optuna.Study) -> set[int]:
    """Numbers of the trials that have a retry queued or run already."""
    return {
        t.system_attrs["retry_history"][-1]
        for t in study.get_trials(deepcopy=False)
        if t.system_attrs.get("retry_history")
    }


def _queue_retry(study: optuna.Study, trial: Any, retried: set[int]) -> None:
    """A WAITING copy of ``trial`` with its choices (``failed_trial`` naming the original and ``retry_history``,
    as Optuna's retry callback writes them), unless it has one or the chain has had :data:`MAX_RETRIES`."""
    import optuna

    system = {k: v for k, v in trial.system_attrs.items() if k != DRIVER_ATTR}
    history = [*system.get("retry_history", []), trial.number]
    if trial.number in retried or len(history) > MAX_RETRIES:
        return
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=trial.user_attrs,
            system_attrs={**system, "failed_trial": system.get("failed_trial", trial.number), "retry_history": history},
        )
    )
    retried.add(trial.number)


def fail_silent_trials(study: optuna.Study, grace_s: int) -> int:
    """Former name of :func:`recover_stale_trials`."""
    return recover_stale_trials(study, grace_s)


def storage_folder(study: optuna.Study) -> Any:
    """The folder of the study's SQLite file (None for other storages)."""
    from pathlib import Path

    engine = _engine(study)
    database = getattr(getattr(engine, "url", None), "database", None)
    if engine is None or not str(engine.url).startswith("sqlite") or not database:
        return None
    return Path(database).resolve().parent


def _engine(study: optuna.Study) -> Any:
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    return getattr(backend, "engine", None)


def record_supernet_epochs(
    storage_url: str,
    study_name: str,
    *,
    space_record: dict[str, Any],
    objectives: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    checkpoint: Any,
) -> None:
    """Record epochs of supernet training in the run's study (created if it does not exist yet), one
    ``supernet:epoch:NNNN`` row each. Rows already there with the same content are not written again, so a resumed
    run can pass its whole history and only what a kill lost is added."""
    import optuna

    from nasplat.space import space_from_record

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space_from_record(space_record)
    study = open_study(make_storage(storage_url), study_name, space=space, objectives=objectives, sampler=None)
    present = study.user_attrs
    for record in records:
        key = f"{SUPERNET_EPOCH_PREFIX}{int(record['epoch']):04d}"
        row = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
        if present.get(key) != row:
            study.set_user_attr(key, row)
    if present.get("supernet:checkpoint") != str(checkpoint):
        study.set_user_attr("supernet:checkpoint", str(checkpoint))


def supernet_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per recorded supernet training epoch (empty when the supernet was trained elsewhere)."""
    rows = [v for k, v in sorted(study.user_attrs.items()) if k.startswith(SUPERNET_EPOCH_PREFIX)]
    return pd.DataFrame(rows)
