"""Stand-alone NAS-Bench-201 cell network: one fixed cell repeated in NB201's macro skeleton.

This file imports only ``torch`` and the standard library: it is copied verbatim into export bundles and
loaded by processes that do not have nasplat. ``build_model(config)`` rebuilds a network from the
``nasplat_config`` dict every instance carries::

    {"input_shape": [C, H, W], "num_classes": 10, "stem_channels": 16, "cells_per_stage": 5,
     "num_stages": 3, "ops": {"edge_1_0": "nor_conv_3x3", ..., "edge_3_2": "skip_connect"}}

Layout (module names, shared with nasplat's cell supernet so its weights load with ``strict=True``)::

    stem.conv, stem.bn                       3x3 conv + BN
    cells.<k>                                cells and, between stages, residual reduction blocks
    cells.<k>.edges.<edge>.<op>.relu/conv/bn an edge's op (none: no module; skip: Identity; avg_pool: AvgPool2d)
    cells.<k>.conv_a / conv_b / downsample   a reduction block (NB201's ResNet basic block, stride 2)
    lastact.bn, lastact.relu, global_pooling, classifier

Edge ``edge_i_j`` feeds node ``i`` from node ``j``; node 0 is the cell input, node 3 its output, and each
node is the sum of its incoming edges (a node with no live edge is all zeros).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

#: The six edges of a cell, ``edge_i_j`` = into node i from node j, in NAS-Bench-201's string order.
EDGES: tuple[str, ...] = ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")
#: Every op an edge may hold, in NAS-Bench-201's order.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The keys of a config dict.
CONFIG_KEYS: tuple[str, ...] = ("input_shape", "num_classes", "stem_channels", "cells_per_stage", "num_stages", "ops")


def edge_nodes(edge: str) -> tuple[int, int]:
    """``"edge_3_1"`` -> ``(3, 1)`` (into node, from node)."""
    _, i, j = edge.split("_")
    return int(i), int(j)


class ReLUConvBN(nn.Module):
    """NAS-Bench-201's ReLU -> Conv2d (no bias) -> BatchNorm2d."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


def make_op(op: str, channels: int) -> nn.Module | None:
    """The module of one edge op at ``channels`` (stride 1); ``None`` for ``none``, which holds no module."""
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown cell op {op!r}; allowed: {', '.join(OPS)}")


class Stem(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Downsample(nn.Module):
    """Shortcut of a reduction block: 2x2 average pool (stride 2), then a 1x1 conv (no bias)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, stride=2, padding=0)
        self.conv = nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class ResidualReduction(nn.Module):
    """NAS-Bench-201's ResNet basic block with stride 2 (between stages): halves resolution, changes width."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = Downsample(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class LastAct(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(x))


def cell_forward(x: torch.Tensor, ops: list[tuple[int, int, nn.Module]]) -> torch.Tensor:
    """Run a cell given its live edges as ``(into, from, module)`` in ``EDGES`` order (shared with the supernet)."""
    nodes: list[torch.Tensor | None] = [x, None, None, None]
    for i, j, module in ops:
        src = nodes[j]
        if src is None:  # a node with no live input is all zeros
            src = torch.zeros_like(x)
            nodes[j] = src
        y = module(src)
        acc = nodes[i]
        nodes[i] = y if acc is None else acc + y
    out = nodes[3]
    return torch.zeros_like(x) if out is None else out


class Cell(nn.Module):
    """One fixed cell: ``edges.<edge>.<op>`` holds the chosen op of each edge that is not ``none``."""

    def __init__(self, channels: int, ops: dict[str, str]) -> None:
        super().__init__()
        self.ops = dict(ops)
        self.edges = nn.ModuleDict()
        for edge in EDGES:
            module = make_op(ops[edge], channels)
            if module is not None:
                self.edges[edge] = nn.ModuleDict({ops[edge]: module})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live = []
        for edge in EDGES:
            if edge in self.edges:
                i, j = edge_nodes(edge)
                live.append((i, j, cast(nn.ModuleDict, self.edges[edge])[self.ops[edge]]))
        return cell_forward(x, live)


def plan(config: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    """The body of the network: ``(kind, in_channels, out_channels, in_size)`` per entry of ``cells``.

    ``kind`` is ``"cell"`` or ``"reduce"``; ``in_size`` is the input's height (width scales the same way).
    """
    c = int(config["stem_channels"])
    size = int(config["input_shape"][1])
    out: list[tuple[str, int, int, int]] = []
    for stage in range(int(config["num_stages"])):
        if stage > 0:
            out.append(("reduce", c, 2 * c, size))
            c, size = 2 * c, size // 2
        out.extend(("cell", c, c, size) for _ in range(int(config["cells_per_stage"])))
    return out


def check_config(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the problem if ``config`` cannot be built."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    missing = [k for k in CONFIG_KEYS if k not in config]
    if unknown or missing:
        raise ValueError(f"config keys: unknown {unknown}, missing {missing}; expected {list(CONFIG_KEYS)}")
    shape = config["input_shape"]
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"input_shape must be [channels, height, width], got {shape!r}")
    for key in ("num_classes", "stem_channels", "cells_per_stage", "num_stages"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]!r}")
    factor = 2 ** (int(config["num_stages"]) - 1)
    if int(shape[1]) % factor or int(shape[2]) % factor:
        raise ValueError(f"input height and width must be divisible by {factor} for {config['num_stages']} stages")
    ops = config["ops"]
    if not isinstance(ops, dict) or sorted(ops) != sorted(EDGES):
        raise ValueError(f"ops must map exactly the edges {list(EDGES)} to ops")
    for edge, op in ops.items():
        if op not in OPS:
            raise ValueError(f"ops[{edge!r}]: unknown op {op!r}; allowed: {', '.join(OPS)}")


class CellNetwork(nn.Module):
    """The whole network: stem, stages of cells with residual reductions between them, head."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        check_config(config)
        self.nasplat_config: dict[str, Any] = {
            "input_shape": [int(s) for s in config["input_shape"]],
            "num_classes": int(config["num_classes"]),
            "stem_channels": int(config["stem_channels"]),
            "cells_per_stage": int(config["cells_per_stage"]),
            "num_stages": int(config["num_stages"]),
            "ops": {edge: str(config["ops"][edge]) for edge in EDGES},
        }
        cfg = self.nasplat_config
        self.stem = Stem(cfg["input_shape"][0], cfg["stem_channels"])
        self.cells = nn.ModuleList()
        c_last = cfg["stem_channels"]
        for kind, c_in, c_out, _ in plan(cfg):
            if kind == "reduce":
                self.cells.append(ResidualReduction(c_in, c_out))
            else:
                self.cells.append(Cell(c_in, cfg["ops"]))
            c_last = c_out
        self.lastact = LastAct(c_last)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))


def build_model(config: dict[str, Any]) -> nn.Module:
    """A fresh (randomly initialised) network with the structure described by ``config``."""
    return CellNetwork(config)
