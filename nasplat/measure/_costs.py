"""Layer records (how a family describes a network to cost models and encoders) and the CostModel role."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

#: Storage width of every number format a layer may use.
FORMAT_BITS: dict[str, int] = {
    "float32": 32,
    "bfloat16": 16,
    "float16": 16,
    "fp8_e4m3": 8,
    "fp8_e5m2": 8,
    "int8": 8,
    "int4": 4,
    "int2": 2,
}

#: Ops a layer record may name. Weighted ops: conv2d, linear, attention (q/k/v/out projections), batchnorm,
#: layernorm. The rest move or combine activations.
LAYER_OPS = (
    "conv2d", "linear", "batchnorm", "layernorm", "relu", "gelu", "avgpool", "maxpool", "global_avgpool",
    "add", "attention", "matmul", "identity", "zero", "concat", "upsample",
)  # fmt: skip
_OPS = frozenset(LAYER_OPS)


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One layer of a stand-alone network, in the terms cost models count.

    Spatial sizes are of one sample (batch 1); ``in_hw``/``out_hw`` are (height, width). For ``attention``,
    ``heads`` is the head count and the token count is ``in_hw[0] * in_hw[1]``.
    """

    name: str
    op: str
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False
    heads: int = 0
    weight_format: str = "float32"
    act_format: str = "float32"
    extra: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise NasplatError(f"layer '{self.name}': unknown op '{self.op}'; allowed: {', '.join(LAYER_OPS)}")
        for fmt in (self.weight_format, self.act_format):
            if fmt not in FORMAT_BITS:
                raise NasplatError(
                    f"layer '{self.name}': unknown number format '{fmt}'; allowed: {', '.join(FORMAT_BITS)}"
                )

    @property
    def config_key(self) -> tuple[object, ...]:
        """Everything but the name: layers with equal keys cost the same (lookup tables index on it)."""
        return tuple((k, tuple(v) if isinstance(v, list) else v) for k in _CONFIG_FIELDS for v in (getattr(self, k),))


#: The fields of :class:`LayerRecord` that :attr:`~LayerRecord.config_key` holds (all but ``name``), in order.
_CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LayerRecord) if f.name != "name")


class CostModel(ABC):
    """Estimates hardware costs of an architecture on a device.

    ``metrics`` lists what ``estimate`` returns (units in the names: ``macs``, ``params_count``,
    ``latency_ms``...). ``devices`` lists the devices it knows (None: any device, costs do not depend on it).
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]

    def devices(self) -> list[str] | None:
        return None

    def check_device(self, device: str | None) -> None:
        """Refuse (one line) a device this model does not know, and any device for a model that has none."""
        allowed = self.devices()
        if allowed is None:
            if device is not None:
                raise NasplatError(
                    f"cost model '{self.name}' has no devices (its costs are the same on every machine), "
                    f"so device '{device}' means nothing to it; drop the device or pick a model that has devices"
                )
            return
        if device in allowed:
            return
        known = ", ".join(allowed) or "(none)"
        if device is None:
            raise NasplatError(f"cost model '{self.name}' needs a device; known: {known}")
        raise NasplatError(f"cost model '{self.name}' does not know device '{device}'; known: {known}")

    def formats(self, device: str | None = None) -> list[str] | None:
        """Number formats this model can cost on ``device`` (None: every format in :data:`FORMAT_BITS`)."""
        return None

    def check_formats(self, layers: Iterable[LayerRecord], device: str | None = None) -> None:
        """Refuse (one line) the first layer whose weight or activation format is not in :meth:`formats`."""
        allowed = self.formats(device)
        if allowed is None:
            return
        ok = frozenset(allowed)
        for rec in layers:
            for fmt in (rec.weight_format, rec.act_format):
                if fmt not in ok:
                    on = f" on device '{device}'" if device else ""
                    raise NasplatError(
                        f"cost model '{self.name}' does not support number format '{fmt}'{on} (layer '{rec.name}'); "
                        f"supported: {', '.join(allowed)}"
                    )

    @abstractmethod
    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        """Cost metrics of ``arch`` on ``device``."""
