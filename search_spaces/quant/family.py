"""The quantization-policy family: per-layer weight and activation formats over a base network.

A quant space names a base network in its macro (``base_space``: another family's space, by registered name
or by a file path relative to the quant file, optionally fixed to one architecture with ``base_arch``; or
``base: resnet8``, the small ResNet of :mod:`.standalone`). Its quantizable layers are the base supernet's
``Conv2d`` and ``Linear`` modules, grouped into *slots*: ``macro.slots`` maps each slot name to glob patterns
over module names (the first slot whose pattern matches a layer takes it), and without ``slots`` every layer
is its own slot, named after the module with non-alphanumerics turned into ``_`` (``stem.conv`` ->
``stem_conv``). Each slot has two ordinal dimensions, ``q.<slot>.w`` (weight format) and ``q.<slot>.a``
(input-activation format), whose choices are number formats listed from low to high precision::

    int2, int4, fp8_e5m2, fp8_e4m3, int8, bfloat16, float16, float32

With ``base_space`` and no ``base_arch``, the space must also declare every dimension of the base space (same
label, type and choices): architecture and policy are then searched jointly.

String form: the policy as ``slot:w/a`` tokens with short format names (``i2 i4 e5m2 e4m3 i8 bf16 f16 f32``),
preceded by the base architecture's own string and `` :: `` in joint spaces, e.g.
``|nor_conv_3x3~0|+|...| :: stem:i8/f32 stage1:i4/i8 classifier:i8/i8``.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from nasplat.errors import NasplatError, SpecError
from nasplat.measure import LayerRecord
from nasplat.model import ClassificationTask, Family, MacroSettings, seeded
from nasplat.registry import register
from nasplat.space import OrdinalDimension, label_key_paths

from .standalone import FORMATS, ResNet8, resnet_plan
from .supernet import QuantSupernet, quantizable_layers

if TYPE_CHECKING:
    from nasplat.model import Task
    from nasplat.space import Architecture, SearchSpace, Value

#: Short names of the formats in the string form.
SHORT: dict[str, str] = {
    "int2": "i2",
    "int4": "i4",
    "int8": "i8",
    "fp8_e4m3": "e4m3",
    "fp8_e5m2": "e5m2",
    "bfloat16": "bf16",
    "float16": "f16",
    "float32": "f32",
}
LONG: dict[str, str] = {v: k for k, v in SHORT.items()}
RANK: dict[str, int] = {f: i for i, f in enumerate(FORMATS)}
POLICY_PREFIX = "q."
SLOT_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_BN_GROUPS: tuple[tuple[str, ...], ...] = (
    ("float32", "float16", "bfloat16"),
    ("int8", "fp8_e4m3"),
    ("fp8_e5m2",),
    ("int4",),
    ("int2",),
)


class QuantMacro(MacroSettings):
    """Macro settings of a quant space (``macro:`` in its file); see the module docstring."""

    base_space: str | None = Field(
        default=None, description="base space: registered name or path relative to this file"
    )
    base_arch: str | None = Field(default=None, description="fixed base architecture (the base family's string form)")
    base: Literal["resnet8"] | None = Field(default=None, description="a built-in base network instead of a space")
    width: int = Field(default=16, ge=1, description="resnet8: channels of the stem and first block")
    slots: dict[str, list[str]] | None = Field(
        default=None, description="slot name -> glob patterns over the base's conv/linear module names"
    )
    bn_groups: list[list[str]] = Field(
        default_factory=lambda: [list(g) for g in DEFAULT_BN_GROUPS],
        description="weight formats whose BatchNorm statistics are shared; the group holding float32 is the default",
    )
    act_momentum: float = Field(default=0.1, gt=0, le=1, description="EMA momentum of activation-range calibration")

    @model_validator(mode="after")
    def _one_base(self) -> QuantMacro:
        if (self.base_space is None) == (self.base is None):
            raise ValueError("give exactly one of 'base_space' (a space) or 'base' (a built-in network: resnet8)")
        if self.base_arch is not None and self.base_space is None:
            raise ValueError("'base_arch' fixes an architecture of 'base_space'; it needs 'base_space'")
        return self


# ------------------------------------------------------------------------------------------------------------
# base networks


class SpaceBase:
    """A base network from another family's space (the whole space, or one fixed architecture of it)."""

    def __init__(self, space: SearchSpace, fixed: Architecture | None) -> None:
        self.space = space
        self.fixed = fixed
        self.labels: list[str] = [] if fixed is not None else list(space.labels)

    def build(self, seed: int) -> nn.Module:
        return self.space.family.build_supernet(self.space, seed=seed)

    def arch(self, values: dict[str, Value]) -> Architecture | None:
        if self.fixed is not None:
            return self.fixed
        return self.space.make({label: values[label] for label in self.labels})

    def forward(self, module: nn.Module, arch: Architecture | None, inputs: tuple[torch.Tensor, ...]) -> Any:
        assert arch is not None
        with module.activate(arch):  # type: ignore[operator]
            return module(*inputs)

    def path_modules(self, module: nn.Module, arch: Architecture | None) -> list[nn.Module]:
        assert arch is not None
        return module.path_modules(arch)  # type: ignore[operator,no-any-return]

    def extract(self, module: nn.Module, arch: Architecture | None) -> nn.Module:
        assert arch is not None
        return module.extract(arch)  # type: ignore[operator,no-any-return]

    def standalone_config(self, float_base: nn.Module) -> dict[str, Any]:
        from nasplat.export import check_standalone_source

        source_file = inspect.getsourcefile(type(float_base))
        if source_file is None:
            raise NasplatError(f"cannot find the source file of the base network {type(float_base).__name__}")
        source = check_standalone_source(Path(source_file))
        config = getattr(float_base, "nasplat_config", None)
        if not isinstance(config, dict):
            raise NasplatError(f"the base network {type(float_base).__name__} has no 'nasplat_config' dict")
        return {"kind": "source", "source": source, "config": config}

    def layers(self, arch: Architecture | None) -> list[LayerRecord]:
        assert arch is not None
        return self.space.family.layers(self.space, arch)

    def task(self) -> Task:
        return self.space.family.task(self.space)

    def to_string(self, arch: Architecture | None) -> str:
        assert arch is not None
        return self.space.to_string(arch)


class ResNetBase:
    """The built-in ResNet-8 (:class:`~.standalone.ResNet8`): one fixed network, no base dimensions."""

    labels: ClassVar[list[str]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def build(self, seed: int) -> nn.Module:
        with seeded(seed):
            return ResNet8(self.config)

    def arch(self, values: dict[str, Value]) -> Architecture | None:
        return None

    def forward(self, module: nn.Module, arch: Architecture | None, inputs: tuple[torch.Tensor, ...]) -> Any:
        return module(*inputs)

    def path_modules(self, module: nn.Module, arch: Architecture | None) -> list[nn.Module]:
        return list(module.modules())

    def extract(self, module: nn.Module, arch: Architecture | None) -> nn.Module:
        with seeded(0):
            model = ResNet8(self.config)
        mine = module.state_dict()
        model.load_state_dict({k: mine[k].detach().clone() for k in model.state_dict()}, strict=True)
        return model

    def standalone_config(self, float_base: nn.Module) -> dict[str, Any]:
        return {"kind": "resnet8", "config": dict(self.config)}

    def layers(self, arch: Architecture | None) -> list[LayerRecord]:
        return resnet_layers(self.config)

    def task(self) -> Task:
        return ClassificationTask()

    def to_string(self, arch: Architecture | None) -> str:
        return "resnet8"


def resnet_layers(config: dict[str, Any]) -> list[LayerRecord]:
    """Layer records of :class:`~.standalone.ResNet8` (batch 1), named as its modules are."""
    c_in, h, w = config["input_shape"]
    width = int(config["width"])
    hw = (h, w)
    out = [
        LayerRecord("stem.conv", "conv2d", c_in, width, hw, hw, kernel=3),
        LayerRecord("stem.bn", "batchnorm", width, width, hw, hw),
        LayerRecord("stem.relu", "relu", width, width, hw, hw),
    ]
    for i, (a, b, s) in enumerate(resnet_plan(config)):
        p = f"blocks.{i}"
        hw2 = ((hw[0] - 1) // s + 1, (hw[1] - 1) // s + 1)
        out += [
            LayerRecord(f"{p}.conv1", "conv2d", a, b, hw, hw2, kernel=3, stride=s),
            LayerRecord(f"{p}.bn1", "batchnorm", b, b, hw2, hw2),
            LayerRecord(f"{p}.relu1", "relu", b, b, hw2, hw2),
            LayerRecord(f"{p}.conv2", "conv2d", b, b, hw2, hw2, kernel=3),
            LayerRecord(f"{p}.bn2", "batchnorm", b, b, hw2, hw2),
        ]
        if s != 1 or a != b:
            out += [
                LayerRecord(f"{p}.shortcut.conv", "conv2d", a, b, hw, hw2, kernel=1, stride=s),
                LayerRecord(f"{p}.shortcut.bn", "batchnorm", b, b, hw2, hw2),
            ]
        out += [
            LayerRecord(f"{p}.add", "add", b, b, hw2, hw2),
            LayerRecord(f"{p}.relu2", "relu", b, b, hw2, hw2),
        ]
        hw = hw2
    c = 4 * width
    out += [
        LayerRecord("pool", "global_avgpool", c, c, hw, (1, 1)),
        LayerRecord("fc", "linear", c, int(config["num_classes"]), (1, 1), (1, 1), bias=True),
    ]
    return out


# ------------------------------------------------------------------------------------------------------------
# the plan of one space


@dataclass
class QuantPlan:
    """What the family derives from a quant space: base, slots, layers, precision groups."""

    base: SpaceBase | ResNetBase
    input_shape: tuple[int, int, int]
    slots: list[str]
    layer_slot: dict[str, str]  # quantizable layer (module name) -> slot
    bn_group_of: dict[str, str]  # weight format -> BN statistics group
    default_group: str
    extra_groups: tuple[str, ...]
    act_momentum: float
    _policies: dict[Architecture, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def policy(self, arch: Architecture) -> dict[str, tuple[str, str]]:
        """Layer -> (weight format, activation format) for every quantizable layer."""
        out = self._policies.get(arch)
        if out is None:
            values = arch.as_dict()
            per_slot = {
                s: (str(values[f"{POLICY_PREFIX}{s}.w"]), str(values[f"{POLICY_PREFIX}{s}.a"])) for s in self.slots
            }
            out = {layer: per_slot[slot] for layer, slot in self.layer_slot.items()}
            if len(self._policies) > 10_000:
                self._policies.clear()
            self._policies[arch] = out
        return out

    def base_arch(self, arch: Architecture) -> Architecture | None:
        return self.base.arch(arch.as_dict())

    def used_layers(self, arch: Architecture) -> list[str]:
        """Quantizable layers the network of ``arch`` runs (its conv/linear layer records), in order."""
        return [r.name for r in self.base.layers(self.base_arch(arch)) if r.op in ("conv2d", "linear")]


def _slot_name(layer: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", layer)
    return name if SLOT_PATTERN.match(name) else f"l_{name}"


def _resolve_base_space(space: SearchSpace, name: str) -> SearchSpace:
    from nasplat.space import resolve_space_ref

    try:
        return resolve_space_ref(space, name)
    except SpecError:
        raise
    except NasplatError as exc:
        raise SpecError(space.file, "macro.base_space", f"cannot load base space '{name}': {exc}") from None


def make_plan(space: SearchSpace) -> QuantPlan:
    """Check a quant space against its base and derive its :class:`QuantPlan` (raises SpecError)."""
    file = space.file
    macro: QuantMacro = space.macro  # type: ignore[assignment]
    base: SpaceBase | ResNetBase
    if macro.base_space is not None:
        base_space = _resolve_base_space(space, macro.base_space)
        if base_space.spec.family == "quant":
            raise SpecError(file, "macro.base_space", "the base of a quant space cannot itself be a quant space")
        fixed = None
        if macro.base_arch is not None:
            try:
                fixed = base_space.from_string(macro.base_arch)
            except NasplatError as exc:
                raise SpecError(file, "macro.base_arch", str(exc)) from None
        base_macro = base_space.macro
        for key in ("input_shape", "num_classes"):
            theirs = getattr(base_macro, key, None)
            mine = getattr(macro, key)
            if theirs is not None and tuple(theirs if isinstance(theirs, (list, tuple)) else [theirs]) != tuple(
                mine if isinstance(mine, (list, tuple)) else [mine]
            ):
                raise SpecError(file, f"macro.{key}", f"must equal the base space's {key} ({theirs!r}), got {mine!r}")
        base = SpaceBase(base_space, fixed)
    else:
        cfg = {"input_shape": list(macro.input_shape), "num_classes": macro.num_classes, "width": macro.width}
        base = ResNetBase(cfg)

    net = base.build(0)
    layers = quantizable_layers(net)
    if not layers:
        raise SpecError(file, "macro", "the base network has no Conv2d or Linear layer to quantize")

    # slots
    layer_slot: dict[str, str] = {}
    if macro.slots is None:
        slots = []
        for layer in layers:
            s = _slot_name(layer)
            if s in slots:
                raise SpecError(file, "macro.slots", f"layers map to the same slot name '{s}'; declare slots")
            slots.append(s)
            layer_slot[layer] = s
    else:
        slots = list(macro.slots)
        for s, patterns in macro.slots.items():
            if not SLOT_PATTERN.match(s):
                raise SpecError(file, f"macro.slots.{s}", "a slot name must be letters, digits and '_'")
            if not patterns:
                raise SpecError(file, f"macro.slots.{s}", "needs at least one pattern")
        for layer in layers:
            for s, patterns in macro.slots.items():
                if any(fnmatch.fnmatchcase(layer, p) for p in patterns):
                    layer_slot[layer] = s
                    break
            else:
                raise SpecError(
                    file, "macro.slots", f"layer '{layer}' matches no slot's patterns (layers: {', '.join(layers)})"
                )
        for s in slots:
            if s not in layer_slot.values():
                raise SpecError(file, f"macro.slots.{s}", "matches no quantizable layer; layers: " + ", ".join(layers))

    # BN precision groups
    bn_group_of: dict[str, str] = {}
    default_group = ""
    extra: list[str] = []
    for gi, group in enumerate(macro.bn_groups):
        if not group:
            raise SpecError(file, f"macro.bn_groups[{gi}]", "a group needs at least one format")
        for k, fmt in enumerate(group):
            if fmt not in FORMATS:
                raise SpecError(
                    file, f"macro.bn_groups[{gi}][{k}]", f"unknown number format '{fmt}'; allowed: {', '.join(FORMATS)}"
                )
            if fmt in bn_group_of:
                raise SpecError(file, f"macro.bn_groups[{gi}][{k}]", f"format '{fmt}' is in two groups")
            bn_group_of[fmt] = group[0]
        if "float32" in group:
            default_group = group[0]
        else:
            extra.append(group[0])
    if not default_group:
        raise SpecError(file, "macro.bn_groups", "one group must hold float32 (it uses the BN's usual statistics)")

    # dimensions
    keys = label_key_paths(space)
    policy_labels = {f"{POLICY_PREFIX}{s}.{x}" for s in slots for x in ("w", "a")}
    base_dims = {d.label: d for d in base.space.dimensions} if isinstance(base, SpaceBase) and base.labels else {}
    used_formats: set[str] = set()
    for label, (i, key) in keys.items():
        d = space.spec.dimensions[i]
        if label in base_dims:
            mine = space.dimension(label)
            theirs = base_dims[label]
            if mine.kind != theirs.kind or mine.choices != theirs.choices:
                raise SpecError(
                    file, f"dimensions[{i}]", f"'{label}' must be declared as in the base space ({theirs.kind}, "
                    f"choices {theirs.choices})"
                )  # fmt: skip
            continue
        if label not in policy_labels:
            allowed = "q.<slot>.w / q.<slot>.a for slots " + ", ".join(slots)
            if base_dims:
                allowed += "; base dimensions " + ", ".join(base_dims)
            raise SpecError(file, key, f"unknown dimension '{label}' for this quant space; allowed: {allowed}")
        if not isinstance(d, OrdinalDimension):
            raise SpecError(file, f"dimensions[{i}].type", f"'{label}' must be ordinal (got '{d.type}')")
        prev = -1
        for k, choice in enumerate(d.choices):
            if not isinstance(choice, str) or choice not in FORMATS:
                raise SpecError(
                    file, f"dimensions[{i}].choices[{k}]", f"'{label}': unknown number format {choice!r}; allowed: "
                    f"{', '.join(FORMATS)}"
                )  # fmt: skip
            if choice not in bn_group_of:
                raise SpecError(
                    file, f"dimensions[{i}].choices[{k}]", f"format '{choice}' is in no macro.bn_groups group"
                )
            if RANK[choice] <= prev:
                raise SpecError(
                    file, f"dimensions[{i}].choices", f"'{label}': list formats from low to high precision "
                    f"({', '.join(FORMATS)})"
                )  # fmt: skip
            prev = RANK[choice]
            used_formats.add(choice)
    missing = [label for label in sorted(policy_labels) if label not in keys]
    missing += [label for label in base_dims if label not in keys]
    if missing:
        raise SpecError(file, "dimensions", f"missing dimensions: {', '.join(missing)}")
    return QuantPlan(
        base=base,
        input_shape=tuple(int(s) for s in macro.input_shape),  # type: ignore[arg-type]
        slots=slots,
        layer_slot=layer_slot,
        bn_group_of=bn_group_of,
        default_group=default_group,
        extra_groups=tuple(extra),
        act_momentum=macro.act_momentum,
    )


# ------------------------------------------------------------------------------------------------------------
# the family


@register("family", "quant")
class QuantFamily(Family):
    """Per-layer quantization policies (weight and activation formats) over a base network."""

    name: ClassVar[str] = "quant"
    macro_model: ClassVar[type[MacroSettings]] = QuantMacro

    def plan(self, space: SearchSpace) -> QuantPlan:
        plans: dict[tuple[str, str], QuantPlan] = self.__dict__.setdefault("_plans", {})
        key = (space.spec_hash, str(space.path))
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = make_plan(space)
        return plan

    def check_space(self, space: SearchSpace) -> None:
        self.plan(space)

    def referenced_spaces(self, space: SearchSpace) -> dict[str, SearchSpace]:
        macro: QuantMacro = space.macro  # type: ignore[assignment]
        base = self.plan(space).base
        if macro.base_space is None or not isinstance(base, SpaceBase):
            return {}
        return {macro.base_space: base.space}

    # text forms ----------------------------------------------------------------------------------------------
    def policy_string(self, space: SearchSpace, arch: Architecture) -> str:
        v = arch.as_dict()
        return " ".join(
            f"{s}:{SHORT[str(v[f'{POLICY_PREFIX}{s}.w'])]}/{SHORT[str(v[f'{POLICY_PREFIX}{s}.a'])]}"
            for s in self.plan(space).slots
        )

    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        plan = self.plan(space)
        policy = self.policy_string(space, arch)
        if plan.base.labels:
            return f"{plan.base.to_string(plan.base_arch(arch))} :: {policy}"
        return policy

    def from_string(self, space: SearchSpace, text: str) -> Architecture:
        plan = self.plan(space)
        text = text.strip()
        values: dict[str, Value] = {}
        if plan.base.labels:
            if "::" not in text:
                return super().from_string(space, text)
            base_text, _, text = text.partition("::")
            assert isinstance(plan.base, SpaceBase)
            values.update(plan.base.space.from_string(base_text.strip()).as_dict())
        elif "=" in text:
            return super().from_string(space, text)
        example = " ".join(f"{s}:i8/i8" for s in plan.slots[:3])
        for token in text.split():
            slot, sep, formats = token.partition(":")
            w, sep2, a = formats.partition("/")
            if not sep or not sep2 or w not in LONG or a not in LONG:
                raise NasplatError(
                    f"'{token}' is not a policy entry 'slot:w/a' (e.g. '{example}'); formats: {', '.join(LONG)}"
                )
            if slot not in plan.slots:
                raise NasplatError(f"unknown slot '{slot}' in policy; slots: {', '.join(plan.slots)}")
            values[f"{POLICY_PREFIX}{slot}.w"] = LONG[w]
            values[f"{POLICY_PREFIX}{slot}.a"] = LONG[a]
        return space.make(values)

    def canonical(self, space: SearchSpace, arch: Architecture) -> Architecture:
        """Policies of slots whose layers the base architecture does not run are set to their first choice
        (they cannot change the network); the base architecture is kept as it is."""
        space.validate(arch)
        plan = self.plan(space)
        used_slots = {plan.layer_slot[name] for name in plan.used_layers(arch) if name in plan.layer_slot}
        values = arch.as_dict()
        for s in plan.slots:
            if s not in used_slots:
                for x in ("w", "a"):
                    label = f"{POLICY_PREFIX}{s}.{x}"
                    values[label] = space.dimension(label).choices[0]
        return space.make(values)

    def describe(self, space: SearchSpace, arch: Architecture) -> dict[str, object]:
        plan = self.plan(space)
        v = arch.as_dict()
        return {
            "string": self.to_string(space, arch),
            "choices": arch.as_dict(),
            "base": plan.base.to_string(plan.base_arch(arch)),
            "policy": {s: {"w": v[f"{POLICY_PREFIX}{s}.w"], "a": v[f"{POLICY_PREFIX}{s}.a"]} for s in plan.slots},
            "slots": {layer: slot for layer, slot in plan.layer_slot.items()},
        }

    # networks ------------------------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> QuantSupernet:
        plan = self.plan(space)
        with seeded(seed):
            return QuantSupernet(space, plan, seed)

    def task(self, space: SearchSpace) -> Task:
        return self.plan(space).base.task()

    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        """Largest: the base's largest with every format at its highest precision; smallest: the base's
        smallest with every format at its lowest precision."""
        plan = self.plan(space)
        big: dict[str, Value] = {}
        small: dict[str, Value] = {}
        if plan.base.labels:
            assert isinstance(plan.base, SpaceBase)
            b_big, b_small = plan.base.space.family.extremes(plan.base.space)
            big.update(b_big.as_dict())
            small.update(b_small.as_dict())
        for d in space.dimensions:
            if d.label.startswith(POLICY_PREFIX):
                big[d.label] = d.choices[-1]
                small[d.label] = d.choices[0]
        return space.make(big), space.make(small)

    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        """The base network's records with each conv/linear layer in its policy's weight and activation format."""
        plan = self.plan(space)
        policy = plan.policy(arch)
        out = []
        for rec in plan.base.layers(plan.base_arch(arch)):
            if rec.op in ("conv2d", "linear"):
                formats = policy.get(rec.name)
                if formats is None:
                    raise NasplatError(
                        f"space '{space.name}': the base's layer record '{rec.name}' names no quantizable module "
                        "(the quant family needs records named after the base supernet's modules)"
                    )
                out.append(replace(rec, weight_format=formats[0], act_format=formats[1]))
            else:
                out.append(rec)
        return out

    def bundle_extras(self, space: SearchSpace, arch: Architecture) -> dict[str, str]:
        plan = self.plan(space)
        policy = plan.policy(arch)
        rows = []
        for name in plan.used_layers(arch):
            w, a = policy[name]
            rows.append(f"| `{name}` | {plan.layer_slot[name]} | {w} | {a} |")
        base = plan.base.to_string(plan.base_arch(arch))
        return {
            "RUN.md": RUN_MD.format(
                space=space.name, base=base, policy=self.policy_string(space, arch), rows="\n".join(rows)
            )
        }


RUN_MD = """\
# Running this quantized network

Space `{space}`; base network `{base}`; policy

    {policy}

| layer | slot | weights | input activations |
| --- | --- | --- | --- |
{rows}

## How the formats are stored and run

`model.py` needs only torch (no nasplat). Each quantized layer holds `weight` in its storage format and, for
scaled formats, `weight_scale` (one float32 per output channel):

- `int8` / `int4` / `int2`: symmetric integers `q` in `[-(2^(b-1)-1), 2^(b-1)-1]`, stored as `torch.int8`
  (one value per byte, not packed); the weight is `q * weight_scale`.
- `fp8_e4m3` / `fp8_e5m2`: `torch.float8_e4m3fn` / `torch.float8_e5m2` values times `weight_scale`.
- `bfloat16` / `float16`: the weight in that dtype; `float32`: as is. Biases and BatchNorm stay float32.

Activations entering a layer are quantized per tensor with the calibrated `act_scale` (unsigned integers for
inputs that are never negative, e.g. after a ReLU). Arithmetic runs in float32 after dequantization, so this
bundle simulates the policy exactly on any PyTorch device; a deployment runtime with native kernels for
these formats can read the integer / float8 tensors and scales directly from `weights.safetensors`.

ONNX: `model.onnx` simulates every format the same way in float arithmetic (checked against PyTorch within
1e-4, or 5 % of the largest output where activations are quantized: a value that sits on a rounding boundary
may land on the neighbouring level in one runtime and not the other).
When some layers have int8 weights *and* int8 input activations, `model.qdq.onnx` has those layers as
QuantizeLinear/DequantizeLinear around the int8 weights and activations, which onnxruntime runs on integer
kernels (see README.md for what was checked). int4, int2 and float8 (and bfloat16 / float16) stay simulated
in float arithmetic in both files: onnxruntime has no integer kernels for them.

```python
import sys; sys.path.insert(0, "path/to/this/folder")
from load import load
model = load()          # eval mode
logits = model(images)  # float32 images shaped like the training data
```

The output matches nasplat's fake-quantized supernet under this policy to within 1e-4 (checked at export:
both run the same quantization functions), so its test accuracy equals the supernet's estimate for the
same BatchNorm statistics.
"""
