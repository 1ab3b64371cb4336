"""Predictor and Encoder roles: learn a metric (accuracy, latency, energy...) of architectures from a table.

An :class:`Encoder` turns architectures into a float32 feature matrix (one row each). A :class:`Predictor` is
fitted on architectures and their measured values, then predicts a mean (and a spread, when it has one) for
architectures it has not seen. Both are registered by name (``registry.register("encoder" | "predictor",
NAME)``); the implementations live in plugin folders (nasplat's own in ``predictors/``).

Extra per-architecture features (for example the log latencies the same architectures have on other
devices) travel beside the architectures as a matrix ``extra`` of shape ``(len(archs), k)``, given to both
``fit`` and ``predict``. :class:`PriorTable` builds that matrix from a table such as
``shared/data/nb201/latency.csv``.

A fitted predictor saves itself into a folder: ``predictor.json`` (the manifest: model name, parameters,
the space's declaration and hash, training provenance, small state) and model files in open formats
(safetensors, LightGBM text, CSV). Nothing is pickled. :func:`load_predictor` reads any saved predictor
back through the registry.

:func:`prediction_quality` is how a search tracks whether to trust a predictor: Kendall tau and Spearman
rank correlation between what it predicted and what was later measured.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from nasplat.errors import NasplatError, UnknownNameError

if TYPE_CHECKING:
    import pandas as pd

    from nasplat.space import Architecture, SearchSpace

#: File name of a saved predictor's manifest.
MANIFEST = "predictor.json"
#: The ``format`` a manifest declares, and its version.
FORMAT = "nasplat-predictor"
FORMAT_VERSION = 1
#: File name of a saved prior table (extra features) inside a predictor folder.
PRIOR_FILE = "prior.csv"


# --------------------------------------------------------------------------------------------------------------
# roles


class Encoder(ABC):
    """Turns architectures of a space into fixed-width float32 feature rows.

    ``canonical`` (default True): encode ``space.family.canonical(arch)``, so architectures that compute the
    same network (isomorphic cells, edges cut off by ``none``) get identical rows.
    """

    name: ClassVar[str]

    def __init__(self, *, canonical: bool = True) -> None:
        self.canonical = canonical

    def supports(self, space: SearchSpace) -> bool:
        """Whether this encoder can encode ``space`` (checks the family's capabilities, never its name)."""
        return True

    def requirement(self) -> str:
        """What a space must offer for :meth:`supports` to hold (for error messages)."""
        return "nothing"

    @abstractmethod
    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        """A ``(len(archs), width)`` float32 matrix."""

    def feature_names(self, space: SearchSpace) -> list[str]:
        """One name per column (default: ``<encoder>[i]``)."""
        if not hasattr(self, "_width"):
            self._width = int(self.encode(space, [space.sample(np.random.default_rng(0))]).shape[1])
        return [f"{self.name}[{i}]" for i in range(self._width)]

    def prepare(self, space: SearchSpace, archs: Sequence[Architecture]) -> list[Architecture]:
        """The architectures to encode: validated, and canonical if asked."""
        out = []
        for a in archs:
            if a.space != space.name:
                raise NasplatError(f"architecture belongs to space '{a.space}', not '{space.name}'")
            out.append(space.family.canonical(space, a) if self.canonical else a)
        return out


class Predictor(ABC):
    """Learns a metric of architectures: ``fit`` on measured ones, ``predict`` for unseen ones.

    ``extra`` (optional, shape ``(len(archs), k)``) adds per-architecture features beyond the encoding; a
    predictor fitted with ``k`` extra columns must be given the same ``k`` columns to predict. ``predict``
    returns ``(mean, std)``; ``std`` is None for models without a spread (``provides_std`` False).
    Implementations take their hyperparameters as keyword arguments of ``__init__`` and report them from
    :meth:`params`, which the manifest stores.
    """

    name: ClassVar[str]
    provides_std: ClassVar[bool] = False
    #: True: ``nasplat predictor fit --prior`` hands the whole prior table to :meth:`pretrain` (every row, raw
    #: values) instead of passing the prior as ``extra`` features of the fitted rows.
    pretrains_on_prior: ClassVar[bool] = False

    def pretrain(
        self, space: SearchSpace, archs: Sequence[Architecture], prior: np.ndarray, names: Sequence[str]
    ) -> None:
        """Learn from prior measurements (``prior``: one row per architecture, one column per ``names`` entry;
        NaN where not measured) before :meth:`fit` adapts to the target. Only for ``pretrains_on_prior``."""
        raise NasplatError(f"predictor '{self.name}' does not pretrain on a prior table")

    @abstractmethod
    def fit(
        self,
        space: SearchSpace,
        archs: Sequence[Architecture],
        y: Sequence[float] | np.ndarray,
        *,
        seed: int = 0,
        extra: np.ndarray | None = None,
    ) -> Predictor:
        """Fit on ``archs`` and their values ``y`` (seeded: the same seed gives the same model). Returns self."""

    @abstractmethod
    def predict(
        self, space: SearchSpace, archs: Sequence[Architecture], *, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(mean, std or None)``, float64 arrays of length ``len(archs)``."""

    def params(self) -> dict[str, Any]:
        """The JSON-able constructor arguments that recreate this (unfitted) predictor."""
        return {}

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the fitted predictor into ``directory`` (created if needed): manifest plus model files."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Predictor:
        """Read a predictor written by :meth:`save`."""


# --------------------------------------------------------------------------------------------------------------
# checks shared by implementations


def check_training_data(
    archs: Sequence[Architecture], y: Sequence[float] | np.ndarray, extra: np.ndarray | None, min_rows: int = 2
) -> tuple[np.ndarray, np.ndarray | None]:
    """``y`` as float64 and ``extra`` as float64 2-D, checked against ``archs`` (finite, matching lengths)."""
    yv = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(yv) != len(archs):
        raise NasplatError(f"got {len(archs)} architectures but {len(yv)} target values")
    if len(yv) < min_rows:
        raise NasplatError(f"need at least {min_rows} training architectures, got {len(yv)}")
    if not np.all(np.isfinite(yv)):
        raise NasplatError(f"target values must be finite numbers; {int((~np.isfinite(yv)).sum())} are not")
    return yv, check_extra(archs, extra)


def check_extra(
    archs: Sequence[Architecture], extra: np.ndarray | None, expected: int | None = None
) -> np.ndarray | None:
    """``extra`` as a float64 ``(len(archs), k)`` matrix; ``expected`` is the ``k`` the model was fitted with."""
    if extra is None:
        if expected:
            raise NasplatError(
                f"this predictor was fitted with {expected} extra feature column(s); pass them to predict"
            )
        return None
    x = np.asarray(extra, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != len(archs):
        raise NasplatError(f"extra features must be a ({len(archs)}, k) matrix, got shape {tuple(x.shape)}")
    if expected is not None and x.shape[1] != expected:
        raise NasplatError(f"this predictor was fitted with {expected} extra feature column(s), got {x.shape[1]}")
    if not np.all(np.isfinite(x)):
        raise NasplatError("extra features must be finite numbers")
    return x


# --------------------------------------------------------------------------------------------------------------
# encoders by name


def make_encoder(space: SearchSpace, spec: str, *, canonical: bool = True) -> list[Encoder]:
    """The encoders named in ``spec`` (names joined by ``+``, e.g. ``"path+onehot+costs"``), each checked
    to support ``space``; unknown or unsupported names list the ones that fit."""
    from nasplat import registry

    names = [s.strip() for s in spec.split("+") if s.strip()]
    if not names:
        raise NasplatError(f"empty encoder spec '{spec}'; allowed: {', '.join(supported_encoders(space))}")
    out: list[Encoder] = []
    for name in names:
        try:
            cls = registry.get("encoder", name)
        except UnknownNameError:
            raise UnknownNameError("encoder", name, supported_encoders(space)) from None
        enc: Encoder = cls(canonical=canonical)
        if not enc.supports(space):
            raise NasplatError(
                f"encoder '{name}' does not support space '{space.name}' (family '{space.spec.family}'): it needs "
                f"{enc.requirement()}; encoders for this space: {', '.join(supported_encoders(space))}"
            )
        out.append(enc)
    return out


def supported_encoders(space: SearchSpace) -> list[str]:
    """Names of the registered encoders that can encode ``space``."""
    from nasplat import registry

    return [n for n in registry.available("encoder") if registry.get("encoder", n)().supports(space)]


def encode(
    space: SearchSpace, archs: Sequence[Architecture], spec: str = "onehot", *, canonical: bool = True
) -> np.ndarray:
    """Concatenated encodings of ``archs`` by the encoders named in ``spec`` (see :func:`make_encoder`)."""
    encoders = make_encoder(space, spec, canonical=canonical)
    parts = [e.encode(space, archs) for e in encoders]
    return np.hstack(parts).astype(np.float32) if parts else np.zeros((len(archs), 0), np.float32)


# --------------------------------------------------------------------------------------------------------------
# predictors by name, saving and loading


def make_predictor(name: str, **params: Any) -> Predictor:
    """A fresh predictor registered as ``name``; unknown names and parameters list the allowed ones."""
    from nasplat import registry

    return registry.build("predictor", name, options=params)  # type: ignore[no-any-return]


def predictor_parameters(cls: type) -> list[str]:
    """The keyword parameters a predictor class takes, following ``**kwargs`` passed on to its bases."""
    from nasplat import registry

    return registry.option_names(cls) or []


def available_predictors() -> list[str]:
    from nasplat import registry

    return registry.available("predictor")


def space_record(space: SearchSpace) -> dict[str, Any]:
    """What a manifest stores about the space: its stored record (name, hash, declaration, base spaces)."""
    return space.to_record()


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``predictor.json`` into ``directory`` (created), adding the format tag and nasplat's version."""
    from nasplat import __version__

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "nasplat_version": __version__, **manifest}
    path = d / MANIFEST
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a saved predictor; a missing or foreign folder gives a one-line error."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise NasplatError(f"{directory}: no such predictor folder")
    if not path.is_file():
        raise NasplatError(f"{directory}: not a saved predictor (no {MANIFEST})")
    from nasplat.files import read_json

    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NasplatError(f"{path}: not a nasplat predictor manifest (format must be '{FORMAT}')")
    if data.get("format_version") != FORMAT_VERSION:
        raise NasplatError(
            f"{path}: predictor format version {data.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    _check_manifest_paths(directory, data)
    return data


#: manifest keys whose values name files or folders of the saved predictor (at any depth, besides the space's
#: record, which keeps the path its declaration was loaded from as provenance)
_PATH_KEYS = ("file", "path", "dir", "members")
_PATH_SUFFIXES = ("_file", "_path", "_dir")


def manifest_path(directory: str | Path, value: Any, key: str) -> Path:
    """The file a manifest entry names, inside the predictor folder ``directory``; a name that is absolute or
    resolves (through ``..`` or a symbolic link) outside it is refused with one line naming the manifest and key."""
    where = Path(directory) / MANIFEST
    if not isinstance(value, str) or not value or "\x00" in value:
        raise NasplatError(f"{where}: '{key}' must name a file inside the predictor folder, got {value!r}")
    root = Path(directory).resolve()
    target = (root / value).resolve()
    if Path(value).is_absolute() or not target.is_relative_to(root):
        raise NasplatError(
            f"{where}: '{key}' points outside the predictor folder ({value!r}); a saved predictor names only "
            f"files inside its own folder"
        )
    return target


def _check_manifest_paths(directory: str | Path, node: Any, key: str = "") -> None:
    """Every file or folder name in a manifest stays inside ``directory`` (see :func:`manifest_path`)."""
    if isinstance(node, dict):
        for k, v in node.items():
            name = str(k)
            sub = f"{key}.{name}" if key else name
            if not key and name == "space":
                continue
            if name in _PATH_KEYS or name.endswith(_PATH_SUFFIXES):
                for i, item in enumerate(v if isinstance(v, list) else [v]):
                    if isinstance(item, str):  # a name; anything else is a setting (an ensemble's 'members': 5)
                        manifest_path(directory, item, f"{sub}[{i}]" if isinstance(v, list) else sub)
            else:
                _check_manifest_paths(directory, v, sub)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_manifest_paths(directory, item, f"{key}[{i}]")


def update_manifest(directory: str | Path, **entries: Any) -> None:
    """Add or replace top-level entries of a saved predictor's manifest."""
    data = read_manifest(directory)
    data.update(entries)
    (Path(directory) / MANIFEST).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def load_predictor(directory: str | Path) -> Predictor:
    """Any saved predictor, by the model name in its manifest (looked up in the registry)."""
    from nasplat import registry

    manifest = read_manifest(directory)
    model = manifest.get("model")
    if not isinstance(model, str):
        raise NasplatError(f"{Path(directory) / MANIFEST}: 'model' must name the predictor")
    cls = registry.get("predictor", model)
    return cls.load(directory)  # type: ignore[no-any-return]


def space_from_manifest(directory: str | Path) -> SearchSpace:
    """The space a saved predictor was fitted on, rebuilt from the declaration stored in its manifest."""
    from nasplat.space import space_from_record

    manifest = read_manifest(directory)
    rec = manifest.get("space")
    if not isinstance(rec, dict) or not isinstance(rec.get("spec"), dict):
        raise NasplatError(f"{Path(directory) / MANIFEST}: no space declaration stored")
    return space_from_record(rec, f"{Path(directory) / MANIFEST} (space)")


def check_space(expected: Mapping[str, Any], space: SearchSpace, what: str = "predictor") -> None:
    """Raise unless ``space`` is the space (name and hash) recorded in ``expected``."""
    if expected.get("name") != space.name or expected.get("hash") != space.hash:
        raise NasplatError(
            f"this {what} was fitted on space '{expected.get('name')}' (hash {expected.get('hash')}), "
            f"not on '{space.name}' (hash {space.hash})"
        )


# --------------------------------------------------------------------------------------------------------------
# tables


def archs_from_column(space: SearchSpace, values: Sequence[Any], where: str) -> list[Architecture]:
    """Parse architecture strings (the family's string form, key or JSON) from a table column.

    Every row must parse; the error names the first bad row and how many there are.
    """
    out: list[Architecture] = []
    bad: list[tuple[int, str]] = []
    first_msg = ""
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            bad.append((i, repr(v)))
            first_msg = first_msg or "empty or not text"
            continue
        try:
            out.append(space.from_string(v))
        except NasplatError as exc:
            bad.append((i, v))
            first_msg = first_msg or str(exc)
    if bad:
        row = bad[0][0]
        more = f" ({len(bad)} bad rows in all)" if len(bad) > 1 else ""
        raise NasplatError(f"{where}: row {row + 2}: {first_msg}{more}")
    return out


class PriorTable:
    """Per-architecture prior measurements (e.g. latency on other devices) used as extra features.

    ``frame`` holds an architecture column and numeric columns; :meth:`features` looks architectures up and
    returns ``log(value)`` of each column (values must be positive), ready for ``fit(..., extra=...)``.
    """

    def __init__(
        self, space: SearchSpace, frame: pd.DataFrame, arch_column: str, columns: Sequence[str], source: str
    ) -> None:
        self.space = space
        self.arch_column = arch_column
        self.columns = list(columns)
        self.source = source
        if not self.columns:
            raise NasplatError(f"{source}: no numeric prior columns besides '{arch_column}'")
        values = frame[self.columns].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            bad = [c for c in self.columns if not np.all(np.isfinite(frame[c])) or (frame[c] <= 0).any()]
            raise NasplatError(
                f"{source}: prior columns must hold positive numbers (log features); bad: {', '.join(bad)}"
            )
        self.frame = frame[[arch_column, *self.columns]].reset_index(drop=True)
        archs = archs_from_column(space, list(self.frame[arch_column]), source)
        self._row = {a: i for i, a in enumerate(archs)}
        self._log = np.log(values)

    @classmethod
    def from_csv(
        cls, space: SearchSpace, path: str | Path, arch_column: str, exclude: Sequence[str] = ()
    ) -> PriorTable:
        """Every numeric column of ``path`` except ``arch_column`` and ``exclude`` (e.g. the target)."""
        import pandas as pd

        frame = read_table(path, [arch_column])
        cols = [
            c
            for c in frame.columns
            if c != arch_column and c not in exclude and pd.api.types.is_numeric_dtype(frame[c])
        ]
        return cls(space, frame, arch_column, cols, str(path))

    def features(self, archs: Sequence[Architecture]) -> np.ndarray:
        """``(len(archs), len(columns))`` log values; every architecture must be in the table."""
        rows = [self._row.get(a, -1) for a in archs]
        missing = [a for a, r in zip(archs, rows, strict=True) if r < 0]
        if missing:
            raise NasplatError(
                f"{self.source}: {len(missing)} architecture(s) are not in the prior table, e.g. "
                f"'{self.space.to_string(missing[0])}'"
            )
        return self._log[np.asarray(rows, dtype=np.int64)]

    def feature_names(self) -> list[str]:
        return [f"log({c})" for c in self.columns]

    def rows(self) -> tuple[list[Architecture], np.ndarray]:
        """Every architecture of the table and its raw values (rows in table order)."""
        archs = sorted(self._row, key=self._row.__getitem__)
        return archs, np.exp(self._log)

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write ``prior.csv`` into ``directory``; returns the manifest entry that :meth:`load` reads."""
        self.frame.to_csv(Path(directory) / PRIOR_FILE, index=False)
        return {"file": PRIOR_FILE, "arch_column": self.arch_column, "columns": self.columns, "source": self.source}

    @classmethod
    def load(cls, space: SearchSpace, directory: str | Path, entry: Mapping[str, Any]) -> PriorTable:
        path = manifest_path(directory, entry.get("file", PRIOR_FILE), "prior.file")
        frame = read_table(path, [str(entry["arch_column"]), *map(str, entry["columns"])])
        return cls(space, frame, str(entry["arch_column"]), list(entry["columns"]), str(entry.get("source", path)))


def read_table(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """A CSV table with the ``required`` columns (one-line errors naming the file and the columns it has)."""
    from nasplat.files import read_csv

    p = Path(path)
    if not p.is_file():
        raise NasplatError(f"{p}: file not found")
    frame = read_csv(p)  # the one reader: bytes, size, header, duplicate columns, empty tables
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise NasplatError(
            f"{p}: no column {', '.join(repr(m) for m in missing)}; columns: {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise NasplatError(f"{p}: the table has no rows")
    return frame


def target_values(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A numeric, finite target column as float64 (one-line error naming the first bad row)."""
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise NasplatError(
            f"{where}: column '{column}' must hold numbers; row {int(bad[0]) + 2} holds {frame[column].iloc[bad[0]]!r}"
            + (f" ({len(bad)} bad rows in all)" if len(bad) > 1 else "")
        )
    return values


# --------------------------------------------------------------------------------------------------------------
# quality


def prediction_quality(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """Rank agreement of predictions with measurements: ``{"kendall_tau": ..., "spearman": ...}``.

    Kendall's tau-b and Spearman's rho (ties handled); NaN when there are fewer than two pairs or either side
    is constant. A search records these on architectures the predictor had not seen when they were evaluated.
    """
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if len(t) != len(p):
        raise NasplatError(f"prediction_quality: {len(t)} true values but {len(p)} predictions")
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return {"kendall_tau": math.nan, "spearman": math.nan}
    return {"kendall_tau": float(kendalltau(t, p).statistic), "spearman": float(spearmanr(t, p).statistic)}
