"""The study's record: every attribute key nasplat writes into an Optuna study, and their codecs.

Writers and readers of a study (the search, supernet training, fine-tuning, export, the CLI and the dashboard)
name attributes through this module, never by string literals of their own, so the record has one owner.

Study attributes::

    nasplat_format   written last when a study is created (other workers wait for it)
    nasplat_version  the code that created the study
    space, space_hash, space_file, space_spec, space_bases
                     the space's stored record (SearchSpace.to_record, split into keys; see space_attrs)
    family, objectives, run_dir, run_file, run_spec, checkpoint, dataset, estimator, sampler
    supernet:epoch:NNNN, supernet:checkpoint     supernet training history
    finetune:*       what ``nasplat finetune`` wrote

Trial attributes::

    arch_key, arch_string, provenance, rejected
    metric:NAME      every metric the estimator and the cost models measured
    finetune:NAME    stand-alone metrics written by ``nasplat finetune``
    predicted:NAME   what a guided sampler's predictor expected
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasplat.space import SearchSpace

STUDY_FORMAT = 1  # bumped when what nasplat writes into a study changes shape

# study attributes
FORMAT = "nasplat_format"
VERSION = "nasplat_version"
SPACE = "space"
SPACE_HASH = "space_hash"
SPACE_FILE = "space_file"
SPACE_SPEC = "space_spec"
SPACE_BASES = "space_bases"
FAMILY = "family"
OBJECTIVES = "objectives"
RUN_DIR = "run_dir"
STORAGE_DIR = "storage_dir"  # the SQLite file's folder when the study was written (to relocate copied studies)
RUN_FILE = "run_file"
RUN_SPEC = "run_spec"
CHECKPOINT = "checkpoint"
SUPERNET_CHECKPOINT = "supernet:checkpoint"
SUPERNET_EPOCH_PREFIX = "supernet:epoch:"

# trial attributes
ARCH_KEY = "arch_key"
ARCH_STRING = "arch_string"
PROVENANCE = "provenance"
REJECTED = "rejected"
METRIC_PREFIX = "metric:"
FINETUNE_PREFIX = "finetune:"
PREDICTED_PREFIX = "predicted:"
#: study: the last stand-alone check of the estimate (written by ``nasplat finetune``; see :func:`trust_line`)
FINETUNE_SUMMARY = "finetune:summary"


def space_attrs(space: SearchSpace) -> dict[str, Any]:
    """The study attributes that hold ``space``'s stored record."""
    rec = space.to_record()
    return {
        SPACE: rec["name"],
        SPACE_HASH: rec["hash"],
        SPACE_FILE: rec["file"],
        SPACE_SPEC: rec["spec"],
        SPACE_BASES: rec["bases"],
    }


def space_record(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The space record held by a study's attributes (studies written before ``space_bases`` existed too:
    their hash covered the declaration alone, and is checked as such)."""
    bases = attrs.get(SPACE_BASES)
    legacy = not isinstance(bases, dict)
    return {
        "name": attrs.get(SPACE),
        "hash": None if legacy else attrs.get(SPACE_HASH),
        "spec_hash": attrs.get(SPACE_HASH) if legacy else None,
        "file": attrs.get(SPACE_FILE),
        "spec": attrs.get(SPACE_SPEC),
        "bases": bases if isinstance(bases, dict) else {},
    }


def study_space(attrs: Mapping[str, Any], where: str) -> SearchSpace:
    """Rebuild the space a study searches, from its attributes."""
    from nasplat.space import space_from_record

    return space_from_record(space_record(attrs), where)


def local_path(attrs: Mapping[str, Any], value: Any, here: Any) -> Any:
    """A path the study recorded, as it is for the study where it is now: a study whose SQLite file has been
    moved or copied (``here``: the file's folder now) finds the paths that were inside its old folder inside
    the new one, and so reads and writes only there. None stays None; paths outside the folder stay as they are."""
    from pathlib import Path

    if value is None:
        return None
    p = Path(str(value))
    origin = attrs.get(STORAGE_DIR)
    if here is not None and isinstance(origin, str) and p.is_absolute() and p.is_relative_to(origin):
        return Path(here) / p.relative_to(origin)
    return p


def trial_metrics(attrs: Mapping[str, Any], prefix: str = METRIC_PREFIX) -> dict[str, float]:
    """A trial's metrics (``metric:NAME`` attributes, or another prefix) by name."""
    return {k[len(prefix) :]: float(v) for k, v in attrs.items() if k.startswith(prefix) and _is_number(v)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def trust_line(attrs: Mapping[str, Any]) -> str:
    """How far the study's estimate can be trusted, in one line, from its study attributes: the Kendall tau
    between the values the search optimised (inherited from the supernet) and stand-alone training of the
    architectures ``nasplat finetune`` trained, with how many there were; or how to measure it."""
    summary = attrs.get(FINETUNE_SUMMARY)
    if not isinstance(summary, Mapping) or not summary.get("trials"):
        return (
            "estimate trust: not measured (values are inherited from the supernet); measure it with "
            "`nasplat finetune --trial front+4 --from-scratch`"
        )
    tau_v, rho_v = (_finite_or_nan(summary.get(k)) for k in ("kendall_tau", "spearman"))
    n = len(summary["trials"])
    how = "trained from scratch" if summary.get("from_scratch") else "fine-tuned"
    if not math.isfinite(tau_v):
        return f"estimate trust: undefined over {n} architectures {how} (too few, or tied values)"
    return (
        f"estimate trust: Kendall tau {tau_v:.2f} (Spearman {rho_v:.2f}) "
        "between inherited and stand-alone "
        f"{summary.get('metric', 'accuracy')} over {n} architectures {how} (run '{summary.get('run', '?')}')"
    )


def _finite_or_nan(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan
