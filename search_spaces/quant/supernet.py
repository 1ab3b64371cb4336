"""The quantization-policy supernet: one set of float weights, fake-quantized per the active policy.

The base network (another family's supernet, or the built-in ResNet-8) is built as usual; then, in this
instance only, every quantizable ``Conv2d``/``Linear`` is swapped for a :class:`FakeQuantConv2d` /
:class:`FakeQuantLinear` that shares its parameters and every ``BatchNorm`` for a
:class:`MultiStatBatchNorm2d` / :class:`MultiStatBatchNorm1d` that shares its affine parameters and keeps one
set of running statistics per precision group. Module names are unchanged, so the base family's own
``activate``/``extract``/``path_modules`` keep working. A :class:`PolicyContext` shared by these modules holds
the active policy (layer name -> weight and activation format) while ``forward_path`` runs.

Fake quantization runs the exact functions of :mod:`.standalone` (so extraction reproduces it), with
straight-through gradients: weights get the gradient of their quantized value unchanged; activations get it
where they fall inside the quantization range (clipped STE) and not where they were clamped.

Activation ranges are calibrated per layer with an exponential moving average of each training batch's
minimum and maximum (momentum ``act_momentum``), updated in training mode when gradients are on, i.e. on
training steps, never during BN recalibration or evaluation (so evaluations do not change the supernet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nasplat.errors import NasplatError
from nasplat.model import Supernet

from .standalone import (
    INT_BITS,
    SCALED,
    QuantizedNetwork,
    act_bounds,
    act_scale,
    conv_settings,
    decode_weight,
    encode_weight,
    quantize_act,
)

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

    from .family import QuantPlan


class PolicyContext:
    """The active per-layer formats (a stack, so nested activation works) and the last weight format run."""

    def __init__(self, bn_group_of: dict[str, str], default_group: str) -> None:
        self.stack: list[dict[str, tuple[str, str]]] = []
        self.bn_group_of = bn_group_of  # weight format -> precision group of the BN statistics it feeds
        self.default_group = default_group
        self.last_weight_format: str | None = None
        self.trace: dict[str, str] | None = None  # BN name -> group used, while tracing

    def formats(self, name: str) -> tuple[str, str]:
        if not self.stack:
            raise NasplatError(
                "the quant supernet's layers have no active policy: run them through the supernet inside "
                "`with supernet.activate(arch):`"
            )
        try:
            return self.stack[-1][name]
        except KeyError:
            raise NasplatError(f"the active policy has no formats for layer '{name}'") from None

    def bn_group(self) -> str:
        fmt = self.last_weight_format
        return self.default_group if fmt is None else self.bn_group_of.get(fmt, self.default_group)


class _WeightSTE(torch.autograd.Function):
    """Forward: the weight on its format's grid (exactly as stored and decoded); backward: identity."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, fmt: str) -> torch.Tensor:
        stored, scale = encode_weight(w, fmt)
        return decode_weight(stored, scale, fmt).to(w.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _ActSTE(torch.autograd.Function):
    """Forward: :func:`~.standalone.quantize_act`; backward: the gradient where ``x`` was inside the range."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: str, scale: torch.Tensor | None, signed: bool) -> torch.Tensor:
        if scale is not None:
            low, high = act_bounds(fmt, signed)
            ratio = x / scale
            ctx.save_for_backward((ratio >= low) & (ratio <= high))
        else:
            ctx.save_for_backward(None)
        return quantize_act(x, fmt, scale, signed)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (mask,) = ctx.saved_tensors
        return (grad if mask is None else grad * mask), None, None, None


def fake_quant_weight(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``w`` on the grid of ``fmt`` with a straight-through gradient (``w`` itself for float32)."""
    if fmt == "float32":
        return w
    return cast(torch.Tensor, _WeightSTE.apply(w, fmt))


def fake_quant_act(x: torch.Tensor, fmt: str, scale: torch.Tensor | None, signed: bool) -> torch.Tensor:
    if fmt == "float32":
        return x
    return cast(torch.Tensor, _ActSTE.apply(x, fmt, scale, signed))


class _FakeQuantMixin:
    """Activation-range observer and the per-format forward shared by the conv and linear wrappers."""

    qname: str
    ctx: PolicyContext
    act_momentum: float
    act_lo: torch.Tensor
    act_hi: torch.Tensor
    act_seen: torch.Tensor
    training: bool
    weight: torch.Tensor

    def _init_quant(self, name: str, ctx: PolicyContext, act_momentum: float) -> None:
        self.qname = name
        self.ctx = ctx
        self.act_momentum = act_momentum
        module = cast(nn.Module, self)
        module.register_buffer("act_lo", torch.tensor(-1.0))
        module.register_buffer("act_hi", torch.tensor(1.0))
        module.register_buffer("act_seen", torch.tensor(0, dtype=torch.long))

    def _observe(self, x: torch.Tensor) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return
        with torch.no_grad():
            lo = torch.clamp(x.detach().min(), max=0.0).to(self.act_lo.dtype)
            hi = torch.clamp(x.detach().max(), min=0.0).to(self.act_hi.dtype)
            if int(self.act_seen) == 0:
                self.act_lo.copy_(lo)
                self.act_hi.copy_(hi)
            else:
                m = self.act_momentum
                self.act_lo.mul_(1 - m).add_(lo, alpha=m)
                self.act_hi.mul_(1 - m).add_(hi, alpha=m)
            self.act_seen.add_(1)

    @property
    def act_signed(self) -> bool:
        """Whether the calibrated input range reaches below zero (else unsigned integer activations)."""
        return bool(self.act_lo < 0)

    def act_scale_for(self, fmt: str) -> torch.Tensor | None:
        return act_scale(self.act_lo, self.act_hi, fmt, self.act_signed) if fmt in SCALED else None

    def _quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_fmt, a_fmt = self.ctx.formats(self.qname)
        self._observe(x)
        xq = fake_quant_act(x, a_fmt, self.act_scale_for(a_fmt), self.act_signed)
        wq = fake_quant_weight(self.weight, w_fmt)
        self.ctx.last_weight_format = w_fmt
        return xq, wq


class FakeQuantConv2d(_FakeQuantMixin, nn.Conv2d):
    """A ``Conv2d`` (sharing the original's parameters) computing in the active policy's formats."""

    def __init__(self, conv: nn.Conv2d, name: str, ctx: PolicyContext, act_momentum: float) -> None:
        s = conv_settings(conv)
        nn.Conv2d.__init__(
            self, s["in_channels"], s["out_channels"], tuple(s["kernel_size"]), stride=tuple(s["stride"]),
            padding=tuple(s["padding"]), dilation=tuple(s["dilation"]), groups=s["groups"], bias=s["bias"],
            device="meta",
        )  # fmt: skip
        self.weight = conv.weight
        self.bias = conv.bias
        self._init_quant(name, ctx, act_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self._quantized(x)
        return F.conv2d(xq, wq, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FakeQuantLinear(_FakeQuantMixin, nn.Linear):
    """A ``Linear`` (sharing the original's parameters) computing in the active policy's formats."""

    def __init__(self, linear: nn.Linear, name: str, ctx: PolicyContext, act_momentum: float) -> None:
        nn.Linear.__init__(self, linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self._init_quant(name, ctx, act_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self._quantized(x)
        return F.linear(xq, wq, self.bias)


class _MultiStatMixin:
    """BatchNorm with one set of running statistics per precision group of the layer that feeds it.

    The default group uses the usual ``running_mean``/``running_var``/``num_batches_tracked`` buffers; group
    ``g`` keeps ``running_mean_g`` etc. and swaps them in for the forward pass when it is active.
    """

    qname: str
    ctx: PolicyContext
    groups_extra: tuple[str, ...]
    _buffers: dict[str, torch.Tensor | None]

    _STATS = ("running_mean", "running_var", "num_batches_tracked")

    def _init_groups(self, name: str, ctx: PolicyContext, groups: tuple[str, ...]) -> None:
        self.qname = name
        self.ctx = ctx
        self.groups_extra = groups
        for g in groups:
            for stat in self._STATS:
                base = self._buffers[stat]
                assert base is not None
                cast(nn.Module, self).register_buffer(f"{stat}_{g}", base.detach().clone())

    def reset_running_stats(self) -> None:
        """Reset every group's statistics (BN recalibration resets all, then re-estimates the active one)."""
        nn.modules.batchnorm._NormBase.reset_running_stats(cast(Any, self))
        for g in getattr(self, "groups_extra", ()):
            cast(torch.Tensor, self._buffers[f"running_mean_{g}"]).zero_()
            cast(torch.Tensor, self._buffers[f"running_var_{g}"]).fill_(1)
            cast(torch.Tensor, self._buffers[f"num_batches_tracked_{g}"]).zero_()

    @contextmanager
    def _group_stats(self) -> Iterator[None]:
        g = self.ctx.bn_group()
        if self.ctx.trace is not None:
            self.ctx.trace[self.qname] = g
        if g == self.ctx.default_group or g not in self.groups_extra:
            yield
            return
        names = [(stat, f"{stat}_{g}") for stat in self._STATS]
        for a, b in names:
            self._buffers[a], self._buffers[b] = self._buffers[b], self._buffers[a]
        try:
            yield
        finally:
            for a, b in names:
                self._buffers[a], self._buffers[b] = self._buffers[b], self._buffers[a]


class MultiStatBatchNorm2d(_MultiStatMixin, nn.BatchNorm2d):
    def __init__(self, bn: nn.BatchNorm2d, name: str, ctx: PolicyContext, groups: tuple[str, ...]) -> None:
        _copy_bn_into(self, nn.BatchNorm2d, bn)
        self._init_groups(name, ctx, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._group_stats():
            return nn.BatchNorm2d.forward(self, x)


class MultiStatBatchNorm1d(_MultiStatMixin, nn.BatchNorm1d):
    def __init__(self, bn: nn.BatchNorm1d, name: str, ctx: PolicyContext, groups: tuple[str, ...]) -> None:
        _copy_bn_into(self, nn.BatchNorm1d, bn)
        self._init_groups(name, ctx, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._group_stats():
            return nn.BatchNorm1d.forward(self, x)


def _copy_bn_into(new: nn.Module, cls: type[nn.Module], bn: nn.modules.batchnorm._BatchNorm) -> None:
    if not bn.track_running_stats:
        raise NasplatError(f"BatchNorm without running statistics cannot keep per-precision statistics ({bn})")
    cls.__init__(new, bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine, device="meta")
    new.weight = bn.weight
    new.bias = bn.bias
    for stat in ("running_mean", "running_var", "num_batches_tracked"):
        new._buffers[stat] = bn._buffers[stat]
    new.train(bn.training)


def swap_modules(
    root: nn.Module, ctx: PolicyContext, layer_names: set[str], bn_groups: tuple[str, ...], act_momentum: float
) -> None:
    """Replace (in ``root`` only) the named conv/linear layers by fake-quant wrappers and every BN by a
    multi-statistics BN, sharing parameters and buffers."""
    for name, module in list(root.named_modules()):
        if not name:
            continue
        new: nn.Module | None = None
        if name in layer_names:
            if type(module) is nn.Conv2d:
                new = FakeQuantConv2d(module, name, ctx, act_momentum)
            elif type(module) is nn.Linear:
                new = FakeQuantLinear(module, name, ctx, act_momentum)
            else:
                raise NasplatError(f"layer '{name}' is a {type(module).__name__}, not a Conv2d or Linear")
        elif type(module) is nn.BatchNorm2d:
            new = MultiStatBatchNorm2d(module, name, ctx, bn_groups)
        elif type(module) is nn.BatchNorm1d:
            new = MultiStatBatchNorm1d(module, name, ctx, bn_groups)
        if new is not None:
            parent_name, _, leaf = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, leaf, new)


def quantizable_layers(root: nn.Module) -> list[str]:
    """Names of the plain ``Conv2d`` and ``Linear`` modules of a network, in registration order."""
    return [n for n, m in root.named_modules() if n and type(m) in (nn.Conv2d, nn.Linear)]


class QuantSupernet(Supernet):
    """Weight sharing across quantization policies (and across base architectures, for joint search)."""

    def __init__(self, space: SearchSpace, plan: QuantPlan, seed: int) -> None:
        super().__init__(space)
        self.plan = plan
        self.ctx = PolicyContext(plan.bn_group_of, plan.default_group)
        self.base = plan.base.build(seed)
        swap_modules(self.base, self.ctx, set(plan.layer_slot), plan.extra_groups, plan.act_momentum)

    def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> Any:
        policy = self.plan.policy(arch)
        base_arch = self.plan.base_arch(arch)
        self.ctx.stack.append(policy)
        saved_last = self.ctx.last_weight_format
        self.ctx.last_weight_format = None
        try:
            return self.plan.base.forward(self.base, base_arch, inputs)
        finally:
            self.ctx.stack.pop()
            self.ctx.last_weight_format = saved_last

    def path_modules(self, arch: Architecture) -> list[nn.Module]:
        return self.plan.base.path_modules(self.base, self.plan.base_arch(arch))

    def trace_bn_groups(self, arch: Architecture) -> dict[str, str]:
        """BN name -> precision group whose statistics ``arch`` uses (one eval-mode pass on a zero input)."""
        shape = self.plan.input_shape
        ref = next(self.parameters())
        x = torch.zeros((1, *shape), device=ref.device, dtype=ref.dtype)
        modes = {m: m.training for m in self.modules()}
        self.ctx.trace = {}
        try:
            self.eval()
            with torch.no_grad(), self.activate(arch):
                self(x)
            return dict(self.ctx.trace)
        finally:
            self.ctx.trace = None
            for m, training in modes.items():
                m.training = training

    def layer_config(self, arch: Architecture, used: list[str]) -> dict[str, dict[str, Any]]:
        """Stand-alone ``layers`` config of ``arch``: formats and activation signedness of the ``used`` layers."""
        policy = self.plan.policy(arch)
        out: dict[str, dict[str, Any]] = {}
        for name in used:
            module = cast(_FakeQuantMixin, self.base.get_submodule(name))
            w, a = policy[name]
            out[name] = {"w": w, "a": a, "signed": module.act_signed}
        return out

    def extract(self, arch: Architecture) -> nn.Module:
        """A stand-alone :class:`~.standalone.QuantizedNetwork`: weights stored in their formats, BN statistics
        of the precision group each BN sees, calibrated activation scales."""
        self.space.validate(arch)
        base_arch = self.plan.base_arch(arch)
        groups = self.trace_bn_groups(arch)
        float_base = self.plan.base.extract(self.base, base_arch)
        float_modules = dict(float_base.named_modules())
        used = quantizable_layers(float_base)
        unknown = [name for name in used if name not in self.plan.layer_slot]
        if unknown:
            raise NasplatError(
                f"the base family's extracted network has conv/linear layers the supernet does not: {', '.join(unknown)} "
                "(the quant family needs base families whose extract keeps module names)"
            )
        layers = self.layer_config(arch, used)
        floats: dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}
        for name, spec in layers.items():
            mine = cast(Any, self.base.get_submodule(name))
            theirs = float_modules.get(name)
            if theirs is None or tuple(getattr(theirs, "weight", torch.empty(0)).shape) != tuple(mine.weight.shape):
                raise NasplatError(
                    f"the base family's extracted network has no layer '{name}' shaped like the supernet's: "
                    "the quant family needs base families whose extract keeps module names and whole weights"
                )
            scale = mine.act_scale_for(spec["a"])
            bias = None if mine.bias is None else mine.bias.detach()
            floats[name] = (mine.weight.detach(), bias, scale)
        with torch.no_grad():
            for name, group in groups.items():
                if group == self.plan.default_group:
                    continue
                mine_bn = self.base.get_submodule(name)
                theirs_bn = float_modules.get(name)
                if not isinstance(theirs_bn, nn.modules.batchnorm._BatchNorm):
                    raise NasplatError(f"the base family's extracted network has no BatchNorm '{name}'")
                for stat in ("running_mean", "running_var", "num_batches_tracked"):
                    cast(torch.Tensor, getattr(theirs_bn, stat)).copy_(getattr(mine_bn, f"{stat}_{group}"))
        config = {"base": self.plan.base.standalone_config(float_base), "layers": layers}
        model = QuantizedNetwork(config, base=float_base)
        for name, (weight, bias, scale) in floats.items():
            layer = cast(Any, model.base.get_submodule(name))
            layer.load_float(weight.cpu(), None if bias is None else bias.cpu(), None if scale is None else scale.cpu())
        ref = next(self.parameters())
        model.to(device=ref.device)
        model.train(self.training)
        return model


#: Activation formats whose range is unsigned when the calibrated minimum is zero.
UNSIGNED_CAPABLE = frozenset(INT_BITS)
