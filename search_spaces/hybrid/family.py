"""The hybrid CNN-transformer family (after BossNAS's hybrid space), registered as family ``hybrid``.

A network is a conv stem, a sequence of blocks, each a residual conv block or a transformer block on the
feature map's tokens, and a linear classifier (see :mod:`.standalone`). Each block's kind, width, kernel size
(conv), attention heads and MLP ratio (attn) are searched, and so are the blocks where the resolution halves
(dimension labels: :mod:`.spec`). The supernet holds every block at its largest size and runs slices of it
(:mod:`.supernet`).

String form: one token per block, separated by spaces; ``c<width>k<kernel>`` is a conv block,
``a<width>h<heads>r<mlp_ratio>`` an attn block, and a leading ``/`` marks a block that halves the resolution,
e.g. ``c16k3 /a32h2r2 c32k5 /a48h4r4``. Settings that do not apply to a block's kind (kernel of an attn
block, heads and MLP ratio of a conv block) do not change the network: :meth:`HybridFamily.canonical` sets
them to their first choice, and the string form leaves them out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from nasplat.errors import NasplatError
from nasplat.measure import LayerRecord
from nasplat.model import ClassificationTask, Family, MacroSettings, seeded
from nasplat.registry import register

from .spec import (
    FIELDS_OF,
    arch_config,
    base_config,
    block_label,
    check,
    counts,
    down_label,
    mlp_hidden,
    supernet_plan,
)
from .standalone import needs_projection, plan, strided
from .supernet import HybridSupernet

if TYPE_CHECKING:
    from nasplat.model import Task
    from nasplat.space import Architecture, SearchSpace, Value


class HybridMacro(MacroSettings):
    """Fixed settings of a hybrid space (``macro:`` in its file)."""

    stem_channels: int = Field(ge=1, description="output channels of the 3x3 conv stem")
    stem_stride: Literal[1, 2] = Field(default=1, description="stride of the stem (2 halves the input first)")
    head_dim: int = Field(default=16, ge=1, description="channels per attention head (q/k/v width = heads * head_dim)")


_CONV_TOKEN = re.compile(r"^(/?)c(\d+)k(\d+)$")
_ATTN_TOKEN = re.compile(r"^(/?)a(\d+)h(\d+)r([0-9.]+)$")


def _ratio_text(ratio: Value) -> str:
    return f"{float(ratio):g}"


@register("family", "hybrid")
class HybridFamily(Family):
    """Residual conv blocks and transformer blocks in one sequence, with elastic sizes (see module docstring)."""

    name: ClassVar[str] = "hybrid"
    macro_model: ClassVar[type[MacroSettings]] = HybridMacro

    def check_space(self, space: SearchSpace) -> None:
        check(space)

    # text forms ----------------------------------------------------------------------------------------------
    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        tokens = []
        for b in arch_config(space, arch)["blocks"]:
            mark = "/" if b["stride"] == 2 else ""
            if b["type"] == "conv":
                tokens.append(f"{mark}c{b['width']}k{b['kernel']}")
            else:
                i = len(tokens) + 1
                tokens.append(f"{mark}a{b['width']}h{b['heads']}r{_ratio_text(arch[block_label(i, 'mlp_ratio')])}")
        return " ".join(tokens)

    def from_string(self, space: SearchSpace, text: str) -> Architecture:
        text = text.strip()
        if "=" in text:  # the generic key form
            return super().from_string(space, text)
        n, d = counts(space)
        bad = f"'{text}' is not a hybrid architecture string (expected e.g. 'c16k3 /a32h2r2 c32k5')"
        tokens = text.split()
        if len(tokens) != n:
            raise NasplatError(f"{bad}: space '{space.name}' has {n} blocks, the string {len(tokens)}")
        values: dict[str, Value] = {}
        downs: list[int] = []
        for i, token in enumerate(tokens, start=1):
            conv, attn = _CONV_TOKEN.match(token), _ATTN_TOKEN.match(token)
            if conv:
                mark, fields = conv.group(1), {"type": "conv", "width": conv.group(2), "kernel": conv.group(3)}
            elif attn:
                mark, fields = attn.group(1), {"type": "attn", "width": attn.group(2), "heads": attn.group(3)}
                fields["mlp_ratio"] = attn.group(4)
            else:
                raise NasplatError(
                    f"{bad}: block {i} ('{token}') is neither 'c<width>k<kernel>' nor 'a<width>h<heads>r<ratio>'"
                )
            if mark:
                downs.append(i)
            for field, raw in fields.items():
                label = block_label(i, field)
                if label not in space.labels:
                    raise NasplatError(f"{bad}: block {i} cannot be '{fields['type']}' in space '{space.name}'")
                allowed = space.dimension(label).choices
                match = [c for c in allowed if (_ratio_text(c) if field == "mlp_ratio" else str(c)) == raw]
                if not match:
                    raise NasplatError(
                        f"'{text}': {label} = {raw} is not in space '{space.name}'; allowed: {', '.join(map(str, allowed))}"
                    )
                values[label] = match[0]
        if len(downs) != d:
            raise NasplatError(f"{bad}: space '{space.name}' halves the resolution {d} times, the string {len(downs)}")
        for j, at in enumerate(downs, start=1):
            values[down_label(j)] = at
        self._fill_unused(space, values)
        return space.make(values)

    def canonical(self, space: SearchSpace, arch: Architecture) -> Architecture:
        """``arch`` with the settings its blocks' kinds do not use set to their first choice."""
        space.validate(arch)
        values = arch.as_dict()
        self._fill_unused(space, values)
        return space.make(values)

    @staticmethod
    def _fill_unused(space: SearchSpace, values: dict[str, Value]) -> None:
        """Set every present dimension a block's kind does not use to its first choice (in place)."""
        n, _ = counts(space)
        labels = set(space.labels)
        for i in range(1, n + 1):
            kind = str(values[block_label(i, "type")])
            for other, fields in FIELDS_OF.items():
                if other == kind:
                    continue
                for field in fields:
                    label = block_label(i, field)
                    if label in labels:
                        values[label] = space.dimension(label).choices[0]

    def describe(self, space: SearchSpace, arch: Architecture) -> dict[str, object]:
        """The string forms, the choices, the macro settings, and one entry per block (for a block strip):
        ``label``, ``kind``, ``active``, the block's settings, its input resolution and whether it downsamples."""
        cfg = arch_config(space, arch)
        values = arch.as_dict()
        blocks = []
        for i, (b, (_c_in, _c_out, hw)) in enumerate(zip(cfg["blocks"], plan(cfg), strict=True), start=1):
            entry: dict[str, object] = {"index": i, "kind": b["type"], "active": True, "width": b["width"]}
            if b["type"] == "conv":
                entry["kernel"] = b["kernel"]
                entry["label"] = f"{i}: conv {b['width']} k{b['kernel']}"
            else:
                entry.update(
                    heads=b["heads"], mlp_ratio=values[block_label(i, "mlp_ratio")], mlp_hidden=b["mlp_hidden"]
                )
                entry["label"] = f"{i}: attn {b['width']} h{b['heads']}"
            entry["downsample"] = b["stride"] == 2
            if b["stride"] == 2:
                entry["label"] = f"{entry['label']} /2"
            entry["input_hw"] = list(hw)
            blocks.append(entry)
        return {
            "string": self.to_string(space, arch),
            "canonical": self.to_string(space, self.canonical(space, arch)),
            "choices": arch.as_dict(),
            "blocks": blocks,
            "macro": base_config(space),
        }

    # networks ------------------------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> HybridSupernet:
        with seeded(seed):
            return HybridSupernet(space, base_config(space), supernet_plan(space))

    def task(self, space: SearchSpace) -> Task:
        return ClassificationTask()

    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        """(largest, smallest) for the sandwich rule.

        Largest: every ordered setting at its largest choice, every downsample at its latest block, and each
        block of the kind with more parameters at those settings (the earlier-declared kind on a tie).
        Smallest: the smallest choices, the earliest downsamples, and each block of the kind with fewer
        parameters at the smallest settings.
        """
        return self._extreme(space, largest=True), self._extreme(space, largest=False)

    def _extreme(self, space: SearchSpace, *, largest: bool) -> Architecture:
        pick = max if largest else min
        values: dict[str, Value] = {}
        for dim in space.dimensions:
            if dim.ordered:
                values[dim.label] = pick(dim.choices, key=float)
        n, _ = counts(space)
        head_dim = int(space.macro.head_dim)  # type: ignore[attr-defined]
        c_in = int(space.macro.stem_channels)  # type: ignore[attr-defined]
        for i in range(1, n + 1):
            kinds = [str(k) for k in space.dimension(block_label(i, "type")).choices]
            width = int(values[block_label(i, "width")])  # type: ignore[arg-type]
            sizes = []
            for kind in kinds:
                if kind == "conv":
                    k = int(values[block_label(i, "kernel")])  # type: ignore[arg-type]
                    b = {"type": "conv", "width": width, "kernel": k, "stride": 1}
                else:
                    heads = int(values[block_label(i, "heads")])  # type: ignore[arg-type]
                    hidden = mlp_hidden(float(values[block_label(i, "mlp_ratio")]), width)
                    b = {"type": "attn", "width": width, "heads": heads, "mlp_hidden": hidden, "stride": 1}
                sizes.append(_params(block_records("b", b, c_in, (1, 1), head_dim)))
            best = sizes.index(max(sizes)) if largest else sizes.index(min(sizes))
            values[block_label(i, "type")] = kinds[best]
            c_in = width
        self._fill_unused(space, values)
        return space.make(values)

    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        """The stand-alone network at batch 1, named as its modules are.

        An attn block's attention is described by its parts: ``linear`` q, k, v and output projections over
        the tokens, and two ``matmul`` records (``attn.scores``: ``Q·Kᵀ``, ``attn.mix``: ``A·V``; ``heads``
        set), so that cost models count a q/k/v width (``heads * head_dim``) that differs from the block's width.
        The softmax is not recorded (no layer op for it).
        """
        key = (space.hash, arch.choices)
        cache: dict[Any, tuple[LayerRecord, ...]] = self.__dict__.setdefault("_layers_cache", {})
        records = cache.get(key)
        if records is None:
            records = tuple(config_records(arch_config(space, arch)))
            if len(cache) >= 20_000:
                cache.clear()
            cache[key] = records
        return list(records)


# layer records ------------------------------------------------------------------------------------------------


def _conv(
    name: str, c_in: int, c_out: int, kernel: int, stride: int, in_hw: tuple[int, int], *, groups: int = 1,
    bias: bool = False,
) -> LayerRecord:  # fmt: skip
    out_hw = (strided(in_hw[0], stride), strided(in_hw[1], stride))
    return LayerRecord(
        name, "conv2d", c_in, c_out, in_hw, out_hw, kernel=kernel, stride=stride, groups=groups, bias=bias
    )


def _same(name: str, op: str, c: int, hw: tuple[int, int]) -> LayerRecord:
    return LayerRecord(name, op, c, c, hw, hw)


def _linear(name: str, c_in: int, c_out: int, hw: tuple[int, int]) -> LayerRecord:
    return LayerRecord(name, "linear", c_in, c_out, hw, hw, bias=True)


def block_records(prefix: str, b: dict[str, Any], c_in: int, hw: tuple[int, int], head_dim: int) -> list[LayerRecord]:
    """Records of one block of a stand-alone config (``b``) with ``c_in`` input channels at ``hw``."""
    c, s = int(b["width"]), int(b["stride"])
    out_hw = (strided(hw[0], s), strided(hw[1], s))
    recs: list[LayerRecord] = []
    if b["type"] == "conv":
        k = int(b["kernel"])
        recs += [
            _conv(f"{prefix}.conv_a", c_in, c, k, s, hw),
            _same(f"{prefix}.bn_a", "batchnorm", c, out_hw),
            _same(f"{prefix}.relu_a", "relu", c, out_hw),
            _conv(f"{prefix}.conv_b", c, c, k, 1, out_hw),
            _same(f"{prefix}.bn_b", "batchnorm", c, out_hw),
        ]
        if needs_projection(c_in, c, s):
            recs += [
                _conv(f"{prefix}.short_conv", c_in, c, 1, s, hw),
                _same(f"{prefix}.short_bn", "batchnorm", c, out_hw),
            ]
        recs += [_same(f"{prefix}.add", "add", c, out_hw), _same(f"{prefix}.relu", "relu", c, out_hw)]
        return recs
    heads, hidden = int(b["heads"]), int(b["mlp_hidden"])
    inner, tokens = heads * head_dim, out_hw[0] * out_hw[1]
    if needs_projection(c_in, c, s):
        recs += [_conv(f"{prefix}.trans_conv", c_in, c, 3, s, hw), _same(f"{prefix}.trans_bn", "batchnorm", c, out_hw)]
    recs += [
        _conv(f"{prefix}.pos", c, c, 3, 1, out_hw, groups=c, bias=True),
        _same(f"{prefix}.pos_add", "add", c, out_hw),
        _same(f"{prefix}.ln1", "layernorm", c, out_hw),
        _linear(f"{prefix}.q", c, inner, out_hw),
        _linear(f"{prefix}.k", c, inner, out_hw),
        _linear(f"{prefix}.v", c, inner, out_hw),
        LayerRecord(f"{prefix}.attn.scores", "matmul", inner, tokens, out_hw, out_hw, heads=heads),
        LayerRecord(f"{prefix}.attn.mix", "matmul", tokens, inner, out_hw, out_hw, heads=heads),
        _linear(f"{prefix}.proj", inner, c, out_hw),
        _same(f"{prefix}.attn_add", "add", c, out_hw),
        _same(f"{prefix}.ln2", "layernorm", c, out_hw),
        _linear(f"{prefix}.fc1", c, hidden, out_hw),
        _same(f"{prefix}.act", "gelu", hidden, out_hw),
        _linear(f"{prefix}.fc2", hidden, c, out_hw),
        _same(f"{prefix}.mlp_add", "add", c, out_hw),
    ]
    return recs


def config_records(cfg: dict[str, Any]) -> list[LayerRecord]:
    """Layer records of the stand-alone network described by ``cfg`` (a ``nasplat_config``)."""
    c_in, h, w = (int(s) for s in cfg["input_shape"])
    stem_c, stem_s = int(cfg["stem_channels"]), int(cfg["stem_stride"])
    stem = _conv("stem.conv", c_in, stem_c, 3, stem_s, (h, w))
    recs = [stem, _same("stem.bn", "batchnorm", stem_c, stem.out_hw), _same("stem.relu", "relu", stem_c, stem.out_hw)]
    hw = stem.out_hw
    for i, (b, (ci, co, in_hw)) in enumerate(zip(cfg["blocks"], plan(cfg), strict=True)):
        recs += block_records(f"blocks.{i}", b, ci, in_hw, int(cfg["head_dim"]))
        hw = recs[-1].out_hw
        c_last = co
    recs += [
        LayerRecord("pool", "global_avgpool", c_last, c_last, hw, (1, 1)),
        LayerRecord("classifier", "linear", c_last, int(cfg["num_classes"]), (1, 1), (1, 1), bias=True),
    ]
    return recs


def _params(records: list[LayerRecord]) -> int:
    """Learnable parameters of records (the weighted ops this family uses)."""
    total = 0
    for r in records:
        if r.op == "conv2d":
            total += r.out_channels * (r.in_channels // r.groups) * r.kernel**2 + (r.out_channels if r.bias else 0)
        elif r.op == "linear":
            total += r.in_channels * r.out_channels + (r.out_channels if r.bias else 0)
        elif r.op in ("batchnorm", "layernorm"):
            total += 2 * r.out_channels
    return total
