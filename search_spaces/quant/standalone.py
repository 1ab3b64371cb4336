"""Stand-alone quantized network: a base network whose conv/linear layers run in chosen number formats.

This file imports only ``torch`` and the standard library: it is copied verbatim into export bundles and
loaded by processes that do not have nasplat. ``build_model(config)`` rebuilds a network from the
``nasplat_config`` dict every instance carries::

    {"base": {"kind": "resnet8", "config": {"input_shape": [1, 28, 28], "num_classes": 10, "width": 16}},
     "layers": {"stem.conv": {"w": "int8", "a": "int8", "signed": true}, ...}}

``base.kind`` is ``"resnet8"`` (the small ResNet defined below) or ``"source"``: then ``base.source`` holds the
text of another stand-alone model file (torch and the standard library only, e.g. a nasplat cell network)
and ``base.config`` the config its ``build_model`` takes. ``layers`` maps the dotted module name of every
quantized ``Conv2d``/``Linear`` of the base to its weight format ``w``, its input-activation format ``a`` and
whether the activation range is signed.

How each format is stored and computed (``weight`` and ``weight_scale`` buffers of each layer):

- ``float32``: the weight as is; ``bfloat16`` / ``float16``: the weight in that dtype, cast up to compute.
- ``int8``, ``int4``, ``int2``: symmetric per-output-channel integers ``q`` in ``[-(2^(b-1)-1), 2^(b-1)-1]``
  stored as ``torch.int8`` (one value per byte, not packed), with ``weight_scale = max|w| / (2^(b-1)-1)`` per
  output channel; the layer computes with ``q * weight_scale``.
- ``fp8_e4m3`` / ``fp8_e5m2``: ``w / weight_scale`` stored as ``torch.float8_e4m3fn`` / ``torch.float8_e5m2``
  with ``weight_scale = max|w| / (largest finite value of the format)`` per output channel.

Activations (the input of each quantized layer) are quantized per tensor with a calibrated scale
(``act_scale`` buffer): integers ``round(x / act_scale)`` clamped to ``[0, 2^b-1]`` (unsigned, for inputs that
are never negative, e.g. after a ReLU) or to ``[-(2^(b-1)-1), 2^(b-1)-1]`` (signed), then multiplied back;
FP8 by scaling, clamping to the format's range and casting; bfloat16/float16 by casting. Compute is float32
after dequantization, so the network runs anywhere PyTorch runs and reproduces nasplat's fake-quantized
supernet exactly: the supernet uses these same functions.
"""

from __future__ import annotations

import hashlib
import sys
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Number formats, from low to high precision (the order of a policy dimension's choices).
FORMATS: tuple[str, ...] = ("int2", "int4", "fp8_e5m2", "fp8_e4m3", "int8", "bfloat16", "float16", "float32")
#: Integer formats and their bit widths.
INT_BITS: dict[str, int] = {"int2": 2, "int4": 4, "int8": 8}
#: Floating-point storage dtypes of the float formats.
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
#: Relative tolerance (of the largest output magnitude) for comparing this network with another runtime's
#: execution of it when activations are quantized (see ``QuantizedNetwork.nasplat_onnx_rtol``).
ONNX_RTOL = 0.05
#: Formats stored with a per-channel (weights) or per-tensor (activations) scale.
SCALED: frozenset[str] = frozenset({"int2", "int4", "int8", "fp8_e4m3", "fp8_e5m2"})


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown number format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _range_max(fmt: str) -> float:
    """Largest representable magnitude of a scaled format (integer levels or the float8 maximum)."""
    if fmt in INT_BITS:
        return float(2 ** (INT_BITS[fmt] - 1) - 1)
    return float(torch.finfo(FLOAT_DTYPES[fmt]).max)


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (ndim - 1))


# ------------------------------------------------------------------------------------------------------------
# weights


def weight_scale(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """Per-output-channel scale of a scaled format: ``max|w| / range`` (1 where a channel is all zeros)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = amax / _range_max(fmt)
    return torch.where(amax > 0, scale, torch.ones_like(scale))


def encode_weight(w: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(stored tensor, per-channel scale or None) of a float32 weight in ``fmt``."""
    check_format(fmt)
    w = w.detach()
    if fmt not in SCALED:
        return w.to(FLOAT_DTYPES[fmt]), None
    scale = weight_scale(w, fmt)
    top = _range_max(fmt)
    scaled = w / _per_channel(scale, w.ndim)
    if fmt in INT_BITS:
        return torch.clamp(torch.round(scaled), -top, top).to(torch.int8), scale
    return torch.clamp(scaled, -top, top).to(FLOAT_DTYPES[fmt]), scale


def decode_weight(stored: torch.Tensor, scale: torch.Tensor | None, fmt: str) -> torch.Tensor:
    """The float32 weight a layer computes with."""
    w = stored.to(torch.float32)
    if scale is None:
        return w
    return w * _per_channel(scale, stored.ndim)


# ------------------------------------------------------------------------------------------------------------
# activations


def act_scale(lo: torch.Tensor, hi: torch.Tensor, fmt: str, signed: bool) -> torch.Tensor:
    """Per-tensor scale of a scaled activation format from a calibrated range ``[lo, hi]`` (``lo <= 0 <= hi``)."""
    if fmt in INT_BITS and not signed:
        levels = float(2 ** INT_BITS[fmt] - 1)
        amax = hi.detach().to(torch.float32)
    else:
        levels = _range_max(fmt)
        amax = torch.maximum(lo.detach().abs(), hi.detach().abs()).to(torch.float32)
    return torch.where(amax > 0, amax / levels, torch.ones_like(amax))


def act_bounds(fmt: str, signed: bool) -> tuple[float, float]:
    """Clamp range of ``x / scale`` for a scaled activation format."""
    if fmt in INT_BITS and not signed:
        return 0.0, float(2 ** INT_BITS[fmt] - 1)
    top = _range_max(fmt)
    return -top, top


def quantize_act(x: torch.Tensor, fmt: str, scale: torch.Tensor | None, signed: bool) -> torch.Tensor:
    """The activation ``x`` as the layer sees it in ``fmt`` (float32 values on the format's grid)."""
    if fmt == "float32":
        return x
    if fmt not in SCALED:
        return x.to(FLOAT_DTYPES[fmt]).to(x.dtype)
    assert scale is not None
    low, high = act_bounds(fmt, signed)
    y = torch.clamp(x / scale, low, high)
    y = torch.round(y) if fmt in INT_BITS else y.to(FLOAT_DTYPES[fmt]).to(x.dtype)
    return y * scale


# ------------------------------------------------------------------------------------------------------------
# quantized layers


class QuantLayer(nn.Module):
    """Common part of :class:`QConv2d` and :class:`QLinear`: stored weight, optional bias, activation scale."""

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, w_fmt: str, a_fmt: str, signed: bool) -> None:
        super().__init__()
        check_format(w_fmt)
        check_format(a_fmt)
        self.w_fmt, self.a_fmt, self.signed = w_fmt, a_fmt, bool(signed)
        dtype = torch.int8 if w_fmt in INT_BITS else FLOAT_DTYPES[w_fmt]
        self.weight: torch.Tensor
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=dtype))
        self.weight_scale: torch.Tensor | None
        if w_fmt in SCALED:
            self.register_buffer("weight_scale", torch.ones(weight_shape[0]))
        else:
            self.weight_scale = None
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.act_scale: torch.Tensor | None
        if a_fmt in SCALED:
            self.register_buffer("act_scale", torch.ones(()))
        else:
            self.act_scale = None

    def load_float(self, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None) -> None:
        """Encode a float32 weight (and copy bias and activation scale) into this layer."""
        stored, w_scale = encode_weight(weight, self.w_fmt)
        with torch.no_grad():
            self.weight.copy_(stored)
            if w_scale is not None and self.weight_scale is not None:
                self.weight_scale.copy_(w_scale)
            if self.bias is not None and bias is not None:
                self.bias.copy_(bias.detach())
            if self.act_scale is not None and scale is not None:
                self.act_scale.copy_(scale.detach())

    def dequantized(self) -> torch.Tensor:
        return decode_weight(self.weight, self.weight_scale, self.w_fmt)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_act(x, self.a_fmt, self.act_scale, self.signed)

    def extra_repr(self) -> str:
        return f"weight={self.w_fmt}, act={self.a_fmt}{'' if self.signed else ' (unsigned)'}"


class QConv2d(QuantLayer):
    """A ``Conv2d`` (zero padding) with a stored low-precision weight and quantized input."""

    def __init__(self, conv: dict[str, Any], w_fmt: str, a_fmt: str, signed: bool) -> None:
        shape = (conv["out_channels"], conv["in_channels"] // conv["groups"], *conv["kernel_size"])
        super().__init__(shape, conv["bias"], w_fmt, a_fmt, signed)
        self.stride = tuple(conv["stride"])
        self.padding = tuple(conv["padding"])
        self.dilation = tuple(conv["dilation"])
        self.groups = int(conv["groups"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            self.quantized_input(x),
            self.dequantized(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


class QLinear(QuantLayer):
    """A ``Linear`` with a stored low-precision weight and quantized input."""

    def __init__(self, in_features: int, out_features: int, bias: bool, w_fmt: str, a_fmt: str, signed: bool) -> None:
        super().__init__((out_features, in_features), bias, w_fmt, a_fmt, signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.dequantized(), self.bias)


def conv_settings(conv: nn.Conv2d) -> dict[str, Any]:
    """The structure of a ``Conv2d`` (what :class:`QConv2d` needs); zero padding only."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"only zero-padded convolutions with explicit padding can be quantized (got {conv})")
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": list(conv.kernel_size),
        "stride": list(conv.stride),
        "padding": list(conv.padding),  # type: ignore[arg-type]
        "dilation": list(conv.dilation),
        "groups": conv.groups,
        "bias": conv.bias is not None,
    }


def quantized_layer(module: nn.Module, w_fmt: str, a_fmt: str, signed: bool) -> QuantLayer:
    """An empty quantized counterpart of a float ``Conv2d`` or ``Linear``."""
    if isinstance(module, nn.Conv2d):
        return QConv2d(conv_settings(module), w_fmt, a_fmt, signed)
    if isinstance(module, nn.Linear):
        return QLinear(module.in_features, module.out_features, module.bias is not None, w_fmt, a_fmt, signed)
    raise TypeError(f"cannot quantize a {type(module).__name__} (only Conv2d and Linear)")


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


# ------------------------------------------------------------------------------------------------------------
# the built-in base: a small ResNet


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, padding=0, bias=False))
            self.shortcut.add_module("bn", nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


RESNET_KEYS: tuple[str, ...] = ("input_shape", "num_classes", "width")


def resnet_plan(config: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of the three blocks of :class:`ResNet8`."""
    w = int(config["width"])
    return [(w, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)]


class ResNet8(nn.Module):
    """ResNet-8: a 3x3 stem conv (``width`` channels), three basic blocks (widths w, 2w, 4w; strides 1, 2, 2),
    global average pooling and a linear classifier. Quantizable layers: ``stem.conv``, ``blocks.<i>.conv1``,
    ``blocks.<i>.conv2``, ``blocks.<i>.shortcut.conv`` (blocks 1 and 2) and ``fc``."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        unknown = sorted(set(config) - set(RESNET_KEYS))
        missing = [k for k in RESNET_KEYS if k not in config]
        if unknown or missing:
            raise ValueError(f"resnet8 config keys: unknown {unknown}, missing {missing}; expected {list(RESNET_KEYS)}")
        self.nasplat_config: dict[str, Any] = {
            "input_shape": [int(s) for s in config["input_shape"]],
            "num_classes": int(config["num_classes"]),
            "width": int(config["width"]),
        }
        c_in = self.nasplat_config["input_shape"][0]
        w = self.nasplat_config["width"]
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(c_in, w, 3, stride=1, padding=1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(w))
        self.stem.add_module("relu", nn.ReLU())
        self.blocks = nn.Sequential(*(BasicBlock(a, b, s) for a, b, s in resnet_plan(self.nasplat_config)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, self.nasplat_config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


# ------------------------------------------------------------------------------------------------------------
# the quantized network


def _source_module(source: str) -> types.ModuleType:
    """Import a stand-alone model file's text as a module (cached by content)."""
    name = "nasplat_quant_base_" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__file__ = f"<{name}>"
        sys.modules[name] = module  # registered so that classes defined in it resolve their module
        try:
            exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # the bundle's own model source
        except BaseException:
            del sys.modules[name]
            raise
    return module


def build_base(base: dict[str, Any]) -> nn.Module:
    """The float base network described by ``config["base"]``."""
    kind = base.get("kind")
    if kind == "resnet8":
        return ResNet8(dict(base["config"]))
    if kind == "source":
        model: nn.Module = _source_module(str(base["source"])).build_model(dict(base["config"]))
        return model
    raise ValueError(f"unknown base kind {kind!r}; allowed: resnet8, source")


class QuantizedNetwork(nn.Module):
    """A base network with its conv/linear layers replaced by :class:`QConv2d`/:class:`QLinear`."""

    def __init__(self, config: dict[str, Any], base: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, dict) or sorted(config) != ["base", "layers"]:
            raise ValueError("config must be a dict with exactly the keys 'base' and 'layers'")
        layers: dict[str, dict[str, Any]] = {
            str(k): {"w": str(v["w"]), "a": str(v["a"]), "signed": bool(v["signed"])}
            for k, v in config["layers"].items()
        }
        self.nasplat_config: dict[str, Any] = {"base": dict(config["base"]), "layers": layers}
        # quantized activations round to a grid: another runtime (ONNX) may put a value that sits on a rounding
        # boundary on the neighbouring level, so exporters compare within this share of the output's magnitude
        self.nasplat_onnx_rtol = ONNX_RTOL if any(spec["a"] != "float32" for spec in layers.values()) else 0.0
        self.base = base if base is not None else build_base(self.nasplat_config["base"])
        for name, spec in layers.items():
            try:
                original = self.base.get_submodule(name)
            except AttributeError:
                raise ValueError(f"config layers: the base network has no module {name!r}") from None
            _set_submodule(self.base, name, quantized_layer(original, spec["w"], spec["a"], spec["signed"]))

    def forward(self, x: torch.Tensor) -> Any:
        return self.base(x)

    def nasplat_qdq(self) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
        """The layers an ONNX runtime can run on int8 kernels, for a QDQ export (see ``nasplat.export._onnx_qdq``).

        Returns a float copy of this network in which every layer with int8 weights and int8 input
        activations is a plain ``Conv2d`` / ``Linear`` holding its dequantized weight and taking its input
        unquantized (the exporter puts QuantizeLinear/DequantizeLinear there), every other layer as it is
        (int4, int2 and float8 stay simulated in float arithmetic), and, per such layer (dotted name in the
        copy), its integers, per-channel weight scale, activation scale and signedness.
        """
        import copy

        twin = copy.deepcopy(self).cpu().eval()
        layers: dict[str, dict[str, Any]] = {}
        for name, module in list(twin.named_modules()):
            if not isinstance(module, QuantLayer) or module.w_fmt != "int8" or module.a_fmt != "int8":
                continue
            assert module.weight_scale is not None and module.act_scale is not None
            plain: nn.Module
            if isinstance(module, QConv2d):
                out_c, in_c_per_group, kh, kw = (int(d) for d in module.weight.shape)
                plain = nn.Conv2d(
                    in_c_per_group * module.groups, out_c, (kh, kw), stride=module.stride,
                    padding=module.padding, dilation=module.dilation, groups=module.groups,
                    bias=module.bias is not None,
                )  # fmt: skip
            else:
                plain = nn.Linear(module.weight.shape[1], module.weight.shape[0], bias=module.bias is not None)
            with torch.no_grad():
                plain.weight.copy_(module.dequantized())
                if module.bias is not None:
                    cast_bias: Any = plain.bias
                    cast_bias.copy_(module.bias)
            _set_submodule(twin, name, plain.eval())
            layers[name] = {
                "weight": module.weight.detach().clone(),
                "weight_scale": module.weight_scale.detach().clone(),
                "act_scale": float(module.act_scale),
                "act_signed": module.signed,
            }
        return twin, layers


def build_model(config: dict[str, Any]) -> nn.Module:
    """A network with the structure ``config`` describes (weights zero until a state dict is loaded)."""
    return QuantizedNetwork(config)
