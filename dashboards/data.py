"""Data for the dashboards: what the views show, as pandas DataFrames and frozen records, read-only.

Studies are read by the core's one reader, :mod:`nasplat.study.frames` (storages opened read-only, trials
read set-wise and cached; its names are re-exported here for the views); this module adds what only the
dashboard shows: one architecture with its description, supernet training and predictor quality, the trials
table's server-side filtering, and export. The figure functions in :mod:`.figures` only draw what these return.

Attributes read besides the trial frames (all written by nasplat, named by :mod:`nasplat.study.record`):
the study's ``supernet:epoch:NNNN`` rows (supernet training; else the ``history`` of the supernet checkpoint
the study names, when that folder is readable), ``predictor_quality`` (what a guided sampler measured of its
predictor), and trials' ``predicted:<metric>`` (its estimates), ``provenance``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nasplat.errors import NasplatError
from nasplat.study import record as R
from nasplat.study.frames import (
    PARAM_PREFIX,
    RUNNING_WINDOW_S,
    Constraints,
    Storage,
    StorageError,
    StudyError,
    StudyInfo,
    _rows,
    available_metrics,
    check_storage,
    choice_columns,
    clear_cache,
    feasible_mask,
    first_line,
    front_flags,
    front_mask,
    fronts_frame,
    guess_direction,
    hypervolume_frame,
    latest_study,
    metric_columns,
    open_storage,
    pareto_frame,
    reference_point,
    safe_url,
    storage_signature,
    studies_frame,
    study_info,
    study_names,
    trial_attrs,
    trials_frame,
)
from nasplat.study.record import PREDICTED_PREFIX, trust_line

__all__ = [
    "PARAM_PREFIX",
    "PREDICTED_PREFIX",
    "RUNNING_WINDOW_S",
    "ArchitectureRecord",
    "Constraints",
    "Storage",
    "StorageError",
    "StudyError",
    "StudyInfo",
    "_rows",
    "architecture_record",
    "available_metrics",
    "bundle_exists",
    "bundle_zip",
    "check_storage",
    "choice_columns",
    "clear_cache",
    "export_command",
    "feasible_mask",
    "finite_or_none",
    "front_flags",
    "front_mask",
    "fronts_frame",
    "guess_direction",
    "hypervolume_frame",
    "latest_study",
    "metric_columns",
    "objectives_text",
    "open_storage",
    "overlay_frame",
    "overlay_message",
    "pareto_frame",
    "parse_filter",
    "predicted_frame",
    "predictor_frame",
    "query_trials",
    "reference_point",
    "run_export",
    "safe_url",
    "storage_signature",
    "studies_frame",
    "study_attributes",
    "study_info",
    "study_names",
    "training_frame",
    "trials_frame",
    "trust_line",
]

# --------------------------------------------------------------------------------------------------------------
# one architecture


@dataclass(frozen=True)
class ArchitectureRecord:
    """One trial's architecture, metrics and provenance, ready to show."""

    study: str
    trial: int
    state: str
    arch: str | None
    arch_key: str | None
    family: str
    choices: pd.DataFrame  # label, value
    metrics: pd.DataFrame  # metric, direction, objective, measured, predicted
    provenance: dict[str, Any]
    attributes: dict[str, Any]  # its other user attributes (what writers besides nasplat record)
    description: dict[str, Any] | None  # the family's describe(); None when the space cannot be rebuilt
    note: str | None  # why there is no description, if so
    on_front: bool


#: trial attributes the architecture view shows in their own places (the rest are listed as they are)
_SHOWN_KEYS = (R.ARCH_KEY, R.ARCH_STRING, R.PROVENANCE)
_SHOWN_PREFIXES = (R.METRIC_PREFIX, PREDICTED_PREFIX, R.FINETUNE_PREFIX)


def study_attributes(storage: Storage | str, study: str) -> pd.DataFrame:
    """What a study is: its objectives (metric name and direction, as nasplat or Optuna's ``metric_names``
    name them) and every study user attribute (``key``, ``value`` as text; long declarations shortened)."""
    info = study_info(open_storage(storage), study)
    rows = [
        (f"objective {i}", f"{m} ({d})") for i, (m, d) in enumerate(zip(info.objectives, info.directions, strict=True))
    ]
    rows.append(("written by", "nasplat" if info.nasplat else "another writer (a plain Optuna study)"))
    for key, value in sorted(info.attrs.items()):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        rows.append((key, text if len(text) <= 300 else text[:297] + "..."))
    return pd.DataFrame(rows, columns=["key", "value"])


def architecture_record(storage: Storage | str, study: str, trial: int) -> ArchitectureRecord:
    """Everything the architecture view shows about trial number ``trial`` of ``study``."""
    st = open_storage(storage)
    info = study_info(st, study)
    state, attrs = trial_attrs(st, study, trial)
    all_trials = trials_frame(st, study, states=(state,), params=True)
    row = all_trials[all_trials["trial"] == int(trial)]
    choices = pd.DataFrame(
        [(c[len(PARAM_PREFIX) :], row.iloc[0][c]) for c in choice_columns(row)] if not row.empty else [],
        columns=["label", "value"],
    )
    measured: dict[str, float] = R.trial_metrics(attrs)
    if not row.empty:
        for m in info.objectives:
            if not pd.isna(row.iloc[0][m]):
                measured[m] = float(row.iloc[0][m])
    predicted = R.trial_metrics(attrs, PREDICTED_PREFIX)
    names = list(dict.fromkeys([*info.objectives, *sorted(measured), *sorted(predicted)]))
    metrics = pd.DataFrame(
        [
            {
                "metric": m,
                "direction": info.direction_of(m),
                "objective": m in info.objectives,
                "measured": measured.get(m),
                "predicted": predicted.get(m),
            }
            for m in names
        ],
        columns=["metric", "direction", "objective", "measured", "predicted"],
    )
    others = {k: v for k, v in sorted(attrs.items()) if k not in _SHOWN_KEYS and not k.startswith(_SHOWN_PREFIXES)}
    prov = attrs.get(R.PROVENANCE)
    provenance = dict(prov) if isinstance(prov, dict) else {}
    arch_key = attrs.get(R.ARCH_KEY)
    description, note = _describe(info, arch_key, choices)
    on_front = False
    if state == "COMPLETE":  # its architecture is on the front (through this trial or an earlier one)
        p = pareto_frame(st, study, list(info.objectives))
        front_keys = set(all_trials.loc[all_trials["trial"].isin(p.loc[p["front"], "trial"]), "arch_key"])
        on_front = arch_key in front_keys if arch_key else bool(p.loc[p["trial"] == int(trial), "front"].any())
    return ArchitectureRecord(
        study=study,
        trial=int(trial),
        state=state,
        arch=attrs.get(R.ARCH_STRING),
        arch_key=arch_key,
        family=str(info.attrs.get(R.FAMILY, "?")),
        choices=choices,
        metrics=metrics,
        provenance=provenance,
        attributes=others,
        description=description,
        note=note,
        on_front=on_front,
    )


def _describe(info: StudyInfo, arch_key: Any, choices: pd.DataFrame) -> tuple[dict[str, Any] | None, str | None]:
    """The family's description of the architecture, rebuilt from the space stored in the study."""
    if not isinstance(info.attrs.get(R.SPACE_SPEC), dict):
        return None, "the study stores no space declaration: showing the choices only"
    try:
        space = R.study_space(info.attrs, f"study '{info.name}' space")
        if isinstance(arch_key, str):
            arch = space.from_key(arch_key)
        else:
            arch = space.make(dict(zip(choices["label"], choices["value"], strict=True)))
        described = space.family.describe(space, arch)
    except NasplatError as exc:
        return None, f"cannot rebuild the architecture ({exc}): showing the choices only"
    return json.loads(json.dumps(described, default=str)), None


# --------------------------------------------------------------------------------------------------------------
# several studies on one Pareto view


def objectives_text(info: StudyInfo) -> str:
    """A study's objectives as ``val_acc (max), macs (min)``."""
    return (
        ", ".join(
            f"{m} ({'max' if d == 'maximize' else 'min'})"
            for m, d in zip(info.objectives, info.directions, strict=True)
        )
        or "no objectives"
    )


def overlay_frame(
    storage: Storage | str,
    study: str,
    others: Sequence[str],
    axes: Sequence[str],
    constraints: Constraints | None = None,
) -> pd.DataFrame:
    """Every completed trial of the studies ``others``, to draw over ``study``'s Pareto view on ``axes``.

    :func:`pareto_frame` of each (``trial``, ``arch``, the axes, ``feasible``, ``front``) with a ``study`` column,
    in the order given. A study is drawn only if it shares the plotted objectives: it records every axis, in the
    direction ``study`` has for it. ``attrs["skipped"]`` (name -> why) lists the others, ``attrs["mismatch"]``
    those whose objectives differ, and ``attrs["objectives"]`` every study's objectives as text (for the message).
    """
    st = open_storage(storage)
    info = study_info(st, study)
    axes = list(dict.fromkeys(axes))
    wanted = {a: info.direction_of(a) for a in axes}
    parts = []
    skipped: dict[str, str] = {}
    mismatch: list[str] = []
    texts = {study: objectives_text(info)}
    for name in dict.fromkeys(o for o in others if o != study):
        try:
            other = study_info(st, name)
            texts[name] = objectives_text(other)
            recorded = set(available_metrics(st, name))
            if any(a not in recorded or other.direction_of(a) != d for a, d in wanted.items()):
                mismatch.append(name)
                skipped[name] = f"study '{name}' has {texts[name]}; '{study}' has {texts[study]}"
                continue
            p = pareto_frame(st, name, axes, constraints)
        except NasplatError as exc:
            skipped[name] = str(exc)
            continue
        p.insert(0, "study", name)
        parts.append(p)
    cols = ["study", "trial", "arch", *axes, "feasible", "front"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    out.attrs.update(overlay=True, skipped=skipped, mismatch=mismatch, objectives=texts, axes=axes, study=study)
    return out


def overlay_message(frame: pd.DataFrame) -> str | None:
    """One line saying which studies :func:`overlay_frame` left out, and why; None when none was."""
    skipped: dict[str, str] = dict(frame.attrs.get("skipped") or {})
    if not skipped:
        return None
    mismatch = [n for n in frame.attrs.get("mismatch") or [] if n in skipped]
    texts: dict[str, str] = dict(frame.attrs.get("objectives") or {})
    study = str(frame.attrs.get("study", ""))
    parts = []
    if mismatch:
        names = ", ".join(f"'{n}' ({texts.get(n, '?')})" for n in mismatch)
        axes = ", ".join(frame.attrs.get("axes") or [])
        parts.append(
            f"not overlaid, the studies must share the plotted objectives ({axes}, as '{study}' has them: "
            f"{texts.get(study, '?')}): {names}"
        )
    rest = [why for n, why in skipped.items() if n not in mismatch]
    if rest:
        parts.append("not overlaid: " + "; ".join(rest))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------------------
# supernet training and predictor quality

#: the study attribute where a guided sampler appends its predictor's quality (see nasplat.search._evolution)
PREDICTOR_QUALITY = "predictor_quality"


def _records(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [r for r in value if isinstance(r, dict)]


def training_frame(storage: Storage | str, study: str) -> pd.DataFrame:
    """Supernet training per epoch (``epoch``, ``loss``, and ``accuracy``, ``lr``, ``seconds``... if recorded).

    From the study's per-epoch rows (``supernet:epoch:NNNN`` attributes, written as training runs); else from
    the ``history`` of the supernet checkpoint the study names (``checkpoint``), when that folder is readable
    here. ``frame.attrs["source"]`` says which. Empty when there is neither.
    """
    info = study_info(open_storage(storage), study)
    source = None
    records: list[dict[str, Any]] = [
        dict(v) for k, v in sorted(info.attrs.items()) if k.startswith(R.SUPERNET_EPOCH_PREFIX) and isinstance(v, dict)
    ]
    if records:
        source = "the study's supernet:epoch rows"
    if not records and info.attrs.get(R.CHECKPOINT):
        ckpt = Path(str(info.attrs[R.CHECKPOINT]))
        state = ckpt / "state.json" if ckpt.is_dir() else ckpt
        try:
            records = _records(json.loads(state.read_text()).get("history"))
            source = f"checkpoint {state}"
        except (OSError, ValueError, AttributeError):
            records = []
    frame = pd.DataFrame(records)
    if not frame.empty:
        if "epoch" not in frame.columns:
            frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
        frame = frame.sort_values("epoch").reset_index(drop=True)
    frame.attrs["source"] = source
    return frame


def predictor_frame(storage: Storage | str, study: str) -> pd.DataFrame:
    """Predictor quality over the search (``trials``, ``kendall_tau``, ``spearman``, ``model``, ``metric``...).

    From the study's ``predictor_quality`` attribute (what a guided sampler appends); empty when there is none.
    """
    info = study_info(open_storage(storage), study)
    frame = pd.DataFrame(_records(info.attrs.get(PREDICTOR_QUALITY)))
    if frame.empty:
        return frame
    if "trials" not in frame.columns:
        frame.insert(0, "trials", np.arange(1, len(frame) + 1))
    if "model" not in frame.columns:
        frame["model"] = "predictor"
    return frame.sort_values("trials").reset_index(drop=True)


def predicted_frame(storage: Storage | str, study: str) -> pd.DataFrame:
    """Measured against predicted values: ``trial``, ``metric``, ``measured``, ``predicted``."""
    trials = trials_frame(open_storage(storage), study, params=False)
    rows = []
    for col in trials.columns:
        name = str(col)
        if not name.startswith(PREDICTED_PREFIX):
            continue
        metric = name[len(PREDICTED_PREFIX) :]
        if metric not in trials.columns:
            continue
        part = pd.DataFrame(
            {"trial": trials["trial"], "metric": metric, "measured": trials[metric], "predicted": trials[name]}
        )
        rows.append(part.dropna(subset=["measured", "predicted"]))
    if not rows:
        return pd.DataFrame(columns=["trial", "metric", "measured", "predicted"])
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# the trials table: server-side filtering, sorting and paging (DataTable's custom actions)

_OPERATORS = (
    ("s>=", ">="), ("s<=", "<="), ("s!=", "!="), ("s>", ">"), ("s<", "<"), ("s=", "="),
    ("i>=", ">="), ("i<=", "<="), ("i!=", "!="), ("i>", ">"), ("i<", "<"), ("i=", "="),
    (">=", ">="), ("<=", "<="), ("!=", "!="), (">", ">"), ("<", "<"), ("=", "="),
    ("ge", ">="), ("le", "<="), ("ne", "!="), ("gt", ">"), ("lt", "<"), ("eq", "="),
    ("scontains", "contains"), ("icontains", "contains"), ("contains", "contains"),
    ("datestartswith", "startswith"),
)  # fmt: skip
_CONDITION = re.compile(r"^\s*\{(?P<col>[^}]+)\}\s*(?P<rest>.*)$")


def parse_filter(query: str | None) -> list[tuple[str, str, str]]:
    """``{col} op value && ...`` (Dash DataTable's filter syntax) as (column, operator, value) triples."""
    out: list[tuple[str, str, str]] = []
    for part in (query or "").split(" && "):
        if not part.strip():
            continue
        m = _CONDITION.match(part)
        if not m:
            raise NasplatError(f"cannot read the filter '{part.strip()}'; write e.g. {{accuracy}} >= 0.8")
        col, rest = m.group("col"), m.group("rest").strip()
        match = next(
            (
                (token, name)
                for token, name in _OPERATORS
                if rest.startswith(token)
                and (not token[-1].isalpha() or rest[len(token) : len(token) + 1] in ("", " "))
            ),
            None,
        )
        if match is None:
            op, value = "=", rest
        else:
            op, value = match[1], rest[len(match[0]) :].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
            value = value[1:-1]
        out.append((col, op, value))
    return out


def query_trials(
    frame: pd.DataFrame,
    *,
    filter_query: str | None = None,
    sort_by: Sequence[Mapping[str, str]] | None = None,
    page: int = 0,
    page_size: int = 25,
) -> tuple[pd.DataFrame, int]:
    """One page of ``frame`` after filtering and sorting; also the number of matching rows."""
    rows = frame
    for col, op, value in parse_filter(filter_query):
        if col not in rows.columns:
            raise NasplatError(f"no column '{col}' to filter on")
        series = rows[col]
        if op in ("contains", "startswith"):
            text = series.astype(str)
            keep = text.str.contains(value, case=False, regex=False) if op == "contains" else text.str.startswith(value)
        else:
            target: Any = value
            if pd.api.types.is_numeric_dtype(series):
                try:
                    target = float(value)
                except ValueError:
                    raise NasplatError(f"column '{col}' holds numbers; '{value}' is not one") from None
            else:
                series = series.astype(str)
            keep = {
                "=": series == target,
                "!=": series != target,
                ">": series > target,
                "<": series < target,
                ">=": series >= target,
                "<=": series <= target,
            }[op]
        rows = rows[keep.fillna(False).astype(bool)]
    if sort_by:
        cols = [s["column_id"] for s in sort_by if s.get("column_id") in rows.columns]
        asc = [s.get("direction", "asc") == "asc" for s in sort_by if s.get("column_id") in rows.columns]
        if cols:
            rows = rows.sort_values(cols, ascending=asc, kind="stable", na_position="last")
    total = len(rows)
    start = max(page, 0) * page_size
    return rows.iloc[start : start + page_size], total


# --------------------------------------------------------------------------------------------------------------
# export


def export_command(url: str, study: str, trial: int, out_dir: str | Path, *, overwrite: bool = False) -> str:
    """The exact ``nasplat export`` command that writes trial ``trial`` of ``study`` as a bundle."""
    import shlex

    return (
        f"nasplat export --storage {shlex.quote(url)} --study {shlex.quote(study)} --trial {int(trial)} "
        f"--out {shlex.quote(str(out_dir))}" + (" --overwrite" if overwrite else "")
    )


def bundle_exists(out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds something (an export there needs ``overwrite``)."""
    return out_dir.is_dir() and any(out_dir.iterdir())


def bundle_zip(bundle: Path) -> bytes:
    """The bundle folder as a zip archive (files under ``<folder name>/``, sorted, fixed timestamps)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{bundle.name}/{path.relative_to(bundle).as_posix()}", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def run_export(storage: Storage | str, study: str, trial: int, out_dir: Path, *, overwrite: bool = False) -> Path:
    """Export trial ``trial`` through :func:`nasplat.export.export_trial`, reading the storage read-only."""
    import optuna
    import sqlalchemy.exc

    from nasplat.export import export_trial, pick_trial

    st = open_storage(storage)
    study_info(st, study)  # unknown or unreadable studies fail here, readably
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        kwargs: dict[str, Any] = {}
        url = st.readonly_url
        if url.startswith("sqlite"):
            # the file's own URL (so the study finds its run folder beside it), connected read-only
            import sqlite3
            from urllib.parse import quote

            from sqlalchemy.engine import make_url

            path = Path(str(make_url(st.url).database)).expanduser().resolve()
            url, uri = f"sqlite:///{path}", f"file:{quote(str(path))}?mode=ro"
            kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, timeout=20, check_same_thread=False)
        elif url.startswith("postgresql"):
            kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        ro = optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, skip_table_creation=True, skip_compatibility_check=True
        )
        loaded = optuna.load_study(study_name=study, storage=ro)
        frozen = pick_trial(loaded, str(int(trial)))
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise StorageError(f"storage '{st.display_url}' cannot be read: {first_line(exc)}") from None
    result = export_trial(loaded, frozen, Path(out_dir), overwrite=overwrite)
    return Path(result.bundle_dir)


def finite_or_none(value: Any) -> Any:
    """JSON-friendly: NaN and infinities become None."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value
