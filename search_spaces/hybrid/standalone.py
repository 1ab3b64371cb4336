"""Stand-alone hybrid CNN-transformer network (torch and the standard library only: exported with every bundle).

The network is a convolution stem, a sequence of blocks and a classifier head:

* stem: ``Conv2d(3x3, stride stem_stride) -> BatchNorm2d -> ReLU`` to ``stem_channels``;
* a ``conv`` block is a residual basic block: ``conv(k, stride) -> BN -> ReLU -> conv(k) -> BN``, added to the
  input (or to a ``1x1 conv(stride) -> BN`` projection of it when the stride is 2 or the width changes),
  then ReLU;
* an ``attn`` block is a pre-norm transformer block on the feature map's tokens: a ``3x3 conv(stride) -> BN``
  transition when the stride is 2 or the width changes, a depthwise 3x3 convolution added as a conditional
  position encoding, then ``x + proj(attention(LN(x)))`` and ``x + fc2(GELU(fc1(LN(x))))`` over the
  ``H*W`` tokens. Attention has ``heads`` heads of ``head_dim`` channels each (separate q, k, v projections);
* head: global average pool, then a linear classifier.

A strided convolution with padding ``k // 2`` maps a side of ``n`` pixels to ``ceil(n / 2)``, so blocks of both
kinds agree on every resolution. ``build_model(config)`` rebuilds a network from its ``nasplat_config``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: Block kinds.
BLOCK_TYPES: tuple[str, ...] = ("conv", "attn")
#: The keys of a config dict, and of each of its blocks (by kind).
CONFIG_KEYS: tuple[str, ...] = ("input_shape", "num_classes", "stem_channels", "stem_stride", "head_dim", "blocks")
BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "conv": ("type", "width", "kernel", "stride"),
    "attn": ("type", "width", "heads", "mlp_hidden", "stride"),
}


def needs_projection(c_in: int, c_out: int, stride: int) -> bool:
    """Whether a block's shortcut (conv) or entry (attn) needs a projection: the stride or the width changes."""
    return stride != 1 or c_in != c_out


def strided(size: int, stride: int) -> int:
    """Side length after a convolution with padding ``k // 2`` (odd ``k``) and ``stride``."""
    return -(-size // stride)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention over tokens: ``q, k, v`` are ``(batch, tokens, heads * head_dim)``."""
    b, t, inner = q.shape
    d = inner // heads
    qh = q.reshape(b, t, heads, d).transpose(1, 2)
    kh = k.reshape(b, t, heads, d).transpose(1, 2)
    vh = v.reshape(b, t, heads, d).transpose(1, 2)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * (1.0 / math.sqrt(d))
    out = torch.matmul(torch.softmax(scores, dim=-1), vh)
    return out.transpose(1, 2).reshape(b, t, inner)


class Stem(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ConvBlock(nn.Module):
    """Residual basic block with ``kernel x kernel`` convolutions; the first one has the block's stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv_a = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn_a = nn.BatchNorm2d(c_out)
        self.conv_b = nn.Conv2d(c_out, c_out, kernel, stride=1, padding=pad, bias=False)
        self.bn_b = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.short_conv: nn.Conv2d | None = None
        self.short_bn: nn.BatchNorm2d | None = None
        if needs_projection(c_in, c_out, stride):
            self.short_conv = nn.Conv2d(c_in, c_out, 1, stride=stride, padding=0, bias=False)
            self.short_bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        if self.short_conv is not None and self.short_bn is not None:
            x = self.short_bn(self.short_conv(x))
        return self.relu(y + x)


class AttnBlock(nn.Module):
    """Pre-norm transformer block over the feature map's tokens (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int, heads: int, head_dim: int, mlp_hidden: int, stride: int) -> None:
        super().__init__()
        self.heads = heads
        self.trans_conv: nn.Conv2d | None = None
        self.trans_bn: nn.BatchNorm2d | None = None
        if needs_projection(c_in, c_out, stride):
            self.trans_conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.trans_bn = nn.BatchNorm2d(c_out)
        self.pos = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, groups=c_out, bias=True)
        inner = heads * head_dim
        self.ln1 = nn.LayerNorm(c_out)
        self.q = nn.Linear(c_out, inner)
        self.k = nn.Linear(c_out, inner)
        self.v = nn.Linear(c_out, inner)
        self.proj = nn.Linear(inner, c_out)
        self.ln2 = nn.LayerNorm(c_out)
        self.fc1 = nn.Linear(c_out, mlp_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trans_conv is not None and self.trans_bn is not None:
            x = self.trans_bn(self.trans_conv(x))
        x = x + self.pos(x)
        shape = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.ln1(t)
        t = t + self.proj(attend(self.q(y), self.k(y), self.v(y), self.heads))
        t = t + self.fc2(self.act(self.fc1(self.ln2(t))))
        return t.transpose(1, 2).reshape(shape)


def plan(config: dict[str, Any]) -> list[tuple[int, int, tuple[int, int]]]:
    """``(in_channels, out_channels, input (height, width))`` of every block, in order."""
    _, h, w = (int(s) for s in config["input_shape"])
    stride = int(config["stem_stride"])
    h, w = strided(h, stride), strided(w, stride)
    c = int(config["stem_channels"])
    out = []
    for block in config["blocks"]:
        out.append((c, int(block["width"]), (h, w)))
        s = int(block["stride"])
        c, h, w = int(block["width"]), strided(h, s), strided(w, s)
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
    for key in ("num_classes", "stem_channels", "head_dim"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]!r}")
    if int(config["stem_stride"]) not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {config['stem_stride']!r}")
    blocks = config["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise ValueError("blocks must be a non-empty list")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_KEYS:
            raise ValueError(f"blocks[{i}].type must be one of {list(BLOCK_TYPES)}, got {kind!r}")
        if sorted(block) != sorted(BLOCK_KEYS[kind]):
            raise ValueError(f"blocks[{i}] ({kind}) must have exactly the keys {list(BLOCK_KEYS[kind])}")
        if int(block["stride"]) not in (1, 2):
            raise ValueError(f"blocks[{i}].stride must be 1 or 2, got {block['stride']!r}")
        for key in BLOCK_KEYS[kind][1:-1]:
            if int(block[key]) < 1:
                raise ValueError(f"blocks[{i}].{key} must be >= 1, got {block[key]!r}")
        if kind == "conv" and int(block["kernel"]) % 2 == 0:
            raise ValueError(f"blocks[{i}].kernel must be odd, got {block['kernel']!r}")


class HybridNetwork(nn.Module):
    """Stem, blocks, global average pool and linear classifier (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        check_config(config)
        blocks: list[dict[str, Any]] = []
        for b in config["blocks"]:
            blocks.append({k: (str(b[k]) if k == "type" else int(b[k])) for k in BLOCK_KEYS[str(b["type"])]})
        self.nasplat_config: dict[str, Any] = {
            "input_shape": [int(s) for s in config["input_shape"]],
            "num_classes": int(config["num_classes"]),
            "stem_channels": int(config["stem_channels"]),
            "stem_stride": int(config["stem_stride"]),
            "head_dim": int(config["head_dim"]),
            "blocks": blocks,
        }
        cfg = self.nasplat_config
        self.stem = Stem(cfg["input_shape"][0], cfg["stem_channels"], cfg["stem_stride"])
        self.blocks = nn.ModuleList()
        for b, (c_in, c_out, _) in zip(blocks, plan(cfg), strict=True):
            if b["type"] == "conv":
                self.blocks.append(ConvBlock(c_in, c_out, b["kernel"], b["stride"]))
            else:
                self.blocks.append(AttnBlock(c_in, c_out, b["heads"], cfg["head_dim"], b["mlp_hidden"], b["stride"]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(blocks[-1]["width"], cfg["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.pool(x).flatten(1))


def build_model(config: dict[str, Any]) -> nn.Module:
    """A fresh (randomly initialised) network with the structure described by ``config``."""
    return HybridNetwork(config)
