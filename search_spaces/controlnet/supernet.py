"""The ControlNet-gating family's weight-sharing network: the frozen base UNet and every control block kind.

Each control block holds one module per kind the space offers for it (``full``, ``light``, ``lora`` at the
largest rank the space offers) and one ``zero`` projection shared by all kinds. A LoRA rank ``r`` uses the
first ``r`` rows of the shared low-rank factors (``a[:r]``, ``b[:, :r]``), as Once-for-All slices elastic
widths. The hint pyramid is shared by every configuration. Module names match the stand-alone network
(:mod:`.standalone`), so ``extract`` copies a configuration's weights by name (slicing LoRA factors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nasplat.errors import NasplatError
from nasplat.model import Supernet

from .standalone import (
    HintPyramid,
    LightBlock,
    LoRAPair,
    ResBlock,
    UNet,
    apply_residuals,
    block_channels,
    block_names,
    build_model,
    hint_stage_of,
    light_width,
    parse_kind,
    zero_conv,
)

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

LABEL_PREFIX = "control."


class _SlicedLoRA:
    """LoRA deltas of one rank, reading the first ``rank`` rows of a shared :class:`LoRAPair` (no own weights)."""

    def __init__(self, pair: LoRAPair, rank: int) -> None:
        self.pair = pair
        self.rank = rank

    def conv1(self, x: torch.Tensor) -> torch.Tensor:
        c = self.pair.conv1
        return F.conv2d(F.conv2d(x, c.a[: self.rank], padding=1), c.b[:, : self.rank])

    def conv2(self, x: torch.Tensor) -> torch.Tensor:
        c = self.pair.conv2
        return F.conv2d(F.conv2d(x, c.a[: self.rank], padding=1), c.b[:, : self.rank])


class SuperControlBlock(nn.Module):
    """All kinds a control block may take; ``zero`` is shared by them."""

    def __init__(self, kinds: dict[str, int], c_in: int, c_out: int, temb_dim: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        if "full" in kinds:
            self.full = ResBlock(c_in, c_out, temb_dim, int(cfg["norm_groups"]))
        if "light" in kinds:
            self.light = LightBlock(c_in, c_out, light_width(c_out, int(cfg["light_ratio"])))
        if "lora" in kinds:
            self.lora = LoRAPair(c_in, c_out, kinds["lora"])
        self.zero = zero_conv(c_out)

    def forward(self, choice: str, x: torch.Tensor, temb: torch.Tensor, base_block: ResBlock) -> torch.Tensor:
        kind, rank = parse_kind(choice)
        if kind == "full":
            y = self.full(x, temb)
        elif kind == "light":
            y = self.light(x)
        elif kind == "lora":
            y = base_block(x, temb, cast(LoRAPair, _SlicedLoRA(self.lora, rank)))
        else:
            raise NasplatError(f"control block kind {choice!r} runs no module")
        return self.zero(y)


class SuperControl(nn.Module):
    """The control supernet: the shared hint pyramid and one :class:`SuperControlBlock` per gated block."""

    def __init__(self, hint: HintPyramid) -> None:
        super().__init__()
        self.hint = hint
        self.blocks = nn.ModuleDict()


class ControlSupernet(Supernet):
    """The frozen base UNet (weights from the space's ``base_weights`` file) and the control supernet."""

    def __init__(self, space: SearchSpace, base_state: dict[str, torch.Tensor] | None) -> None:
        super().__init__(space)
        self.config_base: dict[str, Any] = model_config(space)
        cfg = self.config_base
        channels: list[int] = cfg["channels"]
        self.names = block_names(len(channels))
        self.base = UNet(cfg)
        if base_state is not None:
            self.base.load_state_dict(base_state, strict=True)
        self.base.requires_grad_(False)
        temb_dim = 4 * channels[0]
        self.control = SuperControl(HintPyramid(channels, int(cfg["hint_channels"]), len(channels) + 1))
        for name in self.names:
            kinds: dict[str, int] = {}
            for choice in space.dimension(LABEL_PREFIX + name).choices:
                kind, rank = parse_kind(str(choice))
                if kind != "off":
                    kinds[kind] = max(kinds.get(kind, 0), rank)
            if not kinds:
                continue
            c_in, c_out, _ = block_channels(channels, name)
            block = SuperControlBlock(kinds, c_in, c_out, temb_dim, cfg)
            if "full" in kinds:  # ControlNet: the trainable copy starts from the base block's weights
                block.full.load_state_dict(self.base.block(name).state_dict())
            self.control.blocks[name] = block

    def choices_of(self, arch: Architecture) -> dict[str, str]:
        try:
            return {name: str(arch[LABEL_PREFIX + name]) for name in self.names}
        except KeyError as exc:
            raise NasplatError(f"architecture has no choice for '{exc.args[0]}'") from None

    def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != 3:
            raise NasplatError(f"the control supernet takes (x_t, t, cond), got {len(inputs)} input tensors")
        x, t, cond = inputs
        choices = self.choices_of(arch)
        active = [name for name in self.names if choices[name] != "off"]
        temb, block_inputs, skips, mid = self.base.encode(x, t)
        residuals: dict[str, torch.Tensor] = {}
        if active:
            channels = self.config_base["channels"]
            depth = max(hint_stage_of(channels, name) for name in active) + 1
            hints = self.control.hint(cond, depth)
            for name in active:
                block = cast(SuperControlBlock, self.control.blocks[name])
                x_in = block_inputs[name] + hints[hint_stage_of(channels, name)]
                residuals[name] = block(choices[name], x_in, temb, self.base.block(name))
        out = apply_residuals(self.base, temb, skips, mid, residuals)
        if not active and self.training and torch.is_grad_enabled():
            # the base alone trains nothing: tie the output to the graph so that backward() still works
            anchor = next(p for p in self.control.parameters() if p.requires_grad)
            out = out + 0.0 * anchor.sum()
        return out

    def config(self, arch: Architecture) -> dict[str, Any]:
        """The stand-alone network's ``nasplat_config`` for ``arch``."""
        return {**self.config_base, "blocks": self.choices_of(arch)}

    def extract(self, arch: Architecture) -> nn.Module:
        """A stand-alone :class:`~.standalone.ControlledUNet` with the frozen base and this configuration's
        control weights copied (LoRA factors sliced to the chosen rank)."""
        self.space.validate(arch)
        model = build_model(self.config(arch))
        ref = next(self.parameters())
        model.to(device=ref.device, dtype=ref.dtype)
        mine = self.state_dict()
        state: dict[str, torch.Tensor] = {}
        for key, target in model.state_dict().items():
            src = mine[key]
            if ".lora." in key:  # control.blocks.<b>.lora.conv{1,2}.{a,b}: first `rank` rows
                rank = target.shape[0] if key.endswith(".a") else target.shape[1]
                src = src[:rank] if key.endswith(".a") else src[:, :rank]
            state[key] = src.detach().clone()
        model.load_state_dict(state, strict=True)
        model.train(self.training)
        return model

    def path_modules(self, arch: Architecture) -> list[nn.Module]:
        """The base and the modules of the active control blocks (the network has no BatchNorm)."""
        choices = self.choices_of(arch)
        out: list[nn.Module] = [self.base, self.control.hint]
        for name, choice in choices.items():
            kind, _ = parse_kind(choice)
            if kind != "off":
                block = self.control.blocks[name]
                out += [getattr(block, kind), cast(nn.Module, block.zero)]
        return out


def model_config(space: SearchSpace) -> dict[str, Any]:
    """The macro part of a stand-alone config (everything but ``blocks``) from a controlnet space."""
    m: Any = space.macro
    return {
        "input_shape": [int(s) for s in m.input_shape],
        "channels": [int(c) for c in m.channels],
        "norm_groups": int(m.norm_groups),
        "light_ratio": int(m.light_ratio),
        "hint_channels": int(m.hint_channels),
        "timesteps": int(m.timesteps),
        "beta_start": float(m.beta_start),
        "beta_end": float(m.beta_end),
        "edge_scale": float(m.edge_scale),
    }
