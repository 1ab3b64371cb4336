"""Accuracy estimators: inherited supernet weights, and look-up in a tabular benchmark.

``SupernetEstimator`` ("supernet") loads a trained supernet checkpoint once and evaluates each architecture
with its inherited weights (BatchNorm statistics recalibrated on training batches first, so the result does not
depend on what was evaluated before). ``TabularEstimator`` ("tabular") reads a benchmark table (CSV) once
and looks architectures up in it, e.g. NAS-Bench-201's accuracies.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nasplat.errors import NasplatError
from nasplat.measure import Estimator
from nasplat.model import Calibration
from nasplat.registry import register

if TYPE_CHECKING:
    import pandas as pd

    from nasplat.datasets import DataSpec
    from nasplat.space import Architecture, SearchSpace

DIRECTIONS = ("maximize", "minimize")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


@register("estimator", "supernet")
class SupernetEstimator(Estimator):
    """Metrics of subnets with weights inherited from a trained supernet.

    The supernet is built from the space (``space.family.build_supernet``) and the checkpoint (a checkpoint
    folder or a training run folder) and the data splits (``nasplat.datasets.load_splits(data)``) are loaded once.
    A checkpoint trained on images of another shape or class count than ``data``'s, or a damaged one, is refused
    with a NasplatError before any evaluation.
    ``evaluate`` recalibrates BatchNorm on ``calib_batches`` batches of the train split, then measures the
    family's task metrics on the whole validation split, per architecture (``nasplat.model.evaluate_subnet``).
    """

    name: ClassVar[str] = "supernet"
    needs_supernet: ClassVar[bool] = True

    def __init__(
        self,
        space: SearchSpace,
        checkpoint: str | Path,
        data: DataSpec,
        *,
        eval_batch_size: int = 256,
        calib_batches: int = 10,
        seed: int = 0,
    ) -> None:
        from nasplat.datasets import load_splits
        from nasplat.model import check_checkpoint_data, load_checkpoint, read_checkpoint_state, resolve_checkpoint

        if eval_batch_size < 1:
            raise NasplatError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if calib_batches < 0:
            raise NasplatError(f"calib_batches must be >= 0, got {calib_batches}")
        self.space = space
        self.checkpoint = resolve_checkpoint(checkpoint)  # a run folder resolves to its latest checkpoint
        self.data = data
        self.eval_batch_size = eval_batch_size
        self.calib_batches = calib_batches
        self.seed = seed
        self.train_data, self.val_data = load_splits(data)
        # a supernet trained on other images (shape, classes) measures nothing: refuse before any work
        check_checkpoint_data(read_checkpoint_state(self.checkpoint), self.checkpoint, space, self.train_data)
        self.task = space.family.task(space)
        self.supernet = space.family.build_supernet(space)
        self.checkpoint_info: dict[str, Any] = dict(load_checkpoint(self.supernet, self.checkpoint) or {})
        self.supernet.eval()

    def metrics(self) -> dict[str, str]:
        return dict(self.task.metrics)

    @classmethod
    def declared_metrics(cls, space: SearchSpace, options: Mapping[str, Any]) -> dict[str, str] | None:
        """The family's task metrics (no checkpoint or data needed)."""
        return dict(space.family.task(space).metrics)

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        from nasplat.model import evaluate_subnet

        out = []
        for arch in archs:
            self.space.validate(arch)
            out.append(
                evaluate_subnet(
                    self.supernet,
                    arch,
                    self.task,
                    self.val_data,
                    self.train_data,
                    batch_size=self.eval_batch_size,
                    calib_batches=self.calib_batches,
                    seed=self.seed,
                )
            )
        return out

    def provenance(self) -> dict[str, str]:
        space_hash = _checkpoint_space_hash(self.checkpoint_info)
        return {
            "estimator": self.name,
            "checkpoint": str(self.checkpoint.resolve()),
            "checkpoint_space_hash": str(space_hash if space_hash is not None else "unknown"),
            "checkpoint_epochs": str(self.checkpoint_info.get("epochs_done", "unknown")),
            "space": self.space.name,
            "space_hash": self.space.hash,
            "dataset": self.data.name,
            "n_val": str(self.data.n_val),
            "data_seed": str(self.data.seed),
            "seed": str(self.seed),
            **Calibration(self.calib_batches, self.eval_batch_size, self.seed).provenance(),
        }


@register("estimator", "tabular")
class TabularEstimator(Estimator):
    """Look-up of architectures in a benchmark table (a CSV file).

    ``arch_column`` holds each architecture in any form ``space.from_string`` parses (the family's string
    form, an architecture key, or JSON). ``columns`` maps each metric column to ``"maximize"`` or
    ``"minimize"``. Without it every numeric column other than ``arch_column`` is a metric, to maximize when
    its name contains ``acc`` (``val_acc``, ``accuracy``...) and to minimize otherwise (losses, latencies,
    errors): pass ``columns`` whenever that rule is wrong for a table.

    Rows are indexed by each architecture's exact key and by its family-canonical form's key, so a table that
    lists one representative per equivalence class (e.g. isomorphic cells) still answers every member.
    An exact match wins over a canonical one. Unknown architectures raise a NasplatError naming them.
    """

    name: ClassVar[str] = "tabular"

    def __init__(
        self,
        space: SearchSpace,
        table: str | Path,
        arch_column: str = "arch",
        columns: dict[str, str] | None = None,
    ) -> None:
        self.space = space
        self.table = Path(table)
        self.arch_column = arch_column
        frame = _read_table(self.table)
        self.columns: dict[str, str] = _metric_columns(self.table, frame, arch_column, columns)
        names = list(self.columns)
        values = frame[names].to_numpy(dtype=float)
        self._rows: list[dict[str, float]] = [dict(zip(names, map(float, row), strict=True)) for row in values]

        family = space.family
        self._exact: dict[str, int] = {}
        self._canonical: dict[str, int] = {}
        for i, text in enumerate(frame[arch_column].tolist()):
            if not isinstance(text, str):
                raise NasplatError(f"benchmark table {self.table}, row {i + 2}: '{arch_column}' is empty")
            try:
                arch = space.from_string(text)
            except NasplatError as exc:
                raise NasplatError(f"benchmark table {self.table}, row {i + 2}: {exc}") from None
            key = arch.key
            prev = self._exact.setdefault(key, i)
            if prev != i and not _same_row(self._rows[prev], self._rows[i]):
                raise NasplatError(
                    f"benchmark table {self.table}: architecture '{text}' appears in rows {prev + 2} and {i + 2} "
                    f"with different values"
                )
            self._canonical.setdefault(family.canonical(space, arch).key, i)
        self._digest = _file_digest(self.table)

    def __len__(self) -> int:
        return len(self._rows)

    def metrics(self) -> dict[str, str]:
        return dict(self.columns)

    @classmethod
    def declared_metrics(cls, space: SearchSpace, options: Mapping[str, Any]) -> dict[str, str] | None:
        """The table's metric columns, read from the CSV without parsing its architectures."""
        if "table" not in options:
            return None  # a missing required option is reported by the options check
        table = Path(options["table"])
        return _metric_columns(table, _read_table(table), options.get("arch_column", "arch"), options.get("columns"))

    def lookup(self, arch: Architecture) -> dict[str, float]:
        """The table's row for ``arch`` (exact match first, then its canonical form)."""
        if arch.space != self.space.name:
            raise NasplatError(f"architecture belongs to space '{arch.space}', not '{self.space.name}'")
        i = self._exact.get(arch.key)
        if i is None:
            i = self._canonical.get(self.space.family.canonical(self.space, arch).key)
        if i is None:
            raise NasplatError(f"architecture {self.space.to_string(arch)} is not in benchmark table {self.table}")
        return dict(self._rows[i])

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        return [self.lookup(a) for a in archs]

    def provenance(self) -> dict[str, str]:
        return {
            "estimator": self.name,
            "table": str(self.table.resolve()),
            "table_sha256": self._digest,
            "arch_column": self.arch_column,
            "columns": ",".join(self.columns),
            "space": self.space.name,
            "space_hash": self.space.hash,
        }


def _read_table(table: Path) -> pd.DataFrame:
    """A benchmark table read as CSV; a missing or unreadable file is one line naming it."""
    from nasplat.files import read_csv

    if not table.is_file():
        raise NasplatError(f"benchmark table {table}: file not found")
    return read_csv(table)  # the one reader: bytes, size, header, duplicate columns, empty tables


def _metric_columns(
    table: Path, frame: pd.DataFrame, arch_column: str, columns: dict[str, str] | None
) -> dict[str, str]:
    """The metric columns of a benchmark table with their directions (see :class:`TabularEstimator`)."""
    import pandas as pd

    present = [str(c) for c in frame.columns]
    if arch_column not in frame.columns:
        raise NasplatError(
            f"benchmark table {table} has no column '{arch_column}'; columns present: {', '.join(present)}"
        )
    numeric = [str(c) for c in frame.columns if c != arch_column and pd.api.types.is_numeric_dtype(frame[c])]
    if columns is None:
        if not numeric:
            raise NasplatError(
                f"benchmark table {table} has no numeric column besides '{arch_column}'; "
                f"columns present: {', '.join(present)}"
            )
        columns = {c: "maximize" if "acc" in c.lower() else "minimize" for c in numeric}
    elif not columns:
        raise NasplatError("columns must name at least one metric column")
    for col, direction in columns.items():
        if col not in frame.columns:
            raise NasplatError(f"benchmark table {table} has no column '{col}'; columns present: {', '.join(present)}")
        if col == arch_column or col not in numeric:
            raise NasplatError(f"benchmark table {table}: column '{col}' is not numeric")
        if direction not in DIRECTIONS:
            raise NasplatError(f"column '{col}': unknown direction '{direction}'; allowed: {', '.join(DIRECTIONS)}")
    return dict(columns)


def _checkpoint_space_hash(info: dict[str, Any]) -> str | None:
    """The space hash a checkpoint's metadata records (``space_hash``, or ``space: {hash: ...}``)."""
    if info.get("space_hash") is not None:
        return str(info["space_hash"])
    space = info.get("space")
    if isinstance(space, dict) and space.get("hash") is not None:
        return str(space["hash"])
    return None


def _same_row(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)
