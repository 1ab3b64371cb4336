"""Lookup-table cost model: per-layer latencies measured on this machine, summed, plus a learned overhead.

``nasplat profile --space SPACE --device NAME`` (:func:`build_table`) collects every distinct layer
configuration of a space (:attr:`~nasplat.measure.LayerRecord.config_key`: everything but the layer's name),
builds each as a single PyTorch module and times it in isolation on this machine (fixed threads, warm-up,
median of repeated blocks). It then times a few whole networks of the space (seeded sample) and fits the
per-network overhead that the layer sum misses (Python dispatch between modules, allocations)::

    latency_ms = sum of the layers' latencies + overhead_ms + per_layer_ms * number_of_layers

(least squares on the measured networks; with fewer than 4 networks only ``overhead_ms``). The table is a CSV:
``#`` lines at the top carry the provenance (device, CPU model, threads, engine, batch size, library versions,
space name and hash, date, how the overhead was fitted); every row repeats device, space, space hash, engine,
threads and batch size, so rows stay traceable when tables are joined.

:class:`LUTCostModel` (``lut``) reads tables (by default every ``*.csv`` in :func:`default_table_dir`) and
answers for the (space, device) pairs they cover; a layer configuration missing from the table, or a table built
for another version of the space, is refused with a one-line error saying how to rebuild it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import CostModel, LayerRecord
from nasplat.registry import register

from .measured import (
    ENGINES,
    LOCAL_DEVICE,
    MEASURED_FORMATS,
    MeasuredCostModel,
    OnnxMeasuredCostModel,
    local_device,
    measure_module,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nasplat.space import Architecture, SearchSpace

#: Environment variable naming the folder of lookup tables.
TABLE_DIR_ENV = "NASPLAT_LUT_DIR"
#: Ops :func:`layer_module` can build and time.
PROFILED_OPS = (
    "conv2d", "linear", "batchnorm", "layernorm", "relu", "gelu", "avgpool", "maxpool", "global_avgpool",
    "add", "attention", "matmul", "identity", "zero", "concat", "upsample",
)  # fmt: skip
#: Spaces with more members than this are profiled from a seeded sample of architectures.
ENUMERATE_MAX = 200_000
#: Columns of a table, in order (``config`` is the JSON of the layer's ``config_key``).
COLUMNS = (
    "kind", "op", "in_channels", "out_channels", "in_h", "in_w", "out_h", "out_w", "kernel", "stride", "groups",
    "bias", "heads", "weight_format", "act_format", "extra", "latency_ms", "latency_iqr_ms", "uses",
    "device", "space", "space_hash", "engine", "threads", "batch_size", "config",
)  # fmt: skip

ConfigKey = tuple[object, ...]


def default_table_dir() -> Path:
    """``$NASPLAT_LUT_DIR``, else ``lut/`` in nasplat's cache folder (``$NASPLAT_CACHE_DIR``, ``~/.cache/nasplat``)."""
    env = os.environ.get(TABLE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from nasplat.datasets import cache_dir

    return cache_dir() / "lut"


def default_table_path(space_name: str, device: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", space_name)
    return default_table_dir() / f"{safe}--{device}.csv"


# ------------------------------------------------------------------------------------------------ one layer
def _padding(in_size: int, out_size: int, kernel: int, stride: int) -> int:
    return max(0, ((out_size - 1) * stride + kernel - in_size + 1) // 2)


def layer_module(rec: LayerRecord, batch_size: int = 1) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...]]:
    """A module (or function) computing ``rec`` alone and a random input for it (seeded).

    Convolutions and pools infer their padding from the input and output sizes (``same`` for stride 1).
    """
    import torch
    from torch import nn

    if rec.op not in PROFILED_OPS:
        raise NasplatError(
            f"layer '{rec.name}': op '{rec.op}' cannot be profiled; profiled ops: {', '.join(PROFILED_OPS)}"
        )
    for fmt in (rec.weight_format, rec.act_format):
        if fmt not in MEASURED_FORMATS:
            raise NasplatError(
                f"layer '{rec.name}': number format '{fmt}' cannot be timed on this machine's engines; "
                f"supported: {', '.join(MEASURED_FORMATS)}"
            )
    gen = torch.Generator().manual_seed(0)
    b, ci, co = batch_size, rec.in_channels, rec.out_channels
    (ih, iw), (oh, ow) = rec.in_hw, rec.out_hw
    k, s = rec.kernel, rec.stride
    pad = (_padding(ih, oh, k, s), _padding(iw, ow, k, s))

    def img(c: int, h: int, w: int) -> torch.Tensor:
        return torch.randn(b, c, h, w, generator=gen)

    def tokens(c: int) -> torch.Tensor:
        return torch.randn(b, ih * iw, c, generator=gen)

    op = rec.op
    module: Callable[..., Any]
    if op == "conv2d":
        module = nn.Conv2d(ci, co, k, stride=s, padding=pad, groups=rec.groups, bias=rec.bias)
        return module, (img(ci, ih, iw),)
    if op == "linear":
        module = nn.Linear(ci, co, bias=rec.bias)
        x = torch.randn(b, ci, generator=gen) if (ih, iw) == (1, 1) else tokens(ci)
        return module, (x,)
    if op == "batchnorm":
        return nn.BatchNorm2d(co), (img(ci, ih, iw),)
    if op == "layernorm":
        return nn.LayerNorm(ci), (tokens(ci),)
    if op in ("relu", "gelu"):
        return (nn.ReLU() if op == "relu" else nn.GELU()), (img(ci, ih, iw),)
    if op == "avgpool":
        return nn.AvgPool2d(k, stride=s, padding=pad, count_include_pad=False), (img(ci, ih, iw),)
    if op == "maxpool":
        return nn.MaxPool2d(k, stride=s, padding=pad), (img(ci, ih, iw),)
    if op == "global_avgpool":
        return nn.AdaptiveAvgPool2d(1), (img(ci, ih, iw),)
    if op == "add":
        return torch.add, (img(ci, ih, iw), img(ci, ih, iw))
    if op == "identity":
        return nn.Identity(), (img(ci, ih, iw),)
    if op == "zero":
        return torch.zeros_like, (img(ci, ih, iw),)
    if op == "attention":
        heads = rec.heads or 1
        attn = nn.MultiheadAttention(ci, heads, bias=rec.bias, batch_first=True)
        return (lambda x: attn(x, x, x, need_weights=False)[0]), (tokens(ci),)
    if op == "matmul":
        return torch.matmul, (tokens(ci), torch.randn(ci, co, generator=gen))
    if op == "concat":
        return (lambda x, y: torch.cat([x, y], dim=1)), (img(ci, ih, iw), img(co - ci, ih, iw))
    return nn.Upsample(size=(oh, ow), mode="nearest"), (img(ci, ih, iw),)  # upsample


def _as_module(fn: Callable[..., Any]) -> nn.Module:
    from torch import nn

    if isinstance(fn, nn.Module):
        return fn

    class _Fn(nn.Module):
        def forward(self, *xs: Any) -> Any:
            return fn(*xs)

    return _Fn()


def time_layer(
    rec: LayerRecord,
    *,
    engine: str = "eager",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 15,
) -> tuple[float, float]:
    """Median and IQR (ms) of one layer alone, timed in blocks long enough for the clock."""
    fn, inputs = layer_module(rec, batch_size)
    module = _as_module(fn)
    m = measure_module(module, inputs, engine=engine, threads=threads, warmup=warmup, repeats=repeats, inner=None)
    return m.latency_ms, m.latency_iqr_ms


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class LookupTable:
    """Per-layer latencies of one space on one device, and the fitted per-network overhead."""

    device: str
    space: str
    space_hash: str
    engine: str
    threads: int
    batch_size: int
    entries: dict[ConfigKey, tuple[float, float]]  # config_key -> (latency_ms, latency_iqr_ms)
    overhead_ms: float = 0.0
    per_layer_ms: float = 0.0
    uses: dict[ConfigKey, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def layer_sum_ms(self, records: Iterable[LayerRecord]) -> tuple[float, int]:
        """Sum of the layers' table latencies and the number of layers; unknown configurations are refused."""
        total = 0.0
        n = 0
        entries = self.entries
        for rec in records:
            hit = entries.get(rec.config_key)
            if hit is None:
                raise NasplatError(
                    f"lookup table for space '{self.space}' on device '{self.device}' has no entry for layer "
                    f"'{rec.name}' ({_describe(rec)}); rebuild it with "
                    f"`nasplat profile --space {self.space} --device {self.device}`"
                )
            total += hit[0]
            n += 1
        return total, n

    def estimate(self, records: Iterable[LayerRecord]) -> float:
        """Predicted latency (ms) of a network given as layer records."""
        total, n = self.layer_sum_ms(records)
        return total + self.overhead_ms + self.per_layer_ms * n

    def fit_overhead(
        self, layer_sums_ms: Sequence[float], n_layers: Sequence[int], measured_ms: Sequence[float]
    ) -> None:
        """Fit ``overhead_ms`` and ``per_layer_ms`` so that sum + overhead matches whole-network measurements."""
        y = np.asarray(measured_ms, float) - np.asarray(layer_sums_ms, float)
        n = np.asarray(n_layers, float)
        if len(y) == 0:
            self.overhead_ms = self.per_layer_ms = 0.0
            return
        if len(y) >= 4 and np.ptp(n) > 0:
            a = np.stack([np.ones_like(n), n], axis=1)
            coef = np.linalg.lstsq(a, y, rcond=None)[0]
            self.overhead_ms, self.per_layer_ms = float(coef[0]), float(coef[1])
        else:
            self.overhead_ms, self.per_layer_ms = float(np.median(y)), 0.0

    # files ----------------------------------------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        common = {
            "device": self.device,
            "space": self.space,
            "space_hash": self.space_hash,
            "engine": self.engine,
            "threads": self.threads,
            "batch_size": self.batch_size,
        }
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            f.write("# nasplat lookup table: per-layer latencies measured alone, plus a fitted per-network overhead\n")
            for name, value in self.provenance.items():
                f.write(f"# {name}: {json.dumps(value) if not isinstance(value, str) else value}\n")
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for key, (lat, iqr) in self.entries.items():
                d: dict[str, Any] = dict(key)  # type: ignore[arg-type]
                (ih, iw), (oh, ow) = d["in_hw"], d["out_hw"]
                writer.writerow(
                    {
                        "kind": "layer", "op": d["op"], "in_channels": d["in_channels"],
                        "out_channels": d["out_channels"], "in_h": ih, "in_w": iw, "out_h": oh, "out_w": ow,
                        "kernel": d["kernel"], "stride": d["stride"], "groups": d["groups"], "bias": d["bias"],
                        "heads": d["heads"], "weight_format": d["weight_format"], "act_format": d["act_format"],
                        "extra": json.dumps(d["extra"]), "latency_ms": repr(lat), "latency_iqr_ms": repr(iqr),
                        "uses": self.uses.get(key, ""), **common, "config": json.dumps(key),
                    }
                )  # fmt: skip
            for kind, value in (("overhead", self.overhead_ms), ("per_layer_overhead", self.per_layer_ms)):
                writer.writerow({"kind": kind, "latency_ms": repr(value), **common})
        tmp.replace(path)
        return path


def _describe(rec: LayerRecord) -> str:
    return (
        f"{rec.op} {rec.in_channels}->{rec.out_channels} ch, {rec.in_hw[0]}x{rec.in_hw[1]}->"
        f"{rec.out_hw[0]}x{rec.out_hw[1]}, kernel {rec.kernel}, stride {rec.stride}"
    )


def _key_from_json(text: str) -> ConfigKey:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return tuple((k, tup(v)) for k, v in json.loads(text))


def read_table(path: str | Path) -> LookupTable:
    """Read a table written by :meth:`LookupTable.write`; malformed files are one-line errors naming the file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise NasplatError(f"{path}: lookup table not found") from None
    provenance: dict[str, Any] = {}
    body = []
    for line in lines:
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition(": ")
            if sep:
                provenance[key] = value
        elif line.strip():
            body.append(line)
    rows = list(csv.DictReader(body))
    if not rows or any(c not in rows[0] for c in ("kind", "latency_ms", "device", "space", "config")):
        raise NasplatError(f"{path}: not a nasplat lookup table (expected columns: {', '.join(COLUMNS)})")
    first = rows[0]
    try:
        table = LookupTable(
            device=first["device"],
            space=first["space"],
            space_hash=first["space_hash"],
            engine=first["engine"],
            threads=int(first["threads"]),
            batch_size=int(first["batch_size"]),
            entries={},
            provenance=provenance,
        )
        for i, row in enumerate(rows, start=2):
            if row["device"] != table.device or row["space"] != table.space:
                raise NasplatError(f"{path}: row {i} is for another device or space than the first row")
            kind = row["kind"]
            if kind == "layer":
                config = _key_from_json(row["config"])
                table.entries[config] = (float(row["latency_ms"]), float(row["latency_iqr_ms"] or 0))
                if row.get("uses"):
                    table.uses[config] = int(row["uses"])
            elif kind == "overhead":
                table.overhead_ms = float(row["latency_ms"])
            elif kind == "per_layer_overhead":
                table.per_layer_ms = float(row["latency_ms"])
            else:
                raise NasplatError(
                    f"{path}: row {i}: unknown kind '{kind}'; allowed: layer, overhead, per_layer_overhead"
                )
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise NasplatError(f"{path}: malformed lookup table ({type(exc).__name__}: {exc})") from None
    return table


# ------------------------------------------------------------------------------------------------ profiling
def distinct_layers(
    space: SearchSpace, *, seed: int = 0, sample: int = 20_000
) -> tuple[dict[ConfigKey, LayerRecord], dict[ConfigKey, int], int]:
    """Every distinct layer configuration of ``space``: config key -> one record having it, config key -> how
    many networks use it, and how many architectures were looked at (all up to :data:`ENUMERATE_MAX`, else a
    seeded sample of ``sample``).
    """
    size = space.size()
    if size <= ENUMERATE_MAX:
        archs: Iterable[Architecture] = space.enumerate()
    else:
        rng = np.random.default_rng(seed)
        archs = (space.sample(rng) for _ in range(sample))
    found: dict[ConfigKey, LayerRecord] = {}
    uses: dict[ConfigKey, int] = {}
    # records shared between architectures (the cell family shares them) are keyed once; holding each record
    # keeps its id from being reused while it is in the table
    by_id: dict[int, tuple[LayerRecord, ConfigKey]] = {}
    n = 0
    for arch in archs:
        n += 1
        per_net: set[ConfigKey] = set()
        for rec in space.family.layers(space, arch):
            hit = by_id.get(id(rec))
            if hit is None:
                key = rec.config_key
                found.setdefault(key, rec)
                by_id[id(rec)] = (rec, key)
            else:
                key = hit[1]
            per_net.add(key)
        for key in per_net:
            uses[key] = uses.get(key, 0) + 1
    return found, uses, n


def build_table(
    space: SearchSpace,
    device: str = LOCAL_DEVICE,
    *,
    engine: str = "eager",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 15,
    networks: int = 10,
    network_repeats: int = 20,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> LookupTable:
    """Time every distinct layer of ``space`` on this machine, then fit the overhead on ``networks`` networks."""
    if engine not in ENGINES:
        raise NasplatError(f"unknown engine '{engine}'; allowed: {', '.join(ENGINES)}")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", device):
        raise NasplatError(f"device name '{device}' may use only letters, digits, '_', '.' and '-'")
    say = log or (lambda _msg: None)
    layers, uses, n_archs = distinct_layers(space, seed=seed)
    say(f"space '{space.name}': {len(layers)} distinct layer configurations in {n_archs:,} architectures")
    entries: dict[ConfigKey, tuple[float, float]] = {}
    for i, (key, rec) in enumerate(layers.items(), start=1):
        entries[key] = time_layer(
            rec, engine=engine, threads=threads, batch_size=batch_size, warmup=warmup, repeats=repeats
        )
        if i % 10 == 0 or i == len(layers):
            say(f"  timed {i}/{len(layers)} layer configurations")
    info = local_device()
    table = LookupTable(
        device=device,
        space=space.name,
        space_hash=space.hash,
        engine=engine,
        threads=threads,
        batch_size=batch_size,
        entries=entries,
        uses=uses,
    )
    sums: list[float] = []
    counts: list[int] = []
    measured: list[float] = []
    if networks > 0:
        cls = MeasuredCostModel if engine == "eager" else OnnxMeasuredCostModel
        model = cls(threads=threads, batch_size=batch_size, warmup=warmup, repeats=network_repeats, seed=seed)
        rng = np.random.default_rng(seed)
        for j in range(networks):
            arch = space.sample(rng)
            total, n = table.layer_sum_ms(space.family.layers(space, arch))
            sums.append(total)
            counts.append(n)
            measured.append(model.measure(space, arch).latency_ms)
            say(f"  network {j + 1}/{networks}: measured {measured[-1]:.3f} ms, layer sum {total:.3f} ms")
        table.fit_overhead(sums, counts, measured)
    fit = [table.overhead_ms + table.per_layer_ms * n + s for s, n in zip(sums, counts, strict=True)]
    rel = [abs(p / m - 1) for p, m in zip(fit, measured, strict=True)]
    table.provenance = {
        "device": device,
        "measured_on": f"{info['cpu_model']} ({info['logical_cpus']} logical CPUs, {info['machine']})",
        "device_slug": info["device_slug"],
        "engine": engine,
        "threads": threads,
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "torch": info["torch"],
        "onnxruntime": info["onnxruntime"],
        "python": info["python"],
        "space": space.name,
        "space_hash": space.hash,
        "architectures_scanned": n_archs,
        "layer_configurations": len(entries),
        "overhead_fit": (
            f"{len(measured)} networks (seed {seed}, {network_repeats} repeats): overhead_ms={table.overhead_ms:.5f}, "
            f"per_layer_ms={table.per_layer_ms:.6f}, median |error| on them {100 * float(np.median(rel)) if rel else math.nan:.1f}%"
        ),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return table


# ------------------------------------------------------------------------------------------------ cost model
@register("cost_model", "lut")
class LUTCostModel(CostModel):
    """Sum of per-layer latencies from lookup tables plus the table's fitted overhead.

    ``tables``: table files to use (default: every ``*.csv`` in :func:`default_table_dir`). Devices: those the
    tables were built for; formats: float32 (what the measuring engines time).
    """

    name: ClassVar[str] = "lut"
    metrics: ClassVar[tuple[str, ...]] = ("latency_ms",)

    def __init__(self, tables: Sequence[str | Path] | None = None) -> None:
        if tables is None:
            folder = default_table_dir()
            paths = sorted(folder.glob("*.csv")) if folder.is_dir() else []
        else:
            paths = [Path(t) for t in tables]
        self.tables: dict[tuple[str, str], LookupTable] = {}
        self._paths: dict[tuple[str, str], Path] = {}
        for p in paths:
            t = read_table(p)
            key = (t.space, t.device)
            if key in self.tables:
                raise NasplatError(
                    f"two lookup tables for space '{t.space}' on device '{t.device}': {self._paths[key]}, {p}"
                )
            self.tables[key] = t
            self._paths[key] = p

    @classmethod
    def build(
        cls, space: SearchSpace, device: str = LOCAL_DEVICE, *, out: str | Path | None = None, **options: Any
    ) -> Path:
        """:func:`build_table` and write it to ``out`` (default :func:`default_table_path`); returns the path."""
        table = build_table(space, device, **options)
        return table.write(out if out is not None else default_table_path(space.name, device))

    def devices(self) -> list[str] | None:
        return sorted({d for _, d in self.tables})

    def formats(self, device: str | None = None) -> list[str] | None:
        return list(MEASURED_FORMATS)

    def table(self, space: SearchSpace, device: str | None) -> LookupTable:
        self.check_device(device)
        t = self.tables.get((space.name, str(device)))
        if t is None:
            have = sorted(s for s, d in self.tables if d == device)
            raise NasplatError(
                f"no lookup table for space '{space.name}' on device '{device}' (tables for it: "
                f"{', '.join(have) or 'none'}); build one with `nasplat profile --space {space.name} --device {device}`"
            )
        if t.space_hash != space.hash:
            raise NasplatError(
                f"lookup table {self._paths[(space.name, str(device))]} was built for another version of space "
                f"'{space.name}' (hash {t.space_hash}, now {space.hash}); rebuild it with `nasplat profile`"
            )
        return t

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        table = self.table(space, device)
        records = space.family.layers(space, arch)
        self.check_formats(records, device)
        return {"latency_ms": table.estimate(records)}


__all__ = [
    "COLUMNS",
    "LUTCostModel",
    "LookupTable",
    "build_table",
    "default_table_dir",
    "distinct_layers",
    "layer_module",
    "read_table",
    "time_layer",
]
