"""Estimator: measures (or looks up) the quality metrics of architectures, in batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from nasplat.architecture import Architecture


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

    def provenance(self) -> dict[str, str]:
        """Where the numbers come from (checkpoint, table, dataset...), stored with every result."""
        return {"estimator": self.name}
