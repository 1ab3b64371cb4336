"""How a hybrid space's flat dimensions map to networks: labels, checks, per-architecture configs, largest sizes.

Dimensions (``i`` counts blocks from 1, ``j`` downsamples from 1):

``block_i.type``       categorical, a subset of ``conv``, ``attn``
``block_i.width``      ordinal/integer, output channels of the block
``block_i.kernel``     ordinal/integer, odd kernel size of a conv block (needed when ``conv`` is allowed)
``block_i.heads``      ordinal/integer, attention heads of an attn block (needed when ``attn`` is allowed)
``block_i.mlp_ratio``  ordinal, MLP hidden units per channel of an attn block (needed when ``attn`` is allowed)
``downsample.at_j``    ordinal/integer, the block (1-based) that halves the resolution for the j-th time

The number of downsamples is the number of ``downsample.at_j`` dimensions (fixed per space). Their ranges
must be ordered (every choice of ``at_j`` below every choice of ``at_{j+1}``), so every combination of
choices is a valid network and a space needs no constraints (Optuna's samplers do not see a space's
constraints).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from nasplat.errors import SpecError
from nasplat.space import label_key_paths

from .standalone import BLOCK_TYPES

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace, Value

BLOCK_FIELDS: tuple[str, ...] = ("type", "width", "kernel", "heads", "mlp_ratio")
#: Fields a block needs for each kind it may take.
FIELDS_OF: dict[str, tuple[str, ...]] = {"conv": ("kernel",), "attn": ("heads", "mlp_ratio")}
_BLOCK_LABEL = re.compile(r"^block_([1-9][0-9]*)\.([a-z_]+)$")
_DOWN_LABEL = re.compile(r"^downsample\.at_([1-9][0-9]*)$")


def block_label(i: int, field: str) -> str:
    """``block_<i>.<field>`` (``i`` from 1)."""
    return f"block_{i}.{field}"


def down_label(j: int) -> str:
    return f"downsample.at_{j}"


def mlp_hidden(ratio: float, width: int) -> int:
    """Hidden units of an attn block's MLP: ``ratio * width`` rounded half up (at least 1)."""
    return max(1, math.floor(float(ratio) * int(width) + 0.5))


def counts(space: SearchSpace) -> tuple[int, int]:
    """(number of blocks, number of downsamples) of a checked space."""
    labels = set(space.labels)
    n = 0
    while block_label(n + 1, "type") in labels:
        n += 1
    d = 0
    while down_label(d + 1) in labels:
        d += 1
    return n, d


def check(space: SearchSpace) -> None:
    """Raise :class:`SpecError` (file, key path, what was expected) unless the family can build ``space``."""
    file = space.file
    keys = {label: path for label, (_i, path) in label_key_paths(space).items()}
    blocks: dict[int, set[str]] = {}
    downs: set[int] = set()
    for label, key in keys.items():
        m = _BLOCK_LABEL.match(label)
        if m and m.group(2) in BLOCK_FIELDS:
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
            continue
        m = _DOWN_LABEL.match(label)
        if m:
            downs.add(int(m.group(1)))
            continue
        raise SpecError(
            file,
            key,
            f"unknown dimension '{label}' for family 'hybrid'; allowed: block_<i>.{{{','.join(BLOCK_FIELDS)}}} "
            "and downsample.at_<j> (i, j counted from 1)",
        )
    if not blocks:
        raise SpecError(file, "dimensions", "family 'hybrid' needs at least one block (block_1.type, block_1.width)")
    n = max(blocks)
    for i in range(1, n + 1):
        for field in ("type", "width"):
            if field not in blocks.get(i, set()):
                raise SpecError(file, "dimensions", f"missing dimension '{block_label(i, field)}' (blocks 1..{n})")
    if downs and sorted(downs) != list(range(1, max(downs) + 1)):
        gap = min(set(range(1, max(downs) + 1)) - downs)
        raise SpecError(file, "dimensions", f"missing dimension '{down_label(gap)}' (downsamples count from 1)")

    def ints(label: str, low: int, what: str) -> list[int]:
        d = space.dimension(label)
        if not d.ordered:
            raise SpecError(file, keys[label], f"'{label}' must be ordinal or integer (got '{d.kind}')")
        out = []
        for c in d.choices:
            if isinstance(c, bool) or not isinstance(c, int) or c < low:
                raise SpecError(file, keys[label], f"'{label}': choices must be {what} (got {c!r})")
            out.append(c)
        return out

    for i in range(1, n + 1):
        t = space.dimension(block_label(i, "type"))
        if t.kind != "categorical":
            raise SpecError(file, keys[t.label], f"'{t.label}' must be categorical (got '{t.kind}')")
        for c in t.choices:
            if c not in BLOCK_TYPES:
                raise SpecError(file, keys[t.label], f"'{t.label}': unknown block type {c!r}; allowed: conv, attn")
        ints(block_label(i, "width"), 1, "integers >= 1")
        have = blocks[i]
        need = {"type", "width"} | {f for kind in t.choices for f in FIELDS_OF[str(kind)]}
        absent = sorted(need - have)
        if absent:
            raise SpecError(
                file,
                "dimensions",
                f"missing dimension '{block_label(i, absent[0])}' (block {i} may be {field_owner(absent[0])})",
            )
        useless = sorted(have - need)
        if useless:
            raise SpecError(
                file,
                keys[block_label(i, useless[0])],
                f"'{block_label(i, useless[0])}' has no effect: block {i} cannot be {field_owner(useless[0])}",
            )
        if "kernel" in need:
            for k in ints(block_label(i, "kernel"), 1, "odd integers >= 1"):
                if k % 2 == 0:
                    raise SpecError(file, keys[block_label(i, "kernel")], f"'{block_label(i, 'kernel')}': {k} is even")
        if "heads" in need:
            ints(block_label(i, "heads"), 1, "integers >= 1")
            r = space.dimension(block_label(i, "mlp_ratio"))
            if r.kind != "ordinal":
                raise SpecError(file, keys[r.label], f"'{r.label}' must be ordinal (got '{r.kind}')")
            for c in r.choices:
                if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
                    raise SpecError(file, keys[r.label], f"'{r.label}': choices must be positive numbers (got {c!r})")
    prev: list[int] = []
    for j in range(1, len(downs) + 1):
        label = down_label(j)
        at = ints(label, 1, f"block numbers 1..{n}")
        if max(at) > n:
            raise SpecError(file, keys[label], f"'{label}': choices must be block numbers 1..{n} (got {max(at)})")
        if prev and min(at) <= max(prev):
            raise SpecError(
                file,
                keys[label],
                f"'{label}': every choice must come after every choice of '{down_label(j - 1)}' "
                f"(got {min(at)} <= {max(prev)}), so that every combination is a valid network",
            )
        prev = at
    macro: Any = space.macro
    if min(macro.input_shape) < 1:
        raise SpecError(file, "macro.input_shape", f"expected three positive sizes (got {list(macro.input_shape)})")
    if macro.num_classes < 1:
        raise SpecError(file, "macro.num_classes", f"expected a positive class count (got {macro.num_classes})")


def field_owner(field: str) -> str:
    return "conv" if field == "kernel" else "attn"


def base_config(space: SearchSpace) -> dict[str, Any]:
    """The macro part of a stand-alone config (everything but ``blocks``)."""
    m: Any = space.macro
    return {
        "input_shape": [int(s) for s in m.input_shape],
        "num_classes": int(m.num_classes),
        "stem_channels": int(m.stem_channels),
        "stem_stride": int(m.stem_stride),
        "head_dim": int(m.head_dim),
    }


def block_configs(space: SearchSpace, values: dict[str, Value]) -> list[dict[str, Any]]:
    """The ``blocks`` of a stand-alone config from an architecture's choices (label -> value)."""
    n, d = counts(space)
    down = {int(values[down_label(j)]) for j in range(1, d + 1)}  # type: ignore[arg-type]
    out: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        kind = str(values[block_label(i, "type")])
        width = int(values[block_label(i, "width")])  # type: ignore[arg-type]
        stride = 2 if i in down else 1
        if kind == "conv":
            out.append(
                {"type": "conv", "width": width, "kernel": int(values[block_label(i, "kernel")]), "stride": stride}
            )  # type: ignore[arg-type]
        else:
            heads = int(values[block_label(i, "heads")])  # type: ignore[arg-type]
            hidden = mlp_hidden(float(values[block_label(i, "mlp_ratio")]), width)
            out.append({"type": "attn", "width": width, "heads": heads, "mlp_hidden": hidden, "stride": stride})
    return out


def arch_config(space: SearchSpace, arch: Architecture) -> dict[str, Any]:
    """The stand-alone network's ``nasplat_config`` of ``arch``."""
    return {**base_config(space), "blocks": block_configs(space, arch.as_dict())}


def supernet_plan(space: SearchSpace) -> list[dict[str, Any]]:
    """The largest settings of every block position: kinds allowed, width, kernel, heads, MLP hidden units."""
    n, _ = counts(space)
    out = []
    for i in range(1, n + 1):
        types = [str(t) for t in space.dimension(block_label(i, "type")).choices]
        widths = [int(w) for w in space.dimension(block_label(i, "width")).choices]  # type: ignore[arg-type]
        p: dict[str, Any] = {"types": types, "width": max(widths)}
        if "conv" in types:
            p["kernel"] = max(int(k) for k in space.dimension(block_label(i, "kernel")).choices)  # type: ignore[arg-type]
        if "attn" in types:
            p["heads"] = max(int(h) for h in space.dimension(block_label(i, "heads")).choices)  # type: ignore[arg-type]
            ratios = [float(r) for r in space.dimension(block_label(i, "mlp_ratio")).choices]
            p["mlp_hidden"] = max(mlp_hidden(r, w) for r in ratios for w in widths)
        out.append(p)
    return out
