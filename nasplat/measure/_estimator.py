"""Estimator: measures (or looks up) the quality metrics of architectures, in batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from nasplat.space import Architecture

if TYPE_CHECKING:
    from nasplat.space import SearchSpace


class Estimator(ABC):
    """Turns architectures into metric dictionaries.

    Implementations: inherited supernet weights, tabular benchmark look-up, training from scratch.
    ``evaluate`` takes a batch so that one worker can amortise loading (a checkpoint, a table) over many.
    """

    name: ClassVar[str]

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
