"""Estimator: measures (or looks up) the quality metrics of architectures, in batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.space import Architecture

if TYPE_CHECKING:
    from nasplat.space import SearchSpace


class Estimator(ABC):
    """Turns architectures into metric dictionaries.

    Implementations: inherited supernet weights, tabular benchmark look-up, training from scratch.
    ``evaluate`` takes a batch so that one worker can amortise loading (a checkpoint, a table) over many.
    """

    name: ClassVar[str]
    #: True: built from a trained supernet; a search trains (or loads) one first and passes ``checkpoint``,
    #: ``data`` and ``seed`` (and ``cache_dir`` where the estimator takes it)
    needs_supernet: ClassVar[bool] = False

    @abstractmethod
    def metrics(self) -> dict[str, str]:
        """The metrics ``evaluate`` returns, each mapped to ``"maximize"`` or ``"minimize"``."""

    @abstractmethod
    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        """Metrics for each architecture, in order."""

    @classmethod
    def declared_metrics(cls, space: SearchSpace, options: Mapping[str, Any]) -> dict[str, str] | None:
        """The metrics an instance built with ``options`` would return (as :meth:`metrics`), told cheaply:
        without loading data, training or building anything heavy. A run file's objectives are checked against
        them before a search starts (``nasplat check``). None: this estimator cannot tell before it is built
        (its objectives are then checked once it is). Raise :class:`~nasplat.errors.NasplatError` for an
        option that is already known to be wrong (a missing file, say)."""
        return None

    def provenance(self) -> dict[str, str]:
        """Where the numbers come from (checkpoint, table, dataset...), stored with every result."""
        return {"estimator": self.name}


def rank_percentiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each value's mid-rank percentile in ``reference``: ``(#{r < v} + #{r = v}/2 + 1/2) / (n + 1)``, in (0, 1);
    NaN counts as ``-inf`` (lowest). Monotone in ``v``, so one architecture's percentile needs only ``reference``:
    how estimators put scores of different scales on one (AZ-NAS's aggregation, the ``combined`` estimator)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
    r = np.sort(np.nan_to_num(np.asarray(reference, dtype=np.float64), nan=-np.inf))
    below = np.searchsorted(r, v, side="left")
    upto = np.searchsorted(r, v, side="right")
    return (below + 0.5 * (upto - below) + 0.5) / (len(r) + 1)
