"""Stand-alone controlled denoiser: a small frozen diffusion UNet plus a gated control branch.

This file imports only ``torch`` and the standard library: it is copied verbatim into export bundles (as
``model.py``) and loaded by processes that do not have nasplat. ``build_model(config)`` rebuilds a network
from the ``nasplat_config`` dict every instance carries::

    {"input_shape": [1, 28, 28], "channels": [16, 32, 32], "norm_groups": 8, "light_ratio": 4,
     "hint_channels": 8, "timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "edge_scale": 1.0,
     "blocks": {"enc_0": "full", "enc_1": "light", "enc_2": "lora_4", "mid": "off"}}

The network predicts the noise of a noisy image: ``model(x_t, t, cond) -> eps`` with ``x_t`` of shape
``(B, C, H, W)`` in the data range [-1, 1], ``t`` a float tensor ``(B,)`` of timestep indices in
``[0, timesteps)`` and ``cond`` the condition image ``(B, 1, H, W)`` (an edge map, see :func:`edge_map`).
``model.generate(cond, steps=20, seed=0)`` runs a deterministic DDIM sampler and returns images in [0, 1].

Layout (module names, shared with nasplat's control supernet so its weights load with ``strict=True``)::

    base.time_embed.{0,2}                 timestep MLP (on a sinusoidal embedding)
    base.conv_in                          3x3 conv, image -> channels[0]
    base.enc.<k>                          encoder ResBlock of level k (channels[k-1] -> channels[k])
    base.down.<k>                         stride-2 3x3 conv after level k (k < levels - 1)
    base.mid                              middle ResBlock at the lowest resolution
    base.dec.<k>, base.up.<k>             decoder ResBlocks (input: previous + skip) and upsampling convs
    base.norm_out, base.conv_out          output head
    control.hint.stages.<i>               condition encoder: stage i feeds control block i (a pyramid)
    control.blocks.<block>.full           a trainable copy of the base block (ResBlock)
    control.blocks.<block>.light          a light adapter: 3x3 conv to C_out/light_ratio, GELU, 1x1 conv
    control.blocks.<block>.lora.conv{1,2} rank-r LoRA deltas (``a``: r x C_in x 3 x 3, ``b``: C_out x r x 1 x 1)
                                          over the frozen base block's two convolutions
    control.blocks.<block>.zero           zero-initialised 1x1 projection into the base

Control blocks are ``enc_0 .. enc_{L-1}`` (one per encoder level) and ``mid``. Control block ``b`` reads the
base's input to the matching block plus the hint at that resolution, and its output, through the zero
projection, is added to the base's skip tensor of that level (``mid``: to the middle block's output), as
ControlNet adds its residuals; the frozen base encoder itself runs unchanged (so an ``off`` block costs
nothing, and blocks do not depend on each other, as in ControlNet-XS's per-block wiring). The base is
frozen: its parameters have ``requires_grad=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: The kinds a control block may be (``lora_<rank>`` with a positive integer rank).
KINDS: tuple[str, ...] = ("off", "light", "lora", "full")
#: The keys of a config dict.
CONFIG_KEYS: tuple[str, ...] = (
    "input_shape", "channels", "norm_groups", "light_ratio", "hint_channels", "timesteps", "beta_start",
    "beta_end", "edge_scale", "blocks",
)  # fmt: skip


def block_names(levels: int) -> list[str]:
    """Control block names of a UNet with ``levels`` resolution levels: ``enc_0 .. enc_{L-1}``, ``mid``."""
    return [f"enc_{k}" for k in range(levels)] + ["mid"]


def parse_kind(choice: str) -> tuple[str, int]:
    """``"lora_4"`` -> ``("lora", 4)``; ``"full"`` -> ``("full", 0)``. Raises ValueError for unknown kinds."""
    if choice.startswith("lora_"):
        rank = choice[len("lora_") :]
        if not rank.isdigit() or int(rank) < 1:
            raise ValueError(f"control block kind {choice!r}: a LoRA rank must be a positive integer (e.g. lora_4)")
        return "lora", int(rank)
    if choice in ("off", "light", "full"):
        return choice, 0
    raise ValueError(f"unknown control block kind {choice!r}; allowed: off, light, full, lora_<rank>")


def block_channels(channels: list[int], name: str) -> tuple[int, int, int]:
    """``(in_channels, out_channels, level)`` of the base block a control block mirrors."""
    if name == "mid":
        return channels[-1], channels[-1], len(channels) - 1
    k = int(name.split("_")[1])
    return (channels[0] if k == 0 else channels[k - 1]), channels[k], k


def hint_stage_of(channels: list[int], name: str) -> int:
    """The index of the hint stage feeding control block ``name`` (stage ``k`` for ``enc_k``, ``L`` for mid)."""
    return len(channels) if name == "mid" else int(name.split("_")[1])


def light_width(c_out: int, ratio: int) -> int:
    return max(4, c_out // ratio)


# --------------------------------------------------------------------------------------------------------------
# noise schedule, condition, sampling


def alpha_bars(config: dict[str, Any]) -> torch.Tensor:
    """Cumulative products of ``1 - beta_t`` of the linear DDPM schedule (float32, length ``timesteps``)."""
    betas = torch.linspace(float(config["beta_start"]), float(config["beta_end"]), int(config["timesteps"]),
                           dtype=torch.float64)  # fmt: skip
    return torch.cumprod(1.0 - betas, 0).to(torch.float32)


def edge_map(pixels: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The condition of images with values in [0, 1]: Sobel gradient magnitude of the channel mean, divided
    by ``scale`` and clipped to [0, 1] (borders replicated, so a frame edge is not an edge). Shape (B, 1, H, W)."""
    grey = pixels.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=grey.dtype, device=grey.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2 + 1e-12)
    return (mag / scale).clamp(0.0, 1.0)


@torch.no_grad()
def ddim_sample(
    eps_model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    noise: torch.Tensor,
    abar: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``noise`` in ``steps`` evenly spaced timesteps; returns x_0 in [-1, 1]."""
    timesteps = len(abar)
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in 1..{timesteps}, got {steps}")
    ts = torch.linspace(timesteps - 1, 0, steps).round().long().tolist()
    x = noise
    x0 = x
    for i, t in enumerate(ts):
        a = abar[t].to(x.dtype)
        a_prev = abar[ts[i + 1]].to(x.dtype) if i + 1 < len(ts) else torch.ones((), dtype=x.dtype)
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        eps = eps_model(x, tt, cond)
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1.0, 1.0)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x0


# --------------------------------------------------------------------------------------------------------------
# building blocks


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of float timesteps (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, GELU, 3x3 conv, + timestep projection, GroupNorm, GELU, 3x3 conv; 1x1 shortcut if widths differ."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, lora: LoRAPair | None = None) -> torch.Tensor:
        """The block's output; with ``lora``, its rank-r deltas are added to ``conv1`` and ``conv2``."""
        h = F.gelu(self.norm1(x))
        y = self.conv1(h)
        if lora is not None:
            y = y + lora.conv1(h)
        y = y + self.temb(F.gelu(temb))[:, :, None, None]
        h = F.gelu(self.norm2(y))
        y = self.conv2(h)
        if lora is not None:
            y = y + lora.conv2(h)
        return self.skip(x) + y


class LoRAConv(nn.Module):
    """A rank-r delta of a 3x3 convolution: 3x3 conv to r channels (``a``), then 1x1 conv out (``b``, zero init)."""

    def __init__(self, c_in: int, c_out: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, c_in, 3, 3) / math.sqrt(9 * c_in))
        self.b = nn.Parameter(torch.zeros(c_out, rank, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, self.a, padding=1), self.b)


class LoRAPair(nn.Module):
    """LoRA deltas for the two 3x3 convolutions of a ResBlock."""

    def __init__(self, c_in: int, c_out: int, rank: int) -> None:
        super().__init__()
        self.conv1 = LoRAConv(c_in, c_out, rank)
        self.conv2 = LoRAConv(c_out, c_out, rank)


class LightBlock(nn.Module):
    """A light adapter (ControlNeXt / ControlNet-XS spirit): 3x3 conv to a narrow width, GELU, 1x1 conv out."""

    def __init__(self, c_in: int, c_out: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


def zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()  # type: ignore[union-attr]
    return conv


def hint_stage(channels: list[int], hint_channels: int, i: int) -> nn.Sequential:
    """Stage ``i`` of the condition pyramid: its output has the channels of control block ``i``'s input."""
    levels = len(channels)
    if i == 0:
        return nn.Sequential(
            nn.Conv2d(1, hint_channels, 3, padding=1), nn.GELU(), nn.Conv2d(hint_channels, channels[0], 3, padding=1)
        )
    c_prev = channels[0] if i == 1 else channels[i - 2]
    if i < levels:
        return nn.Sequential(nn.GELU(), nn.Conv2d(c_prev, channels[i - 1], 3, stride=2, padding=1))
    c_last_in = channels[0] if levels == 1 else channels[levels - 2]
    return nn.Sequential(nn.GELU(), nn.Conv2d(c_last_in, channels[-1], 3, padding=1))


class HintPyramid(nn.Module):
    """The condition encoder: ``stages[i]`` maps stage ``i-1``'s output (the condition for i = 0) to block i's size."""

    def __init__(self, channels: list[int], hint_channels: int, depth: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(hint_stage(channels, hint_channels, i) for i in range(depth))

    def forward(self, cond: torch.Tensor, depth: int) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        h = cond
        for stage in list(self.stages)[:depth]:
            h = stage(h)
            out.append(h)
        return out


# --------------------------------------------------------------------------------------------------------------
# the base UNet


class UNet(nn.Module):
    """A small DDPM UNet: one ResBlock per level down and up, a middle block; predicts the noise."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        channels = [int(c) for c in config["channels"]]
        groups = int(config["norm_groups"])
        c_img = int(config["input_shape"][0])
        levels = len(channels)
        self.channels = channels
        temb_dim = 4 * channels[0]
        self.time_embed = nn.Sequential(nn.Linear(channels[0], temb_dim), nn.GELU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(c_img, channels[0], 3, padding=1)
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for k in range(levels):
            c_in = channels[0] if k == 0 else channels[k - 1]
            self.enc.append(ResBlock(c_in, channels[k], temb_dim, groups))
            if k < levels - 1:
                self.down.append(nn.Conv2d(channels[k], channels[k], 3, stride=2, padding=1))
        self.mid = ResBlock(channels[-1], channels[-1], temb_dim, groups)
        self.dec = nn.ModuleList()
        self.up = nn.ModuleList()
        for k in range(levels):
            c_prev = channels[-1] if k == levels - 1 else channels[k + 1]
            self.dec.append(ResBlock(c_prev + channels[k], channels[k], temb_dim, groups))
            self.up.append(nn.Conv2d(channels[k], channels[k], 3, padding=1) if k > 0 else nn.Identity())
        self.norm_out = nn.GroupNorm(groups, channels[0])
        self.conv_out = nn.Conv2d(channels[0], c_img, 3, padding=1)

    def block(self, name: str) -> ResBlock:
        """The base ResBlock a control block mirrors."""
        if name == "mid":
            return self.mid  # type: ignore[return-value]
        return self.enc[int(name.split("_")[1])]  # type: ignore[return-value]

    def encode(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """``(temb, inputs of each block by control-block name, skips per level, middle output)``."""
        temb = self.time_embed(timestep_embedding(t, self.channels[0]).to(x.dtype))
        inputs: dict[str, torch.Tensor] = {}
        skips: list[torch.Tensor] = []
        h = self.conv_in(x)
        levels = len(self.channels)
        for k in range(levels):
            inputs[f"enc_{k}"] = h
            h = self.enc[k](h, temb)
            skips.append(h)
            if k < levels - 1:
                h = self.down[k](h)
        inputs["mid"] = h
        return temb, inputs, skips, self.mid(h, temb)

    def decode(self, temb: torch.Tensor, skips: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        for k in reversed(range(len(self.channels))):
            h = self.dec[k](torch.cat([h, skips[k]], dim=1), temb)
            if k > 0:
                h = self.up[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.gelu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb, _, skips, h = self.encode(x, t)
        return self.decode(temb, skips, h)


# --------------------------------------------------------------------------------------------------------------
# the control branch of one configuration


class ControlBlock(nn.Module):
    """One active control block: ``full``, ``light`` or ``lora`` (one of them), then the ``zero`` projection."""

    def __init__(self, kind: str, rank: int, c_in: int, c_out: int, temb_dim: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.kind = kind
        if kind == "full":
            self.full = ResBlock(c_in, c_out, temb_dim, int(config["norm_groups"]))
        elif kind == "light":
            self.light = LightBlock(c_in, c_out, light_width(c_out, int(config["light_ratio"])))
        elif kind == "lora":
            self.lora = LoRAPair(c_in, c_out, rank)
        else:
            raise ValueError(f"a control block module is 'full', 'light' or 'lora', not {kind!r}")
        self.zero = zero_conv(c_out)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, base_block: ResBlock) -> torch.Tensor:
        if self.kind == "full":
            y = self.full(x, temb)
        elif self.kind == "light":
            y = self.light(x)
        else:
            y = base_block(x, temb, self.lora)
        return self.zero(y)


class ControlBranch(nn.Module):
    """The control branch of one configuration: the hint pyramid up to the deepest active block, and its blocks."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        channels = [int(c) for c in config["channels"]]
        temb_dim = 4 * channels[0]
        self.active: list[str] = []
        self.blocks = nn.ModuleDict()
        for name in block_names(len(channels)):
            kind, rank = parse_kind(str(config["blocks"][name]))
            if kind == "off":
                continue
            c_in, c_out, _ = block_channels(channels, name)
            self.blocks[name] = ControlBlock(kind, rank, c_in, c_out, temb_dim, config)
            self.active.append(name)
        self.stage_of = {name: hint_stage_of(channels, name) for name in self.active}
        self.depth = max(self.stage_of.values(), default=-1) + 1
        self.hint = HintPyramid(channels, int(config["hint_channels"]), self.depth)

    def forward(
        self, cond: torch.Tensor, inputs: dict[str, torch.Tensor], temb: torch.Tensor, base: UNet
    ) -> dict[str, torch.Tensor]:
        """Residuals by control-block name (only active blocks)."""
        if not self.active:
            return {}
        hints = self.hint(cond, self.depth)
        out: dict[str, torch.Tensor] = {}
        for name in self.active:
            block: ControlBlock = self.blocks[name]  # type: ignore[assignment]
            out[name] = block(inputs[name] + hints[self.stage_of[name]], temb, base.block(name))
        return out


def apply_residuals(
    base: UNet, temb: torch.Tensor, skips: list[torch.Tensor], mid: torch.Tensor, residuals: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Add control residuals to the skips and the middle output, then run the base decoder."""
    skips = [s + residuals[f"enc_{k}"] if f"enc_{k}" in residuals else s for k, s in enumerate(skips)]
    if "mid" in residuals:
        mid = mid + residuals["mid"]
    return base.decode(temb, skips, mid)


def check_config(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the problem if ``config`` cannot be built."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    missing = [k for k in CONFIG_KEYS if k not in config]
    if unknown or missing:
        raise ValueError(f"config keys: unknown {unknown}, missing {missing}; expected {list(CONFIG_KEYS)}")
    channels = [int(c) for c in config["channels"]]
    shape = [int(s) for s in config["input_shape"]]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be [channels, height, width], got {config['input_shape']!r}")
    if not channels or min(channels) < 1 or channels[0] % 2:
        raise ValueError(f"channels must be positive widths per level, the first even; got {channels}")
    if any(c % int(config["norm_groups"]) for c in channels):
        raise ValueError(f"every width in {channels} must be divisible by norm_groups={config['norm_groups']}")
    factor = 2 ** (len(channels) - 1)
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(f"height and width must be divisible by {factor} for {len(channels)} levels")
    blocks = config["blocks"]
    names = block_names(len(channels))
    if not isinstance(blocks, dict) or sorted(blocks) != sorted(names):
        raise ValueError(f"blocks must map exactly the control blocks {names} to kinds")
    for name in names:
        kind, rank = parse_kind(str(blocks[name]))
        c_in, c_out, _ = block_channels(channels, name)
        if kind == "lora" and rank > min(c_in, c_out):
            raise ValueError(f"blocks[{name!r}]: LoRA rank {rank} exceeds the block's width {min(c_in, c_out)}")


class ControlledUNet(nn.Module):
    """The frozen base UNet (``base``) and the control branch of one configuration (``control``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        check_config(config)
        self.nasplat_config: dict[str, Any] = {
            "input_shape": [int(s) for s in config["input_shape"]],
            "channels": [int(c) for c in config["channels"]],
            "norm_groups": int(config["norm_groups"]),
            "light_ratio": int(config["light_ratio"]),
            "hint_channels": int(config["hint_channels"]),
            "timesteps": int(config["timesteps"]),
            "beta_start": float(config["beta_start"]),
            "beta_end": float(config["beta_end"]),
            "edge_scale": float(config["edge_scale"]),
            "blocks": {name: str(config["blocks"][name]) for name in block_names(len(config["channels"]))},
        }
        self.base = UNet(self.nasplat_config)
        self.base.requires_grad_(False)
        self.control = ControlBranch(self.nasplat_config)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb, inputs, skips, mid = self.base.encode(x, t)
        residuals = self.control(cond, inputs, temb, self.base)
        return apply_residuals(self.base, temb, skips, mid, residuals)

    def condition(self, pixels: torch.Tensor) -> torch.Tensor:
        """The condition (edge map) of images with values in [0, 1]."""
        return edge_map(pixels, self.nasplat_config["edge_scale"])

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, steps: int = 20, seed: int = 0) -> torch.Tensor:
        """Images in [0, 1] following ``cond`` (B, 1, H, W): DDIM with ``steps`` steps from seeded noise."""
        c, h, w = self.nasplat_config["input_shape"]
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((cond.shape[0], c, h, w), generator=gen).to(cond.device, cond.dtype)
        x0 = ddim_sample(self, cond, noise, alpha_bars(self.nasplat_config).to(cond.device), steps)
        return (x0 + 1) / 2


def build_model(config: dict[str, Any]) -> nn.Module:
    """A fresh (randomly initialised, zero-projected) network with the structure described by ``config``."""
    return ControlledUNet(config)
