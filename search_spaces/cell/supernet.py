"""The cell family's weight-sharing network: NAS-Bench-201's macro skeleton with every op on every edge.

Module names match the stand-alone network (:mod:`.standalone`) on every path, so ``extract`` copies a
path's weights by name and loads them with ``strict=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from nasplat.errors import NasplatError
from nasplat.model import Supernet

from .standalone import EDGES, LastAct, ResidualReduction, Stem, build_model, cell_forward, edge_nodes, make_op, plan

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

LABEL_PREFIX = "cell."


class SuperCell(nn.Module):
    """A cell holding, on each edge, one module per candidate op of that edge (``none`` holds none)."""

    def __init__(self, channels: int, choices: dict[str, list[str]]) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        for edge in EDGES:
            ops = nn.ModuleDict()
            for op in choices[edge]:
                module = make_op(op, channels)
                if module is not None:
                    ops[op] = module
            self.edges[edge] = ops

    def path(self, ops: dict[str, str]) -> list[tuple[int, int, nn.Module]]:
        """The live edges of the cell ``ops`` (edge -> op) as ``(into, from, module)``."""
        live = []
        for edge in EDGES:
            op = ops[edge]
            if op == "none":
                continue
            candidates = cast(nn.ModuleDict, self.edges[edge])
            if op not in candidates:
                raise NasplatError(f"cell supernet: edge '{edge}' has no op '{op}'; it holds: {', '.join(candidates)}")
            i, j = edge_nodes(edge)
            live.append((i, j, candidates[op]))
        return live

    def forward_ops(self, x: torch.Tensor, ops: dict[str, str]) -> torch.Tensor:
        return cell_forward(x, self.path(ops))


class CellSupernet(Supernet):
    """NAS-Bench-201's network at the space's macro size, each edge holding all of its candidate ops."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.config_base: dict[str, Any] = macro_config(space)
        choices = {edge: [str(c) for c in space.dimension(LABEL_PREFIX + edge).choices] for edge in EDGES}
        cfg = self.config_base
        self.stem = Stem(cfg["input_shape"][0], cfg["stem_channels"])
        self.cells = nn.ModuleList()
        c_last = cfg["stem_channels"]
        for kind, c_in, c_out, _ in plan(cfg):
            self.cells.append(ResidualReduction(c_in, c_out) if kind == "reduce" else SuperCell(c_in, choices))
            c_last = c_out
        self.lastact = LastAct(c_last)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, cfg["num_classes"])

    def ops_of(self, arch: Architecture) -> dict[str, str]:
        """Edge name -> op of ``arch``."""
        try:
            return {edge: str(arch[LABEL_PREFIX + edge]) for edge in EDGES}
        except KeyError as exc:
            raise NasplatError(f"architecture has no choice for '{exc.args[0]}'") from None

    def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != 1:
            raise NasplatError(f"the cell supernet takes one input tensor, got {len(inputs)}")
        ops = self.ops_of(arch)
        x = self.stem(inputs[0])
        for cell in self.cells:
            x = cell.forward_ops(x, ops) if isinstance(cell, SuperCell) else cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))

    def path_modules(self, arch: Architecture) -> list[nn.Module]:
        """Every module ``arch`` runs, with all their sub-modules (each listed once), in forward order.

        Ops of other architectures are left out, so BN recalibration resets only the path's BatchNorms.
        """
        ops = self.ops_of(arch)
        roots: list[nn.Module] = [self.stem]
        for cell in self.cells:
            if isinstance(cell, SuperCell):
                roots.extend(module for _, _, module in cell.path(ops))
            else:
                roots.append(cell)
        roots += [self.lastact, self.global_pooling, self.classifier]
        out: list[nn.Module] = []
        seen: set[int] = set()
        for root in roots:
            for module in root.modules():
                if id(module) not in seen:
                    seen.add(id(module))
                    out.append(module)
        return out

    def config(self, arch: Architecture) -> dict[str, Any]:
        """The stand-alone network's ``nasplat_config`` for ``arch``."""
        return {**self.config_base, "ops": self.ops_of(arch)}

    def extract(self, arch: Architecture) -> nn.Module:
        """A stand-alone :class:`~.standalone.CellNetwork` with this path's weights and BN statistics copied."""
        self.space.validate(arch)
        model = build_model(self.config(arch))
        ref = next(self.parameters())
        model.to(device=ref.device, dtype=ref.dtype)
        mine = self.state_dict()
        state = {key: mine[key].detach().clone() for key in model.state_dict()}
        model.load_state_dict(state, strict=True)
        model.train(self.training)
        return model


def macro_config(space: SearchSpace) -> dict[str, Any]:
    """The macro part of a stand-alone config (everything but ``ops``) from a cell space."""
    m: Any = space.macro
    return {
        "input_shape": [int(s) for s in m.input_shape],
        "num_classes": int(m.num_classes),
        "stem_channels": int(m.stem_channels),
        "cells_per_stage": int(m.cells_per_stage),
        "num_stages": int(m.num_stages),
    }
