"""Analytical cost model: counts MACs, parameters, memory and bit operations from layer records alone.

No network is built: the family describes an architecture as a list of :class:`~nasplat.measure.LayerRecord`
(``space.family.layers(space, arch)``) and :func:`count_costs` adds up closed-form counts per layer.
Every count is for one sample (batch 1) and independent of the device.

What each metric means (all summed over layers unless said otherwise):

``macs``
    Multiply-accumulates. ``conv2d``: ``out_h*out_w*out_channels*(in_channels/groups)*kernel²``;
    ``linear``: ``out_h*out_w*in_channels*out_channels`` (``out_hw`` is ``(1, 1)`` for a plain vector, the
    token grid for token-wise projections); ``attention``: the four ``C×C`` projections over ``T`` tokens
    plus ``Q·Kᵀ`` and ``A·V`` (``4*T*C² + 2*T²*C``, ``T = in_h*in_w``, ``C = in_channels``); ``matmul``:
    ``out_h*out_w*in_channels*out_channels``. Everything else (normalisation, activations, pooling, adds)
    counts 0: those are element-wise or reductions, not multiply-accumulates, and inference usually folds BN.
``params_count``
    Learnable parameters. ``conv2d``: ``out_channels*(in_channels/groups)*kernel²`` (+ ``out_channels`` for
    a bias); ``linear``: ``in*out`` (+ ``out``); ``attention``: ``4*C²`` (+ ``4*C``); ``batchnorm`` and
    ``layernorm``: ``2*channels`` (scale and shift) unless the record's ``extra`` says ``("affine", 0)``.
    Buffers such as BN running statistics are not parameters.
``model_bytes``
    ``params_count`` of each layer times its ``weight_format`` width, over 8.
``activation_bytes``
    The sum over layers of each layer's output activation size (``out_channels*out_h*out_w`` elements in the
    layer's ``act_format``): the memory traffic of writing every intermediate once. ``identity`` and
    ``zero`` layers produce no new tensor and count 0.
``peak_activation_bytes``
    The largest ``input + output`` activation size of any single layer: a lower bound on the working
    memory an inference needs (live skip tensors are not tracked by layer records).
``bops``
    Bit operations: per layer ``macs × weight bits × activation bits`` (``32*32*macs`` for float32).

A record may override its own counts through ``extra`` with ``("macs", n)`` and ``("params_count", n)``,
for ops whose cost the closed forms above do not capture.

Per-layer costs are cached by the record's configuration (everything but its name: the same information as
:attr:`~nasplat.measure.LayerRecord.config_key`) and by record object (families such as the cell family share
immutable records between architectures, so a network is then counted with C-level look-ups), and the totals
are cached per architecture, so repeated and similar architectures cost a dictionary look-up. Records are
frozen; one changed in place after it was counted (``object.__setattr__``) keeps its cached cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, ClassVar

from nasplat.errors import NasplatError
from nasplat.measure import FORMAT_BITS, LAYER_OPS, CostModel, LayerRecord
from nasplat.registry import register

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

#: The metrics :func:`count_costs` and :class:`AnalyticalCostModel` return, in this order.
METRICS: tuple[str, ...] = (
    "macs",
    "params_count",
    "model_bytes",
    "activation_bytes",
    "peak_activation_bytes",
    "bops",
)

# Every LayerRecord field except ``name``: the same content as ``LayerRecord.config_key`` without the cost
# of ``dataclasses.asdict`` (which deep-copies), so caching per layer stays cheap.
_CONFIG_FIELDS = tuple(f for f in LayerRecord.__dataclass_fields__ if f != "name")
_config_of = attrgetter(*_CONFIG_FIELDS)

_NORM_OPS = frozenset({"batchnorm", "layernorm"})
_NO_NEW_TENSOR = frozenset({"identity", "zero"})

# (macs, params_count, model_bytes, activation_bytes, in+out bytes, bops) of one layer configuration
_LayerCost = tuple[float, float, float, float, float, float]
_layer_cache: dict[tuple[object, ...], _LayerCost] = {}
_LAYER_CACHE_MAX = 200_000


def _layer_cost(rec: LayerRecord) -> _LayerCost:
    """Closed-form costs of one layer (see the module docstring)."""
    op = rec.op
    if op not in LAYER_OPS:  # records validate themselves; this guards hand-made or mutated ones
        raise NasplatError(f"layer '{rec.name}': unknown op '{op}'; allowed: {', '.join(LAYER_OPS)}")
    for fmt in (rec.weight_format, rec.act_format):
        if fmt not in FORMAT_BITS:
            raise NasplatError(f"layer '{rec.name}': unknown number format '{fmt}'; allowed: {', '.join(FORMAT_BITS)}")
    cin, cout = rec.in_channels, rec.out_channels
    in_px = rec.in_hw[0] * rec.in_hw[1]
    out_px = rec.out_hw[0] * rec.out_hw[1]
    extra = dict(rec.extra)
    macs = 0
    params = 0
    if op == "conv2d":
        if rec.groups < 1 or cin % rec.groups or cout % rec.groups:
            raise NasplatError(
                f"layer '{rec.name}': groups={rec.groups} must divide in_channels={cin} and out_channels={cout}"
            )
        per_out = (cin // rec.groups) * rec.kernel * rec.kernel
        macs = out_px * cout * per_out
        params = cout * per_out + (cout if rec.bias else 0)
    elif op == "linear":
        macs = out_px * cin * cout
        params = cin * cout + (cout if rec.bias else 0)
    elif op == "attention":
        tokens = in_px
        macs = 4 * tokens * cin * cin + 2 * tokens * tokens * cin
        params = 4 * cin * cin + (4 * cin if rec.bias else 0)
    elif op == "matmul":
        macs = out_px * cin * cout
    elif op in _NORM_OPS:
        params = 0 if extra.get("affine", 1) == 0 else 2 * cout
    macs_f = float(extra.get("macs", macs))
    params_f = float(extra.get("params_count", params))
    w_bits = FORMAT_BITS[rec.weight_format]
    a_bits = FORMAT_BITS[rec.act_format]
    out_bytes = 0.0 if op in _NO_NEW_TENSOR else cout * out_px * a_bits / 8
    in_bytes = cin * in_px * a_bits / 8
    return (macs_f, params_f, params_f * w_bits / 8, out_bytes, in_bytes + out_bytes, macs_f * w_bits * a_bits)


def layer_costs(rec: LayerRecord) -> _LayerCost:
    """``(macs, params_count, model_bytes, activation_bytes, in+out bytes, bops)`` of one layer (cached per
    configuration)."""
    key = _config_of(rec)
    try:
        cost = _layer_cache.get(key)
    except TypeError:  # a record holding a list (unhashable): fall back to the normalised key
        key = rec.config_key
        cost = _layer_cache.get(key)
    if cost is None:
        cost = _layer_cost(rec)
        if len(_layer_cache) >= _LAYER_CACHE_MAX:
            _layer_cache.clear()
        _layer_cache[key] = cost
    return cost


# Per record object: ``id(record) -> costs``, with the records themselves kept alive in ``_by_id_records`` so
# that no other object can take an id while it is in the table. Families that share record objects between
# architectures (the cell family does) are then counted with C-level look-ups only.
_by_id: dict[int, _LayerCost] = {}
_by_id_records: list[LayerRecord] = []
_BY_ID_MAX = 100_000


def _costs_of(records: list[LayerRecord] | tuple[LayerRecord, ...]) -> list[_LayerCost]:
    try:
        return list(map(_by_id.__getitem__, map(id, records)))
    except KeyError:
        pass
    out = []
    for rec in records:
        cost = _by_id.get(id(rec))
        if cost is None:
            cost = layer_costs(rec)
            if len(_by_id) >= _BY_ID_MAX:
                _by_id.clear()
                _by_id_records.clear()
            _by_id[id(rec)] = cost
            _by_id_records.append(rec)
        out.append(cost)
    return out


def count_costs(layers: Iterable[LayerRecord]) -> dict[str, float]:
    """Sum the analytical costs of a network's layer records (batch 1); keys are :data:`METRICS`."""
    records = layers if isinstance(layers, (list, tuple)) else list(layers)
    if not records:
        return dict.fromkeys(METRICS, 0.0)
    macs, params, model_b, act_b, peaks, bops = zip(*_costs_of(records), strict=True)
    return {
        "macs": sum(macs, 0.0),
        "params_count": sum(params, 0.0),
        "model_bytes": sum(model_b, 0.0),
        "activation_bytes": sum(act_b, 0.0),
        "peak_activation_bytes": max(*peaks, 0.0),
        "bops": sum(bops, 0.0),
    }


@register("cost_model", "analytical")
class AnalyticalCostModel(CostModel):
    """Device-independent counts (MACs, parameters, bytes, BOPs) from the family's layer records.

    See the module docstring for the exact definition of each metric. Totals are cached per architecture
    (up to ``cache_size`` of them; the cache is cleared when full), keyed by the space's name and hash, so a
    changed declaration never reuses stale numbers.
    """

    name: ClassVar[str] = "analytical"
    metrics: ClassVar[tuple[str, ...]] = METRICS

    def __init__(self, cache_size: int = 500_000) -> None:
        self.cache_size = cache_size
        self._cache: dict[tuple[str, str], dict[Architecture, dict[str, float]]] = {}

    def devices(self) -> list[str] | None:
        return None

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        """Costs of ``arch`` (batch 1); ``device`` is accepted and ignored (the counts do not depend on it)."""
        per_space = self._cache.get((space.name, space.hash))
        if per_space is None:
            per_space = self._cache.setdefault((space.name, space.hash), {})
        costs = per_space.get(arch)
        if costs is None:
            if arch.space != space.name:
                raise NasplatError(f"architecture belongs to space '{arch.space}', not '{space.name}'")
            costs = count_costs(space.family.layers(space, arch))
            if len(per_space) >= self.cache_size:
                per_space.clear()
            per_space[arch] = costs
        return dict(costs)

    def estimate_many(
        self, space: SearchSpace, archs: Iterable[Architecture], device: str | None = None
    ) -> list[dict[str, float]]:
        """:meth:`estimate` for each architecture, in order."""
        return [self.estimate(space, a, device) for a in archs]
