"""The one reader of studies: an Optuna RDB storage, read-only and set-wise, as pandas DataFrames.

``nasplat pareto``, ``nasplat studies``, :mod:`nasplat._api` (through :func:`nasplat.study.trials_frame`) and
the dashboards all read studies here; every SQL statement against Optuna's tables for reading lives in this
module, and the attribute keys come from :mod:`nasplat.study.record`. The Pareto maths is
:mod:`nasplat.pareto`'s (:func:`front_mask` only pre-filters large sets before calling it).

Reading is strictly read-only and fast enough for studies of tens of thousands of trials:

- the storage is opened with its own SQLAlchemy engine: SQLite files in SQLite's read-only URI mode
  (``mode=ro``; a missing file is reported, never created), PostgreSQL with
  ``default_transaction_read_only=on``; and every statement sent is checked to be a read (``SELECT``...).
  Optuna's ``RDBStorage`` is not used for reading because opening one creates missing tables and version rows.
- trials are read with a handful of set-wise ``SELECT`` statements over Optuna's tables (trials, values,
  parameters, and only the trial attributes frames need), not one ``FrozenTrial`` at a time, and cached per
  study until the study changes (its signature: trial count, last ids and times, attribute sizes).
  Long-lived readers (the dashboard) reuse a signature for :data:`RECENT_S`; with ``fresh=True`` (the CLI and
  the API) :func:`trials_frame` reads the study again, so a write just made is always seen.

Every Optuna study can be read: studies that nasplat did not write (a plain Optuna study) name their
objectives by ``study.metric_names`` (else ``objective_0``, ``objective_1``...), and
:attr:`StudyInfo.nasplat` says whether nasplat's attributes are there. Trial attributes read set-wise:
``arch_key``, ``arch_string``, ``metric:<name>``, ``predicted:<name>``, ``finetune:<name>``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from nasplat.errors import NasplatError
from nasplat.pareto import hypervolume, non_dominated_mask

from . import record as R
from .record import FINETUNE_PREFIX, METRIC_PREFIX, PREDICTED_PREFIX, STUDY_FORMAT

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

PARAM_PREFIX = "param:"
#: Optuna's study system attribute naming the objectives (``Study.set_metric_names``)
METRIC_NAMES_ATTR = "study:metric_names"
#: trial attributes read set-wise (the rest, e.g. provenance, is read for one trial at a time)
_TRIAL_ATTR_KEYS = (R.ARCH_STRING, R.ARCH_KEY)
#: tables (and the columns of them read here) of an Optuna RDB storage
_REQUIRED: dict[str, tuple[str, ...]] = {
    "studies": ("study_id", "study_name"),
    "study_directions": ("study_id", "objective", "direction"),
    "study_user_attributes": ("study_id", "key", "value_json"),
    "trials": ("trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"),
    "trial_values": ("trial_id", "objective", "value", "value_type"),
    "trial_params": ("trial_id", "param_name", "param_value", "distribution_json"),
    "trial_user_attributes": ("trial_id", "key", "value_json"),
}
#: a study with a running trial updated within this many seconds counts as "running"
RUNNING_WINDOW_S = 600.0


class StorageError(NasplatError):
    """The storage cannot be read (unreachable, empty, not an Optuna storage, incompatible schema)."""


class StudyError(NasplatError):
    """A study cannot be shown (unknown name, written by another nasplat format, not a nasplat study)."""


# --------------------------------------------------------------------------------------------------------------
# opening a storage, read-only


@dataclass(frozen=True, eq=False)
class Storage:
    """A read-only handle on an Optuna RDB storage (SQLAlchemy engine plus the URL it was opened with)."""

    url: str
    engine: Engine = field(repr=False)
    readonly_url: str = field(repr=False)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return safe_url(self.url)


def safe_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


_storages: dict[str, Storage] = {}
_storages_lock = threading.Lock()


def open_storage(url: str | Storage) -> Storage:
    """A read-only :class:`Storage` for a SQLAlchemy URL (cached per URL). Raises :class:`StorageError`."""
    if isinstance(url, Storage):
        return url
    with _storages_lock:
        if url in _storages:
            return _storages[url]
        storage = _open(url)
        _storages[url] = storage
        return storage


def _open(url: str) -> Storage:
    import sqlalchemy
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = safe_url(url)
    if "://" not in url:
        raise StorageError(f"storage '{url}' is not a URL; use e.g. sqlite:///study.db or postgresql://host/db")
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise StorageError(f"storage '{shown}' is not a valid SQLAlchemy URL ({exc})") from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise StorageError(f"storage '{shown}': give a SQLite file, e.g. sqlite:///path/to/study.db")
        path = Path(database).expanduser().resolve()
        if not path.is_file():
            raise StorageError(f"storage '{shown}' is unreachable: no SQLite file at {path}")
        ro = parsed.set(database=f"file:{quote(str(path))}", query={**parsed.query, "mode": "ro", "uri": "true"})
        kwargs["connect_args"] = {"timeout": 20}
    else:
        ro = parsed
        kwargs["pool_pre_ping"] = True
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
            ro = parsed.set(drivername=_postgres_driver(parsed.drivername))
    readonly_url = ro.render_as_string(hide_password=False)
    try:
        engine = sqlalchemy.create_engine(ro, **kwargs)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        extra = " (install nasplat[postgres])" if parsed.get_backend_name() == "postgresql" else ""
        raise StorageError(f"storage '{shown}': no database driver for it{extra}: {exc}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, TypeError) as exc:
        raise StorageError(f"storage '{shown}' cannot be opened: {_first_line(exc)}") from None
    sqlalchemy.event.listen(engine, "before_cursor_execute", _refuse_writes)
    return Storage(url=url, engine=engine, readonly_url=readonly_url)


def _postgres_driver(drivername: str) -> str:
    """``postgresql://`` names no driver: SQLAlchemy 2.1 then wants psycopg 3; use psycopg2 if only it is here."""
    import importlib.util

    if drivername != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return drivername
    return "postgresql+psycopg2" if importlib.util.find_spec("psycopg2") is not None else drivername


_READ_STATEMENT = re.compile(r"^\s*(select|with|pragma|show|explain)\b", re.IGNORECASE)


def _refuse_writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    """Engine guard: study frames only ever read."""
    if not _READ_STATEMENT.match(statement):
        raise StorageError(f"nasplat reads storages only here; refused statement: {statement.split(maxsplit=1)[0]}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rows(storage: Storage, sql: str, params: Mapping[str, int] | None = None) -> list[tuple[Any, ...]]:
    """Run one SELECT and fetch every row; any database failure becomes a one-line :class:`StorageError`.

    Rows come from the driver's own cursor (``fetchall`` of plain tuples: several times faster than
    SQLAlchemy result rows on large studies). Parameters are integers only (ids and numbers), written into the
    statement as integer literals.
    """
    import sqlalchemy.exc

    for name, value in (params or {}).items():
        sql = re.sub(rf":{name}\b", str(int(value)), sql)
    if not _READ_STATEMENT.match(sql):
        raise StorageError("nasplat reads storages only here")
    dbapi_error: Any = getattr(storage.engine.dialect.dbapi, "Error", sqlalchemy.exc.SQLAlchemyError)
    try:
        with storage.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql)
                return list(cursor.fetchall())
            finally:
                cursor.close()
    except (sqlalchemy.exc.SQLAlchemyError, dbapi_error) as exc:
        raise StorageError(f"storage '{storage.display_url}' cannot be read: {_first_line(exc)}") from None


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def check_storage(storage: Storage | str) -> None:
    """Raise :class:`StorageError` unless the storage holds Optuna's tables with the columns read here."""
    import sqlalchemy
    import sqlalchemy.exc

    st = open_storage(storage)
    if getattr(st, "_checked", False):
        return
    try:
        inspector = sqlalchemy.inspect(st.engine)
        tables = set(inspector.get_table_names())
        if not tables:
            raise StorageError(
                f"storage '{st.display_url}' is empty: it holds no Optuna tables yet (has a search written to it?)"
            )
        missing_tables = [t for t in _REQUIRED if t not in tables]
        if missing_tables:
            raise StorageError(
                f"storage '{st.display_url}' lacks Optuna's tables {', '.join(missing_tables)}: either a search is "
                "creating it right now, or it is not an Optuna storage written by nasplat"
            )
        for table, cols in _REQUIRED.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            lacking = [c for c in cols if c not in have]
            if lacking:
                raise StorageError(
                    f"storage '{st.display_url}' was written by an older or unknown Optuna version "
                    f"({_schema_text(st)}): table '{table}' lacks column(s) {', '.join(lacking)}; "
                    "nasplat reads storages of Optuna 3 and later"
                )
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage '{st.display_url}' is unreachable: {_first_line(exc)}") from None
    object.__setattr__(st, "_checked", True)


def _schema_text(storage: Storage) -> str:
    try:
        rows = _rows(storage, "SELECT schema_version, library_version FROM version_info")
    except StorageError:
        return "no version recorded"
    if not rows:
        return "no version recorded"
    return f"Optuna {rows[0][1]}, schema {rows[0][0]}"


# --------------------------------------------------------------------------------------------------------------
# studies


@dataclass(frozen=True)
class StudyInfo:
    """What the views need to know about one study."""

    study_id: int
    name: str
    attrs: Mapping[str, Any]
    directions: tuple[str, ...]  # "maximize" / "minimize", one per objective
    objectives: tuple[str, ...]  # metric name of each objective
    devices: tuple[str, ...]  # devices named by the objectives
    problem: str | None  # why it cannot be read as nasplat's (another nasplat format, objectives), else None
    nasplat: bool = True  # written by nasplat (its attributes are there); False for a plain Optuna study

    @property
    def space(self) -> str:
        return str(self.attrs.get(R.SPACE, "?"))

    def direction_of(self, metric: str) -> str:
        """The study's direction for an objective; for another metric, a guess from its name."""
        if metric in self.objectives:
            return self.directions[self.objectives.index(metric)]
        return guess_direction(metric)


def guess_direction(metric: str) -> str:
    """``maximize`` for accuracy-like names (``acc``, ``tau``, ``fidelity``...), ``minimize`` otherwise."""
    low = metric.lower()
    return (
        "maximize"
        if any(w in low for w in ("acc", "tau", "spearman", "fidelity", "score", "hypervolume"))
        else "minimize"
    )


def _json(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _format_problem(name: str, attrs: Mapping[str, Any], n_directions: int) -> str | None:
    """Why a study that says it was written by nasplat cannot be read as such (None: it can, or it is foreign)."""
    fmt = attrs.get(R.FORMAT)
    version = attrs.get(R.VERSION)
    by = f" (nasplat {version})" if version else ""
    if fmt is None:
        return None  # not nasplat's: read as a plain Optuna study
    if not isinstance(fmt, int) or fmt < STUDY_FORMAT:
        return (
            f"study '{name}' was written by an older nasplat{by} in study format {fmt!r}; this version reads "
            f"format {STUDY_FORMAT}: re-run its search with this nasplat version into a new study"
        )
    if fmt > STUDY_FORMAT:
        return (
            f"study '{name}' was written by a newer nasplat{by} in study format {fmt}; this version reads "
            f"format {STUDY_FORMAT}: upgrade nasplat to view it"
        )
    objs = attrs.get(R.OBJECTIVES)
    if (
        not isinstance(objs, list)
        or len(objs) != n_directions
        or not all(isinstance(o, dict) and "metric" in o for o in objs)
    ):
        return f"study '{name}': its 'objectives' attribute does not match its {n_directions} Optuna direction(s)"
    return None


def _studies(storage: Storage, fresh: bool = False) -> list[StudyInfo]:
    """Every study of the storage (reused for a second unless ``fresh``: several frames are built per page update)."""
    check_storage(storage)
    return _recent(("studies", storage.url), lambda: _read_studies(storage), fresh)  # type: ignore[no-any-return]


def _metric_names(storage: Storage) -> dict[int, list[str]]:
    """Per study id: the objectives' names Optuna records (``Study.set_metric_names``), where set."""
    try:
        rows = _rows(
            storage,
            f"SELECT study_id, value_json FROM study_system_attributes WHERE key = {_quote(METRIC_NAMES_ATTR)}",
        )
    except StorageError:  # a storage without study system attributes names no metric
        return {}
    out = {}
    for sid, value in rows:
        names = _json(value)
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            out[int(sid)] = names
    return out


def _read_studies(storage: Storage) -> list[StudyInfo]:
    names = _rows(storage, "SELECT study_id, study_name FROM studies ORDER BY study_id")
    attrs: dict[int, dict[str, Any]] = {sid: {} for sid, _ in names}
    for sid, key, value in _rows(storage, "SELECT study_id, key, value_json FROM study_user_attributes"):
        attrs.setdefault(sid, {})[key] = _json(value)
    dirs: dict[int, dict[int, str]] = {sid: {} for sid, _ in names}
    for sid, objective, direction in _rows(storage, "SELECT study_id, objective, direction FROM study_directions"):
        dirs.setdefault(sid, {})[int(objective)] = str(getattr(direction, "name", direction)).lower()
    metric_names = _metric_names(storage)
    out = []
    for sid, name in names:
        a = attrs.get(sid, {})
        d = tuple(dirs[sid][k] for k in sorted(dirs.get(sid, {})))
        problem = _format_problem(name, a, len(d))
        objs = a.get(R.OBJECTIVES) if problem is None else None
        named = metric_names.get(int(sid), [])
        devices: tuple[str, ...] = ()
        if isinstance(objs, list) and len(objs) == len(d) and all(isinstance(o, dict) and "metric" in o for o in objs):
            objectives = tuple(str(o["metric"]) for o in objs)
            devices = tuple(dict.fromkeys(str(o["device"]) for o in objs if o.get("device")))
        elif len(named) == len(d) and len(set(named)) == len(named):
            objectives = tuple(named)
        else:
            objectives = tuple(f"objective_{i}" for i in range(len(d)))
        nasplat = a.get(R.FORMAT) is not None
        out.append(StudyInfo(int(sid), str(name), a, d, objectives, devices, problem, nasplat))
    return out


def study_names(storage: Storage | str) -> list[str]:
    """Names of every study in the storage, oldest first."""
    return [s.name for s in _studies(open_storage(storage))]


def study_info(storage: Storage | str, study: str, *, readable: bool = True, fresh: bool = False) -> StudyInfo:
    """The study called ``study``; :class:`StudyError` if unknown (or, with ``readable``, if written by another
    nasplat format or with objectives that do not match its directions)."""
    studies = _studies(open_storage(storage), fresh)
    for s in studies:
        if s.name == study:
            if readable and s.problem:
                raise StudyError(s.problem)
            return s
    names = ", ".join(s.name for s in studies) or "(none)"
    raise StudyError(f"no study '{study}' in this storage; its studies: {names}")


def _activity(storage: Storage) -> pd.DataFrame:
    """Per study and state: trial count and latest start/complete time (UTC)."""
    rows = _rows(
        storage,
        "SELECT study_id, state, COUNT(*), MAX(datetime_start), MAX(datetime_complete), MIN(datetime_start) "
        "FROM trials GROUP BY study_id, state",
    )
    frame = pd.DataFrame(rows, columns=["study_id", "state", "n", "last_start", "last_complete", "first_start"])
    frame["state"] = frame["state"].map(lambda s: str(getattr(s, "name", s)))
    for col in ("last_start", "last_complete", "first_start"):
        frame[col] = _to_utc(frame[col])
    return frame


def _to_utc(values: pd.Series | Sequence[Any]) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601", errors="coerce")


def latest_study(storage: Storage | str) -> str | None:
    """The most recently updated study nasplat wrote and can read (else the most recently updated readable one,
    else the most recently updated one); None if none."""
    st = open_storage(storage)
    studies = _studies(st)
    if not studies:
        return None
    act = _activity(st)
    last: dict[int, pd.Timestamp] = {}
    if not act.empty:
        per = act.assign(t=act[["last_start", "last_complete"]].max(axis=1)).groupby("study_id")["t"].max()
        last = {int(str(k)): v for k, v in per.items() if not pd.isna(v)}
    never = pd.Timestamp(0, tz="UTC")

    def rank(s: StudyInfo) -> tuple[bool, bool, pd.Timestamp, int]:
        return (s.problem is None, s.nasplat, last.get(s.study_id, never), s.study_id)

    return max(studies, key=rank).name


def storage_signature(storage: Storage | str, *, fresh: bool = False) -> str:
    """A short text that changes whenever trials or study attributes change (for live refresh)."""
    st = open_storage(storage)
    check_storage(st)
    return _recent(("storage_sig", st.url), lambda: _storage_signature(st), fresh)  # type: ignore[no-any-return]


def _storage_signature(st: Storage) -> str:
    trials = _rows(
        st,
        "SELECT COUNT(*), MAX(trial_id), MAX(datetime_complete), "
        "SUM(CASE WHEN state = 'COMPLETE' THEN 1 ELSE 0 END) FROM trials",
    )
    attrs = _rows(st, "SELECT COUNT(*), SUM(LENGTH(value_json)) FROM study_user_attributes")
    tattrs = _rows(st, "SELECT COUNT(*), MAX(trial_user_attribute_id) FROM trial_user_attributes")
    studies = _rows(st, "SELECT COUNT(*), MAX(study_id) FROM studies")
    return json.dumps([list(trials[0]), list(attrs[0]), list(tattrs[0]), list(studies[0])], default=str)


def _study_signature(storage: Storage, study_id: int, fresh: bool = False) -> tuple[Any, ...]:
    """Changes whenever a trial of the study is added, finishes or gets or changes attributes (reused for a
    second unless ``fresh``)."""

    def read() -> tuple[Any, ...]:
        rows = _rows(
            storage,
            "SELECT COUNT(*), MAX(trial_id), MAX(datetime_complete), MAX(datetime_start), "
            "SUM(CASE WHEN state = 'COMPLETE' THEN 1 ELSE 0 END) FROM trials WHERE study_id = :sid",
            {"sid": study_id},
        )
        attrs = _rows(
            storage,
            "SELECT COUNT(*), MAX(a.trial_user_attribute_id), SUM(LENGTH(a.value_json)) FROM trial_user_attributes a "
            "JOIN trials t ON a.trial_id = t.trial_id WHERE t.study_id = :sid",
            {"sid": study_id},
        )
        return (*rows[0], *attrs[0])

    return _recent(("study_sig", storage.url, study_id), read, fresh)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------------------
# trials


class _Cache:
    """A small thread-safe LRU, for study frames keyed by storage, study and the study's signature.

    Concurrent requests for the same missing key (the page's callbacks run in parallel) compute it once:
    the others wait for the first.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], threading.Lock] = {}

    def get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            flight = self._pending.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                if key in self._items:  # computed by another thread meanwhile
                    self._items.move_to_end(key)
                    return self._items[key]
            try:
                value = make()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache = _Cache()
_short: dict[tuple[Any, ...], tuple[float, Any]] = {}
_short_lock = threading.Lock()
#: how long study lists and signatures are reused: several frames are built per page update
RECENT_S = 1.0


def _recent(key: tuple[Any, ...], make: Callable[[], Any], fresh: bool = False) -> Any:
    """``make()``, reused for :data:`RECENT_S` seconds (computed again when ``fresh``)."""
    import time

    now = time.monotonic()
    with _short_lock:
        hit = _short.get(key)
        if hit is not None and now - hit[0] < RECENT_S and not fresh:
            return hit[1]
    value = make()
    with _short_lock:  # reused for RECENT_S after the read ends: a read slower than that (a large study on a busy
        _short[key] = (time.monotonic(), value)  # machine) would otherwise be read again by every caller
    return value


def clear_cache() -> None:
    """Forget cached frames (they are also refreshed automatically when the storage changes)."""
    _cache.clear()
    with _short_lock:
        _short.clear()


_ATTR_WHERE = (
    f"(a.key LIKE {_quote(METRIC_PREFIX + '%')} OR a.key LIKE {_quote(PREDICTED_PREFIX + '%')} "
    f"OR a.key LIKE {_quote(FINETUNE_PREFIX + '%')} OR a.key IN ({', '.join(_quote(k) for k in _TRIAL_ATTR_KEYS)}))"
)


def _attr_keys(storage: Storage, info: StudyInfo, sig: tuple[Any, ...]) -> list[str]:
    """The trial attribute keys read set-wise (metrics, predictions, fine-tuned values, identity) in the study."""

    def read() -> list[str]:
        rows = _rows(
            storage,
            "SELECT DISTINCT a.key FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
            f"WHERE t.study_id = :sid AND {_ATTR_WHERE}",
            {"sid": info.study_id},
        )
        return sorted(str(k) for (k,) in rows)

    return _cache.get(("keys", storage.url, info.study_id, sig), read)  # type: ignore[no-any-return]


def _attr_rows(storage: Storage, info: StudyInfo, key: str) -> list[tuple[Any, ...]]:
    """``(trial_id, value_json)`` of one trial attribute over the study."""
    return _rows(
        storage,
        "SELECT a.trial_id, a.value_json FROM trials t JOIN trial_user_attributes a "
        f"ON a.trial_id = t.trial_id AND a.key = {_quote(key)} WHERE t.study_id = :sid",
        {"sid": info.study_id},
    )


def _attr_column(storage: Storage, info: StudyInfo, sig: tuple[Any, ...], key: str) -> pd.Series:
    """One trial attribute over the study (raw JSON text), indexed by trial_id."""

    def read() -> pd.Series:
        rows = _attr_rows(storage, info, key)
        if not rows:
            return pd.Series(dtype=object)
        ids, values = zip(*rows, strict=True)
        raw = pd.Series(values, index=pd.Index(ids, name="trial_id"), dtype=object)
        if key in _TRIAL_ATTR_KEYS:
            return _json_strings(raw)
        return pd.to_numeric(raw, errors="coerce").astype(float)

    return _cache.get(("attr", storage.url, info.study_id, sig, key), read)  # type: ignore[no-any-return]


#: the prefix of :func:`trials_frame`'s columns of other trial attributes (``attributes=True``)
ATTR_PREFIX = "attr:"
#: at most this many other trial attribute keys are read as columns
MAX_OTHER_ATTRS = 50


def _other_attr_keys(storage: Storage, info: StudyInfo, sig: tuple[Any, ...]) -> list[str]:
    """Trial attribute keys of the study besides those read set-wise and ``provenance``: what other writers
    (a plain Optuna study's ``trial.set_user_attr``) record."""

    def read() -> list[str]:
        rows = _rows(
            storage,
            "SELECT DISTINCT a.key FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
            f"WHERE t.study_id = :sid AND NOT {_ATTR_WHERE} AND a.key <> {_quote(R.PROVENANCE)}",
            {"sid": info.study_id},
        )
        return sorted(str(k) for (k,) in rows)[:MAX_OTHER_ATTRS]

    return _cache.get(("other-keys", storage.url, info.study_id, sig), read)  # type: ignore[no-any-return]


def _other_attr_column(storage: Storage, info: StudyInfo, sig: tuple[Any, ...], key: str) -> pd.Series:
    """One other trial attribute over the study, decoded: numbers as numbers, anything else as text."""

    def read() -> pd.Series:
        rows = _attr_rows(storage, info, key)
        values = {}
        for trial_id, text in rows:
            v = _json(text)
            values[int(trial_id)] = v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v)
        return _tidy(pd.Series(values, dtype=object))

    return _cache.get(("other-attr", storage.url, info.study_id, sig, key), read)  # type: ignore[no-any-return]


def _column_name(info: StudyInfo, key: str) -> str | None:
    """The frame column of a trial attribute key (None for objectives, whose Optuna value is the record)."""
    if key in _TRIAL_ATTR_KEYS:
        return None
    col = key[len(METRIC_PREFIX) :] if key.startswith(METRIC_PREFIX) else key
    return None if col in info.objectives else col


def available_metrics(storage: Storage | str, study: str) -> list[str]:
    """The study's metrics: its objectives, then every other recorded ``metric:<name>`` (no trial is read)."""
    st = open_storage(storage)
    info = study_info(st, study)
    sig = _study_signature(st, info.study_id)
    others = [
        c for k in _attr_keys(st, info, sig) if (c := _column_name(info, k)) is not None and k.startswith(METRIC_PREFIX)
    ]
    return list(dict.fromkeys([*info.objectives, *others]))


def trials_frame(
    storage: Storage | str,
    study: str,
    *,
    states: Sequence[str] | None = ("COMPLETE",),
    params: bool = True,
    metrics: Sequence[str] | None = None,
    identity: bool = True,
    attributes: bool = False,
    fresh: bool = False,
) -> pd.DataFrame:
    """One row per trial, read set-wise and cached (fast on large studies).

    Columns: ``trial``, ``state``, ``feasible`` (meets the search's own constraints), each objective by
    metric name (the Optuna values), every other ``metric:<name>`` attribute by name and every numeric
    ``finetune:<name>`` (only those in ``metrics`` when given), ``arch``, ``arch_key``, ``param:<label>``
    (decoded choices, with ``params``), ``predicted:<metric>`` when present, with ``attributes`` every other
    trial attribute (``attr:<key>``, numbers or text; not ``provenance``), ``seconds`` (trial duration),
    ``elapsed_s`` (completion time since the study's first trial started), ``datetime_start`` and
    ``datetime_complete`` (UTC). Sorted by trial number. ``states=None``: every trial. Without ``identity``,
    ``arch`` and ``arch_key`` are left empty (not read).

    Each part (trials with their values, each attribute, the parameters) is read once and reused until the
    study changes, so views that need few columns read few. ``fresh``: see the module's docstring.
    """
    st = open_storage(storage)
    info = study_info(st, study, fresh=fresh)
    sig = _study_signature(st, info.study_id, fresh)
    if fresh:  # read every part again: a value changed in place to one of the same length leaves the signature
        import time

        sig = (*sig, "fresh", time.monotonic_ns())
    base = _cache.get(("base", st.url, info.study_id, sig), lambda: _read_base(st, info))
    frame = base.copy()
    ids = frame.index
    metric_cols: list[str] = []
    for key in _attr_keys(st, info, sig):
        col = _column_name(info, key)
        if col is None or (metrics is not None and col not in metrics and not col.startswith("predicted")):
            continue
        frame[col] = _attr_column(st, info, sig, key).reindex(ids).to_numpy()
        metric_cols.append(col)
    for key, col in ((R.ARCH_STRING, "arch"), (R.ARCH_KEY, "arch_key")):  # text, None where there is none
        values = _attr_column(st, info, sig, key).reindex(ids).astype(object) if identity else None
        frame[col] = values.where(values.notna(), None).to_numpy() if values is not None else None
    param_cols: list[str] = []
    if params:
        decoded = _cache.get(("params", st.url, info.study_id, sig), lambda: _read_params(st, info))
        for label, series in decoded.items():
            frame[PARAM_PREFIX + label] = series.reindex(ids).to_numpy()
            param_cols.append(PARAM_PREFIX + label)
    ordered = ["trial", "state", "feasible", *info.objectives]
    ordered += sorted(c for c in metric_cols if not c.startswith("predicted"))
    ordered += ["arch", "arch_key", *param_cols]
    ordered += sorted(c for c in metric_cols if c.startswith("predicted"))
    if attributes:
        for key in _other_attr_keys(st, info, sig):
            frame[ATTR_PREFIX + key] = _other_attr_column(st, info, sig, key).reindex(ids).to_numpy()
            ordered.append(ATTR_PREFIX + key)
    ordered += ["seconds", "elapsed_s", "datetime_start", "datetime_complete"]
    frame = frame[ordered]
    if states is not None:
        wanted = {x.upper() for x in states}
        frame = frame[frame["state"].isin(wanted)]
    return frame.reset_index(drop=True)


def _read_base(storage: Storage, info: StudyInfo) -> pd.DataFrame:
    """Trials with their state, times, objective values and feasibility, indexed by trial_id, by number."""
    sid = {"sid": info.study_id}
    trials = pd.DataFrame(
        _rows(
            storage,
            "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
            "WHERE study_id = :sid ORDER BY number",
            sid,
        ),
        columns=["trial_id", "trial", "state", "datetime_start", "datetime_complete"],
    )
    trials["state"] = trials["state"].map(lambda s: str(getattr(s, "name", s)))
    trials["datetime_start"] = _to_utc(trials["datetime_start"])
    trials["datetime_complete"] = _to_utc(trials["datetime_complete"])
    frame = trials.set_index("trial_id")
    ids = frame.index
    frame.insert(2, "feasible", _read_feasible(storage, info).reindex(ids).fillna(True).astype(bool).to_numpy())
    # objective values (value and its kind: FINITE, INF_POS, INF_NEG), pivoted to one row per trial
    n_obj = len(info.objectives)
    if n_obj:
        cols = ", ".join(
            f"MAX(CASE WHEN v.objective = {i} THEN v.value END), MAX(CASE WHEN v.objective = {i} THEN v.value_type END)"
            for i in range(n_obj)
        )
        rows = _rows(
            storage,
            f"SELECT v.trial_id, {cols} FROM trial_values v JOIN trials t ON v.trial_id = t.trial_id "
            "WHERE t.study_id = :sid GROUP BY v.trial_id",
            sid,
        )
        names = [f"{k}{i}" for i in range(n_obj) for k in ("v", "t")]
        vals = pd.DataFrame(rows, columns=["trial_id", *names], dtype=object).set_index("trial_id").reindex(ids)
        for i, name in enumerate(info.objectives):
            kind = vals[f"t{i}"].map(lambda s: str(getattr(s, "name", s)) if s is not None else None).to_numpy()
            v = pd.to_numeric(vals[f"v{i}"], errors="coerce").astype(float).to_numpy()
            frame[name] = np.where(kind == "INF_POS", np.inf, np.where(kind == "INF_NEG", -np.inf, v))
    start = frame["datetime_start"]
    complete = frame["datetime_complete"]
    frame["seconds"] = (complete - start).dt.total_seconds()
    first = start.min()
    frame["elapsed_s"] = (complete - first).dt.total_seconds() if not pd.isna(first) else np.nan
    return frame


def _pivot(storage: Storage, table: str, key_col: str, value_col: str, keys: Sequence[str], where: str,
           params: Mapping[str, int]) -> pd.DataFrame:  # fmt: skip
    """``table`` rows of the trials matching ``where`` (alias ``a`` for the table, ``t`` for trials) as one
    row per trial_id and one column per key."""
    if not keys:
        return pd.DataFrame(index=pd.Index([], name="trial_id"))
    cols = ", ".join(f"MAX(CASE WHEN a.{key_col} = {_quote(k)} THEN a.{value_col} END)" for k in keys)
    rows = _rows(
        storage,
        f"SELECT a.trial_id, {cols} FROM {table} a JOIN trials t ON a.trial_id = t.trial_id {where} GROUP BY a.trial_id",
        params,
    )
    return pd.DataFrame(rows, columns=["trial_id", *keys], dtype=object).set_index("trial_id")


def _json_strings(values: pd.Series) -> pd.Series:
    """JSON-encoded strings decoded (plain ``"..."`` without escapes by slicing, the rest by ``json.loads``)."""
    out = []
    for v in values.tolist():
        if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"' and "\\" not in v:
            out.append(v[1:-1])
        else:
            out.append(_json(v))
    return pd.Series(out, index=values.index, dtype=object)


def _read_feasible(storage: Storage, info: StudyInfo) -> pd.Series:
    """Per trial_id: whether the trial meets the search's own constraints (Optuna's constraint values <= 0)."""
    try:
        rows = _rows(
            storage,
            "SELECT a.trial_id, a.key, a.value_json FROM trial_system_attributes a "
            "JOIN trials t ON a.trial_id = t.trial_id WHERE t.study_id = :sid AND "
            "(a.key = 'constraints' OR a.key LIKE 'constraints:%')",
            {"sid": info.study_id},
        )
    except StorageError:  # a storage without system attributes has no constraints
        return pd.Series(dtype=bool)
    ok: dict[int, bool] = {}
    for trial_id, _key, value in rows:
        v = _json(value)
        values = v if isinstance(v, list) else [v]
        good = all(isinstance(x, (int, float)) and x <= 0.0 for x in values)
        ok[int(trial_id)] = ok.get(int(trial_id), True) and good
    return pd.Series(ok, dtype=bool)


def _read_params(storage: Storage, info: StudyInfo) -> dict[str, pd.Series]:
    """Decoded parameter values (choices) per label, indexed by trial_id."""
    from optuna.distributions import json_to_distribution

    where = "WHERE t.study_id = :sid"
    sid = {"sid": info.study_id}
    kinds = _rows(
        storage,
        "SELECT DISTINCT a.param_name, a.distribution_json FROM trial_params a "
        f"JOIN trials t ON a.trial_id = t.trial_id {where}",
        sid,
    )
    dists: dict[str, list[str]] = {}
    for name, dist in kinds:
        dists.setdefault(str(name), []).append(str(dist))
    names = sorted(dists)
    raw = _pivot(storage, "trial_params", "param_name", "param_value", names, where, sid)
    out: dict[str, pd.Series] = {}
    for name in names:
        numbers = pd.to_numeric(raw[name], errors="coerce").astype(float)
        if len(dists[name]) == 1:
            try:
                dist = json_to_distribution(dists[name][0])
            except (ValueError, KeyError, TypeError):
                out[name] = numbers
                continue
            lookup = {u: dist.to_external_repr(u) for u in numbers.dropna().unique()}
            out[name] = _tidy(numbers.map(lookup).astype(object).where(numbers.notna(), None))
        else:  # the distribution changed within the study: decode trial by trial
            rows = _rows(
                storage,
                f"SELECT a.trial_id, a.param_value, a.distribution_json FROM trial_params a JOIN trials t "
                f"ON a.trial_id = t.trial_id {where} AND a.param_name = {_quote(name)}",
                sid,
            )
            decoded = {int(tid): json_to_distribution(str(d)).to_external_repr(float(v)) for tid, v, d in rows}
            out[name] = _tidy(pd.Series(decoded, dtype=object))
    return out


def _tidy(series: pd.Series) -> pd.Series:
    """Object columns of numbers become numeric columns (sorting and filtering then work as numbers)."""
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in series.dropna()):
        return pd.to_numeric(series)
    return series


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a trials frame (objectives first), excluding bookkeeping columns."""
    skip = {
        "trial",
        "state",
        "feasible",
        "arch",
        "arch_key",
        "seconds",
        "elapsed_s",
        "datetime_start",
        "datetime_complete",
    }
    return [
        str(c)
        for c in frame.columns
        if c not in skip
        and not str(c).startswith((PARAM_PREFIX, PREDICTED_PREFIX, ATTR_PREFIX))
        and pd.api.types.is_numeric_dtype(frame[c])
    ]


def choice_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if str(c).startswith(PARAM_PREFIX)]


# --------------------------------------------------------------------------------------------------------------
# Pareto fronts and hypervolume


def front_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """:func:`nasplat.pareto.non_dominated_mask`, exact, with a vectorised pre-filter for large sets.

    ``non_dominated_mask`` tests points one by one; on 20,000 trials that alone takes about half a second.
    Points strictly dominated by a member of the front of a small, well-spread sample are dominated in the
    whole set too (and removing them changes nobody else's status, since whoever they dominate is dominated by
    that member as well), so they are dropped first with array operations.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n <= 512:
        return non_dominated_mask(values, directions) if n else np.zeros(0, dtype=bool)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    v = values * signs
    finite = np.all(np.isfinite(v), axis=1)
    # a sample: the best points by each objective and by their sum of ranks
    ranks = np.argsort(np.argsort(np.where(finite[:, None], v, np.inf), axis=0), axis=0).sum(axis=1)
    picks = set(np.argsort(ranks)[:256].tolist())
    for j in range(v.shape[1]):
        picks.update(np.argsort(np.where(finite, v[:, j], np.inf))[:32].tolist())
    sample = np.array(sorted(i for i in picks if finite[i]), dtype=int)
    anchors = sample[non_dominated_mask(values[sample], directions)]
    survivors = finite.copy()
    a = v[anchors]
    for start in range(0, n, 4096):  # (chunk × anchors × objectives) comparisons
        chunk = v[start : start + 4096]
        le = np.all(a[None, :, :] <= chunk[:, None, :], axis=2)
        lt = np.any(a[None, :, :] < chunk[:, None, :], axis=2)
        survivors[start : start + 4096] &= ~np.any(le & lt, axis=1)
    mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(survivors)
    mask[idx] = non_dominated_mask(values[idx], directions)
    return mask


def front_flags(frame: pd.DataFrame, axes: Sequence[str], directions: Sequence[str],
                feasible: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The front of a trials frame, as ``nasplat pareto`` and the dashboard both draw it: over the feasible
    trials (``feasible``, else the frame's ``feasible`` column), one per architecture (its first feasible
    trial, when every trial has an ``arch_key``), non-dominated in ``axes`` by ``directions``."""
    ok = frame["feasible"].to_numpy(dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    candidate = ok.copy()
    if "arch_key" in frame and len(frame) and frame["arch_key"].notna().all():  # first feasible trial of each
        candidate[ok] &= ~frame["arch_key"][ok].duplicated().to_numpy()
    front = np.zeros(len(frame), dtype=bool)
    if candidate.any():
        front[candidate] = front_mask(frame.loc[candidate, list(axes)].to_numpy(dtype=float), directions)
    return front


Constraints = Mapping[str, tuple[float | None, float | None]]


def feasible_mask(frame: pd.DataFrame, constraints: Constraints | None) -> np.ndarray:
    """True where every constrained metric lies within its (low, high) bounds (None: unbounded)."""
    ok = np.ones(len(frame), dtype=bool)
    for metric, (low, high) in (constraints or {}).items():
        if metric not in frame.columns:
            raise NasplatError(f"no metric '{metric}' to constrain; metrics: {', '.join(metric_columns(frame))}")
        col = frame[metric].to_numpy(dtype=float)
        if low is not None:
            ok &= col >= low
        if high is not None:
            ok &= col <= high
    return ok


def pareto_frame(
    storage: Storage | str, study: str, axes: Sequence[str], constraints: Constraints | None = None
) -> pd.DataFrame:
    """Completed trials with their ``axes`` values, whether they meet ``constraints`` and are on the front.

    ``feasible``: the trial meets the search's own constraints (Optuna's constraint API) and ``constraints``.
    The front is computed over the feasible trials, one per architecture (its first trial, as ``nasplat pareto``
    does), in the directions of the study's objectives (a metric that is not an objective is maximised if its
    name says accuracy, else minimised). Columns: ``trial``,
    ``arch``, the axes, the constrained metrics, ``feasible``, ``front``. ``frame.attrs`` holds ``directions``
    (per axis), ``study`` and ``n_trials``.
    """
    st = open_storage(storage)
    info = study_info(st, study)
    axes = list(dict.fromkeys(axes))
    if not 1 <= len(axes) <= 3:
        raise NasplatError(f"choose one to three metrics to plot, got {len(axes)}")
    sig = _study_signature(st, info.study_id)
    key = ("pareto", st.url, info.study_id, sig, tuple(axes), tuple(sorted((constraints or {}).items())))
    return _cache.get(key, lambda: _pareto(st, info, study, axes, constraints)).copy()  # type: ignore[no-any-return]


def _pareto(st: Storage, info: StudyInfo, study: str, axes: list[str], constraints: Constraints | None) -> pd.DataFrame:
    trials = trials_frame(st, study, params=False, metrics=[*axes, *(constraints or {})])
    wanted = list(dict.fromkeys([*axes, *(constraints or {})]))
    missing = [a for a in wanted if a not in trials.columns] if not trials.empty else []
    if missing:
        raise StudyError(
            f"study '{study}' has no metric '{', '.join(missing)}'; it has: {', '.join(metric_columns(trials))}"
        )
    cols = list(dict.fromkeys(["trial", "arch", *axes, *(constraints or {})]))
    if trials.empty:
        out = pd.DataFrame(columns=[*cols, "feasible", "front"])
    else:
        out = trials[cols].copy()
        out["feasible"] = trials["feasible"].to_numpy(dtype=bool) & feasible_mask(trials, constraints)
        directions = [info.direction_of(a) for a in axes]
        out["front"] = front_flags(trials, axes, directions, out["feasible"].to_numpy())
    out.attrs.update(study=study, directions=[info.direction_of(a) for a in axes], n_trials=len(out), axes=list(axes))
    return out


def fronts_frame(
    storage: Storage | str, studies: Sequence[str], axes: Sequence[str], constraints: Constraints | None = None
) -> pd.DataFrame:
    """The feasible fronts of several studies on the same axes, with a ``study`` column (for overlays).

    Studies lacking one of the axes (or a constrained metric) are left out; ``frame.attrs["skipped"]`` says why.
    """
    parts = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(studies):
        try:
            p = pareto_frame(storage, name, axes, constraints)
        except NasplatError as exc:
            skipped[name] = str(exc)
            continue
        front = p[p["front"]].copy()
        front.insert(0, "study", name)
        parts.append(front)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["study", "trial", *axes])
    out.attrs["skipped"] = skipped
    return out


def reference_point(
    storage: Storage | str, studies: Sequence[str], axes: Sequence[str], constraints: Constraints | None = None
) -> list[float] | None:
    """The hypervolume reference for ``axes`` over ``studies``: the worst value of each axis over the studies'
    feasible trials (so the comparison between studies is fair)."""
    st = open_storage(storage)
    if not studies:
        return None
    worst: list[float] | None = None
    for name in studies:
        try:
            p = pareto_frame(st, name, axes, constraints)
        except NasplatError:
            continue
        p = p[p["feasible"]]
        if p.empty:
            continue
        dirs = p.attrs["directions"]
        vals = p[list(axes)].to_numpy(dtype=float)
        vals = vals[np.all(np.isfinite(vals), axis=1)]
        if not len(vals):
            continue
        w = [float(vals[:, j].min() if d == "maximize" else vals[:, j].max()) for j, d in enumerate(dirs)]
        if worst is None:
            worst = w
        else:
            worst = [min(a, b) if d == "maximize" else max(a, b) for a, b, d in zip(worst, w, dirs, strict=True)]
    return worst


def _merge_front(front: np.ndarray, batch: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """The front of ``front`` (already non-dominated) together with ``batch``."""
    if len(front):
        signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        f, b = front * signs, batch * signs
        le = np.all(f[None, :, :] <= b[:, None, :], axis=2)
        lt = np.any(f[None, :, :] < b[:, None, :], axis=2)
        batch = batch[~np.any(le & lt, axis=1)]  # dominated by the current front: never on it
        if not len(batch):
            return front
    cand = np.vstack([front, batch]) if len(front) else batch
    return cand[front_mask(cand, directions)]


def hypervolume_frame(
    storage: Storage | str,
    studies: Sequence[str],
    axes: Sequence[str],
    constraints: Constraints | None = None,
    *,
    reference: Sequence[float] | None = None,
    points: int = 100,
) -> pd.DataFrame:
    """Hypervolume of each study's feasible front after each completed trial (at most ``points`` steps).

    Columns: ``study``, ``trials`` (completed so far), ``elapsed_s`` (wall-clock since the study's first trial
    started), ``hypervolume``. ``frame.attrs["reference"]`` is the reference point used.
    """
    st = open_storage(storage)
    sigs: list[tuple[str, Any]] = []
    for name in dict.fromkeys(studies):
        try:
            sigs.append((name, _study_signature(st, study_info(st, name).study_id)))
        except NasplatError:
            sigs.append((name, None))
    key = ("hv", st.url, tuple(sigs), tuple(axes), tuple(sorted((constraints or {}).items())),
           None if reference is None else tuple(reference), points)  # fmt: skip
    frame = _cache.get(key, lambda: _hypervolume(st, studies, axes, constraints, reference, points))
    out = frame.copy()
    out.attrs = dict(frame.attrs)
    return out  # type: ignore[no-any-return]


def _hypervolume(st: Storage, studies: Sequence[str], axes: Sequence[str], constraints: Constraints | None,
                 reference: Sequence[float] | None, points: int) -> pd.DataFrame:  # fmt: skip
    ref = list(reference) if reference is not None else reference_point(st, studies, axes, constraints)
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(studies):
        try:
            p = pareto_frame(st, name, axes, constraints)
        except NasplatError:
            continue
        if p.empty or ref is None:
            continue
        trials = trials_frame(st, name, params=False, metrics=[], identity=False).set_index("trial")
        dirs = p.attrs["directions"]
        order = np.argsort(trials.loc[p["trial"], "datetime_complete"].to_numpy(), kind="stable")
        p = p.iloc[order].reset_index(drop=True)
        elapsed = trials.loc[p["trial"], "elapsed_s"].to_numpy(dtype=float)
        values = p[list(axes)].to_numpy(dtype=float)
        feasible = p["feasible"].to_numpy()
        n = len(p)
        steps = sorted(set(np.linspace(1, n, num=min(points, n)).round().astype(int).tolist()))
        front = np.empty((0, len(axes)))
        done = 0
        for k in steps:
            batch = values[done:k][feasible[done:k]]
            done = k
            if len(batch):
                front = _merge_front(front, batch, dirs)
            hv = hypervolume(front, ref, dirs) if len(front) else 0.0
            rows.append({"study": name, "trials": k, "elapsed_s": float(elapsed[k - 1]), "hypervolume": hv})
    out = pd.DataFrame(rows, columns=["study", "trials", "elapsed_s", "hypervolume"])
    out.attrs["reference"] = ref
    out.attrs["axes"] = list(axes)
    return out


# --------------------------------------------------------------------------------------------------------------
# the studies overview


def studies_frame(storage: Storage | str, *, summary: bool = True, fresh: bool = False) -> pd.DataFrame:
    """One row per study: space, objectives, devices, trial counts, status, and with ``summary`` its
    hypervolume and best values (which read every study's trials; without it only counts are read).

    The hypervolume is over the study's objectives, from the worst value of each objective among its
    completed, feasible trials (``hv_reference`` gives it). ``created``: when its first trial started;
    ``nasplat``: whether nasplat wrote it.
    Reused until the storage changes (and at most a minute, for the status); ``fresh``: see the module's docstring.
    """
    import time

    st = open_storage(storage)
    key = ("studies_frame", st.url, storage_signature(st, fresh=fresh), int(time.time() // 60), summary)
    return _cache.get(key, lambda: _studies_frame(st, summary, fresh)).copy()  # type: ignore[no-any-return]


_STUDY_COLUMNS = ("study", "space", "family", "objectives", "devices", "estimator", "sampler", "dataset", "complete",
                  "running", "failed", "trials", "target", "last_update", "created", "status", "hypervolume",
                  "hv_reference", "problem", "nasplat")  # fmt: skip


def _studies_frame(st: Storage, summary: bool, fresh: bool = False) -> pd.DataFrame:
    studies = _studies(st, fresh)
    act = _activity(st)
    now = pd.Timestamp.now(tz="UTC")
    rows: list[dict[str, Any]] = []
    for s in studies:
        mine = act[act["study_id"] == s.study_id]
        counts = {str(k): int(v) for k, v in zip(mine["state"], mine["n"], strict=True)}
        last = mine[["last_start", "last_complete"]].max(axis=None) if not mine.empty else pd.NaT
        created = mine["first_start"].min() if not mine.empty else pd.NaT
        n_complete = counts.get("COMPLETE", 0)
        run_spec = s.attrs.get(R.RUN_SPEC) if isinstance(s.attrs.get(R.RUN_SPEC), dict) else {}
        target = run_spec.get("trials") if isinstance(run_spec, dict) else None
        row: dict[str, Any] = {
            "study": s.name,
            "space": s.attrs.get(R.SPACE, "?"),
            "family": s.attrs.get(R.FAMILY, "?"),
            "objectives": ", ".join(
                f"{m} ({'max' if d == 'maximize' else 'min'})" for m, d in zip(s.objectives, s.directions, strict=True)
            ),
            "devices": ", ".join(s.devices) or "-",
            "estimator": s.attrs.get("estimator", "-"),
            "sampler": s.attrs.get("sampler", "-"),
            "dataset": s.attrs.get("dataset", "-"),
            "complete": n_complete,
            "running": counts.get("RUNNING", 0),
            "failed": counts.get("FAIL", 0),
            "trials": sum(counts.values()),
            "target": target,
            "last_update": last,
            "created": created,
            "status": _status(s, counts, target, last, now),
            "hypervolume": None,
            "hv_reference": None,
            "problem": s.problem,
            "nasplat": s.nasplat,
        }
        if summary and s.problem is None and n_complete:
            best, hv, ref_text = _study_summary(st, s)
            row.update(best)
            row["hypervolume"] = hv
            row["hv_reference"] = ref_text
        rows.append(row)
    if not rows:  # the columns all the same
        return pd.DataFrame(columns=[*_STUDY_COLUMNS])
    return pd.DataFrame(rows)


def _status(s: StudyInfo, counts: Mapping[str, int], target: Any, last: Any, now: pd.Timestamp) -> str:
    if s.problem is not None:
        return "unreadable"
    recent = not pd.isna(last) and (now - last).total_seconds() < RUNNING_WINDOW_S
    done = counts.get("COMPLETE", 0)
    if counts.get("RUNNING", 0) and recent:
        return "running"
    if isinstance(target, int) and done >= target:
        return "finished"
    if not done:
        return "no trials yet"
    if isinstance(target, int):
        return f"stopped at {done}/{target}"
    return "stopped"


def _study_summary(storage: Storage, s: StudyInfo) -> tuple[dict[str, Any], float | None, str]:
    trials = trials_frame(storage, s.name, params=False, metrics=[], identity=False)
    best: dict[str, Any] = {}
    for m, d in zip(s.objectives, s.directions, strict=True):
        col = trials.loc[trials["feasible"], m].replace([np.inf, -np.inf], np.nan)
        best[f"best {m}"] = col.max() if d == "maximize" else col.min()
    values = trials.loc[trials["feasible"], list(s.objectives)].to_numpy(dtype=float)
    values = values[np.all(np.isfinite(values), axis=1)]
    if not len(values):
        return best, None, "-"
    # the worst value of each objective (as reference_point() gives for these axes)
    ref = [float(values[:, j].min() if d == "maximize" else values[:, j].max()) for j, d in enumerate(s.directions)]
    ref_text = "worst observed"
    front = values[front_mask(values, s.directions)] if len(values) else values
    hv = hypervolume(front, [float(r) for r in ref], s.directions) if len(front) else 0.0
    return best, hv, f"{ref_text} ({', '.join(f'{r:.4g}' for r in ref)})"


# --------------------------------------------------------------------------------------------------------------
# one trial


def trial_attrs(storage: Storage | str, study: str, trial: int) -> tuple[str, dict[str, Any]]:
    """Trial number ``trial`` of ``study``: its state and every user attribute (decoded); :class:`StudyError`
    if there is no such trial."""
    st = open_storage(storage)
    info = study_info(st, study)
    rows = _rows(
        st,
        "SELECT trial_id, state FROM trials WHERE study_id = :sid AND number = :n",
        {"sid": info.study_id, "n": int(trial)},
    )
    if not rows:
        n = _rows(st, "SELECT COUNT(*) FROM trials WHERE study_id = :sid", {"sid": info.study_id})[0][0]
        raise StudyError(f"study '{study}' has no trial {trial} (it has trials 0 to {int(n) - 1})")
    trial_id, state = rows[0]
    attrs = {
        str(k): _json(v)
        for k, v in _rows(st, "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :t", {"t": trial_id})
    }
    return str(getattr(state, "name", state)), attrs


def first_line(exc: BaseException) -> str:
    """The first line of a database error (the driver's own message when there is one)."""
    return _first_line(exc)
