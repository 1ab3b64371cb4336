"""The hybrid family's weight-sharing network: every block holds a conv and/or an attn block at its largest size.

Elastic ops keep the largest weight and run a slice of it (as in Once-for-All):

* widths: the first ``c`` output (and input) channels of convolutions, linear layers and norms;
* kernel sizes: the centre ``k x k`` crop of the largest kernel;
* attention heads: the first ``heads * head_dim`` rows of the q, k, v projections (and columns of the output
  projection), i.e. the first ``heads`` heads;
* MLP ratios: the first ``round(ratio * width)`` hidden units of ``fc1`` (rows) and ``fc2`` (columns);
* BatchNorm: the first ``c`` entries of weight, bias and running statistics; in training the running
  statistics of those entries are updated in place, the others are left alone (:class:`ElasticBatchNorm2d`);
* LayerNorm: normalises over the active ``c`` channels with the first ``c`` entries of weight and bias.

Supernet parameter names are the stand-alone network's (:mod:`.standalone`) with the block's kind inserted
(``blocks.3.attn.q.weight`` holds ``blocks.3.q.weight``), and every stand-alone tensor is a slice of its
supernet tensor: prefixes in every dimension except a convolution kernel's spatial ones (centre crop). So
``extract`` slices by name and loads with ``strict=True``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nasplat.errors import NasplatError
from nasplat.model import Supernet

from .spec import arch_config
from .standalone import attend, build_model, needs_projection, strided

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace


# ------------------------------------------------------------------------------------------------ elastic ops
class ElasticConv2d(nn.Conv2d):
    """A convolution holding its largest weight; :meth:`run` uses the first channels and the centre kernel."""

    def run(self, x: torch.Tensor, c_out: int, kernel: int, stride: int) -> torch.Tensor:
        big = self.kernel_size[0]
        lo = (big - kernel) // 2
        groups = self.groups
        if groups == 1:
            weight = self.weight[:c_out, : x.shape[1], lo : lo + kernel, lo : lo + kernel]
        else:  # depthwise: one filter per active channel
            weight = self.weight[:c_out, :, lo : lo + kernel, lo : lo + kernel]
            groups = c_out
        bias = self.bias[:c_out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, stride=stride, padding=kernel // 2, groups=groups)


class ElasticLinear(nn.Linear):
    """A linear layer holding its largest weight; :meth:`run` uses the first ``out`` rows and input columns."""

    def run(self, x: torch.Tensor, out: int) -> torch.Tensor:
        bias = self.bias[:out] if self.bias is not None else None
        return F.linear(x, self.weight[:out, : x.shape[-1]], bias)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its largest size, ``C`` being the input's channel count.

    Follows ``nn.BatchNorm2d``'s own forward (momentum ``None`` is a cumulative average, as BN recalibration
    uses) on slices: training updates the running statistics of the active channels in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        mean = self.running_mean[:c] if keep and self.running_mean is not None else None
        var = self.running_var[:c] if keep and self.running_var is not None else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the active (last-dimension) channels, with the first entries of weight and bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.layer_norm(x, (c,), weight, bias, self.eps)


# ------------------------------------------------------------------------------------------------ blocks
class SuperConvBlock(nn.Module):
    """A :class:`~.standalone.ConvBlock` at its largest input/output width and kernel."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv_a = ElasticConv2d(c_in, c_out, kernel, padding=pad, bias=False)
        self.bn_a = ElasticBatchNorm2d(c_out)
        self.conv_b = ElasticConv2d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn_b = ElasticBatchNorm2d(c_out)
        self.short_conv = ElasticConv2d(c_in, c_out, 1, bias=False)
        self.short_bn = ElasticBatchNorm2d(c_out)

    def run(self, x: torch.Tensor, b: dict[str, Any]) -> torch.Tensor:
        width, kernel, stride = b["width"], b["kernel"], b["stride"]
        y = F.relu(self.bn_a(self.conv_a.run(x, width, kernel, stride)))
        y = self.bn_b(self.conv_b.run(y, width, kernel, 1))
        if needs_projection(x.shape[1], width, stride):
            x = self.short_bn(self.short_conv.run(x, width, 1, stride))
        return F.relu(y + x)

    def used(self, c_in: int, b: dict[str, Any]) -> list[nn.Module]:
        out: list[nn.Module] = [self.conv_a, self.bn_a, self.conv_b, self.bn_b]
        if needs_projection(c_in, b["width"], b["stride"]):
            out += [self.short_conv, self.short_bn]
        return out


class SuperAttnBlock(nn.Module):
    """An :class:`~.standalone.AttnBlock` at its largest width, head count and MLP hidden size."""

    def __init__(self, c_in: int, c_out: int, heads: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.trans_conv = ElasticConv2d(c_in, c_out, 3, padding=1, bias=False)
        self.trans_bn = ElasticBatchNorm2d(c_out)
        self.pos = ElasticConv2d(c_out, c_out, 3, padding=1, groups=c_out, bias=True)
        inner = heads * head_dim
        self.head_dim = head_dim
        self.ln1 = ElasticLayerNorm(c_out)
        self.q = ElasticLinear(c_out, inner)
        self.k = ElasticLinear(c_out, inner)
        self.v = ElasticLinear(c_out, inner)
        self.proj = ElasticLinear(inner, c_out)
        self.ln2 = ElasticLayerNorm(c_out)
        self.fc1 = ElasticLinear(c_out, mlp_hidden)
        self.fc2 = ElasticLinear(mlp_hidden, c_out)

    def run(self, x: torch.Tensor, b: dict[str, Any]) -> torch.Tensor:
        width, heads, hidden = b["width"], b["heads"], b["mlp_hidden"]
        if needs_projection(x.shape[1], width, b["stride"]):
            x = self.trans_bn(self.trans_conv.run(x, width, 3, b["stride"]))
        x = x + self.pos.run(x, width, 3, 1)
        shape = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.ln1(t)
        inner = heads * self.head_dim
        a = attend(self.q.run(y, inner), self.k.run(y, inner), self.v.run(y, inner), heads)
        t = t + self.proj.run(a, width)
        t = t + self.fc2.run(F.gelu(self.fc1.run(self.ln2(t), hidden)), width)
        return t.transpose(1, 2).reshape(shape)

    def used(self, c_in: int, b: dict[str, Any]) -> list[nn.Module]:
        out: list[nn.Module] = []
        if needs_projection(c_in, b["width"], b["stride"]):
            out += [self.trans_conv, self.trans_bn]
        return [*out, self.pos, self.ln1, self.q, self.k, self.v, self.proj, self.ln2, self.fc1, self.fc2]


class SuperStem(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


# ------------------------------------------------------------------------------------------------ supernet
class HybridSupernet(Supernet):
    """Stem, then per block position a conv and/or attn block at the largest sizes the space allows, then head.

    ``plan`` is :func:`.spec.supernet_plan` of the space: the largest settings of every block.
    """

    def __init__(self, space: SearchSpace, base: dict[str, Any], plan: list[dict[str, Any]]) -> None:
        super().__init__(space)
        self.config_base = dict(base)
        self._configs: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        self.stem = SuperStem(base["input_shape"][0], base["stem_channels"], base["stem_stride"])
        self.blocks = nn.ModuleList()
        c_in = base["stem_channels"]
        for p in plan:
            holder = nn.ModuleDict()
            if "conv" in p["types"]:
                holder["conv"] = SuperConvBlock(c_in, p["width"], p["kernel"])
            if "attn" in p["types"]:
                holder["attn"] = SuperAttnBlock(c_in, p["width"], p["heads"], base["head_dim"], p["mlp_hidden"])
            self.blocks.append(holder)
            c_in = p["width"]
        self.classifier = ElasticLinear(c_in, base["num_classes"])

    def config(self, arch: Architecture) -> dict[str, Any]:
        """The stand-alone network's ``nasplat_config`` for ``arch``."""
        return copy.deepcopy(self._config(arch))

    def _config(self, arch: Architecture) -> dict[str, Any]:
        """:meth:`config`, shared and kept for the last few architectures (callers must not change it)."""
        cfg = self._configs.get(arch.choices)
        if cfg is None:
            if len(self._configs) >= 256:
                self._configs.clear()
            cfg = self._configs[arch.choices] = arch_config(self.space, arch)
        return cfg

    def _block(self, i: int, kind: str) -> nn.Module:
        holder = cast(nn.ModuleDict, self.blocks[i])
        if kind not in holder:
            raise NasplatError(f"hybrid supernet: block {i + 1} holds no '{kind}' block; it holds {list(holder)}")
        return holder[kind]

    def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != 1:
            raise NasplatError(f"the hybrid supernet takes one input tensor, got {len(inputs)}")
        cfg = self._config(arch)
        x = self.stem(inputs[0])
        for i, b in enumerate(cfg["blocks"]):
            block = self._block(i, b["type"])
            assert isinstance(block, (SuperConvBlock, SuperAttnBlock))
            x = block.run(x, b)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier.run(x, cfg["num_classes"])

    def path_modules(self, arch: Architecture) -> list[nn.Module]:
        """The modules ``arch`` runs (BatchNorms included only where used), in forward order."""
        cfg = self._config(arch)
        out: list[nn.Module] = [self.stem, self.stem.conv, self.stem.bn]
        c_in = cfg["stem_channels"]
        for i, b in enumerate(cfg["blocks"]):
            block = self._block(i, b["type"])
            assert isinstance(block, (SuperConvBlock, SuperAttnBlock))
            out += block.used(c_in, b)
            c_in = b["width"]
        return [*out, self.classifier]

    def extract(self, arch: Architecture) -> nn.Module:
        """A stand-alone :class:`~.standalone.HybridNetwork` with this path's weight slices and BN statistics."""
        self.space.validate(arch)
        cfg = self._config(arch)
        model = build_model(cfg)
        ref = next(self.parameters())
        model.to(device=ref.device, dtype=ref.dtype)
        mine = self.state_dict()
        kinds = [b["type"] for b in cfg["blocks"]]
        state = {}
        for key, target in model.state_dict().items():
            src = mine[supernet_key(key, kinds)]
            state[key] = slice_like(src, tuple(target.shape), conv_kernel=target.ndim == 4).detach().clone()
        model.load_state_dict(state, strict=True)
        model.train(self.training)
        return model


def supernet_key(key: str, kinds: list[str]) -> str:
    """The supernet's name of a stand-alone tensor: ``blocks.<i>.<rest>`` -> ``blocks.<i>.<kind>.<rest>``."""
    parts = key.split(".")
    if parts[0] == "blocks":
        return ".".join([parts[0], parts[1], kinds[int(parts[1])], *parts[2:]])
    return key


def slice_like(src: torch.Tensor, shape: tuple[int, ...], *, conv_kernel: bool) -> torch.Tensor:
    """The slice of ``src`` of ``shape``: a prefix in every dimension, the centre of a conv kernel's last two."""
    if src.ndim != len(shape):
        raise NasplatError(f"cannot slice a tensor of shape {tuple(src.shape)} to {shape}")
    index = []
    for d, (big, small) in enumerate(zip(src.shape, shape, strict=True)):
        if small > big:
            raise NasplatError(f"cannot slice a tensor of shape {tuple(src.shape)} to {shape}")
        lo = (big - small) // 2 if conv_kernel and d >= 2 else 0
        index.append(slice(lo, lo + small))
    return src[tuple(index)]


__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticLayerNorm",
    "ElasticLinear",
    "HybridSupernet",
    "SuperAttnBlock",
    "SuperConvBlock",
    "slice_like",
    "strided",
    "supernet_key",
]
