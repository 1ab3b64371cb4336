"""The ControlNet block-gating family: which control blocks a frozen diffusion UNet gets, and how heavy each is.

ControlNet trains a copy of a diffusion model's encoder to follow a condition image; FlexControl, RelaCtrl,
ControlNet-XS and CtrLoRA show that most of that copy is not needed. A space of this family gates each
control block (one per encoder level, ``control.enc_<k>``, and ``control.mid``), each one of:

``off``
    no control at this block (no compute, no parameters).
``full``
    a trainable copy of the matching base block, initialised from it (ControlNet).
``light``
    a small convolutional adapter: 3x3 conv to ``C_out / light_ratio`` channels, GELU, 1x1 conv
    (in the spirit of ControlNeXt and ControlNet-XS).
``lora_<r>``
    the frozen base block re-run on the control input with rank-``r`` LoRA deltas on its two 3x3
    convolutions (CtrLoRA: a shared base control block adapted at low rank; here the shared block is the
    frozen base block itself, so only the LoRA factors are added parameters).

Every active block's output passes a zero-initialised 1x1 projection and is added to the base's skip tensor
of its level (``mid``: to the middle block's output). The condition (an edge map of the target image) is
encoded by a small pyramid shared by all blocks. See :mod:`.standalone` for the network.

Costs: :meth:`ControlNetFamily.layers` describes only what a configuration *adds* to the frozen base (the
base is the same for every configuration), so the ``analytical`` cost model's ``macs`` is the added MACs
per denoising step (one network evaluation, batch 1) and its ``params_count`` the added parameters. A
LoRA block re-runs the base block's convolutions: their MACs count, their parameters (the base's) do not.

The string form lists the blocks' choices in order, e.g. ``full|light|lora_4|off`` for
``enc_0, enc_1, enc_2, mid``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from nasplat.errors import NasplatError, SpecError
from nasplat.measure import LayerRecord
from nasplat.model import Family, MacroSettings, seeded
from nasplat.registry import register
from nasplat.space import CategoricalDimension, label_key_paths

from .base import load_base
from .standalone import block_channels, block_names, hint_stage_of, light_width, parse_kind
from .supernet import LABEL_PREFIX, ControlSupernet, model_config
from .task import DiffusionControlTask

if TYPE_CHECKING:
    from nasplat.model import Task
    from nasplat.space import Architecture, SearchSpace, Value


class ControlNetMacro(MacroSettings):
    """Macro settings of a controlnet space (``macro:`` in its file)."""

    channels: list[int] = Field(min_length=1, description="UNet width per resolution level (halving between)")
    norm_groups: int = Field(default=8, ge=1, description="GroupNorm groups (every width divisible by it)")
    light_ratio: int = Field(default=4, ge=1, description="a light block is C_out / light_ratio wide (>= 4)")
    hint_channels: int = Field(default=8, ge=1, description="width of the condition encoder's first conv")
    timesteps: int = Field(default=1000, ge=2, description="diffusion steps of the DDPM schedule")
    beta_start: float = Field(default=1e-4, gt=0, lt=1)
    beta_end: float = Field(default=0.02, gt=0, lt=1)
    edge_scale: float = Field(default=1.0, gt=0, description="Sobel magnitude that maps to a full edge (1.0)")
    pixel_mean: list[float] = Field(description="per-channel mean the dataset's batches are normalised with")
    pixel_std: list[float] = Field(description="per-channel std the dataset's batches are normalised with")
    sample_steps: int = Field(default=10, ge=1, description="DDIM steps when evaluating fidelity")
    fidelity_images: int = Field(default=32, ge=1, description="condition images whose samples are scored")
    eval_seed: int = Field(default=0, description="seed of evaluation noise and timesteps")
    base_weights: str = Field(min_length=1, description="the frozen base UNet (safetensors; relative to this file)")


@register("family", "controlnet")
class ControlNetFamily(Family):
    """Gated ControlNet branches on a frozen diffusion UNet (see the module docstring)."""

    name: ClassVar[str] = "controlnet"
    macro_model: ClassVar[type[MacroSettings]] = ControlNetMacro

    # checks --------------------------------------------------------------------------------------------------
    def check_space(self, space: SearchSpace) -> None:
        file = space.file
        macro: Any = space.macro
        channels = list(macro.channels)
        c_img, height, width = macro.input_shape
        if min(c_img, height, width) < 1:
            raise SpecError(file, "macro.input_shape", f"expected three positive sizes (got {list(macro.input_shape)})")
        if min(channels) < 1 or channels[0] % 2:
            raise SpecError(file, "macro.channels", f"widths must be positive and the first even (got {channels})")
        bad = [c for c in channels if c % macro.norm_groups]
        if bad:
            raise SpecError(
                file, "macro.channels", f"widths {bad} are not divisible by norm_groups={macro.norm_groups}"
            )
        factor = 2 ** (len(channels) - 1)
        if height % factor or width % factor:
            raise SpecError(
                file, "macro.input_shape",
                f"height and width must be divisible by {factor} ({len(channels)} levels); got {height}x{width}",
            )  # fmt: skip
        for key in ("pixel_mean", "pixel_std"):
            values = getattr(macro, key)
            if len(values) != c_img:
                raise SpecError(
                    file, f"macro.{key}", f"expected {c_img} value(s), one per image channel (got {values})"
                )
        if min(macro.pixel_std) <= 0:
            raise SpecError(file, "macro.pixel_std", f"must be positive (got {macro.pixel_std})")
        if macro.beta_end < macro.beta_start:
            raise SpecError(file, "macro.beta_end", f"must be >= beta_start ({macro.beta_start})")
        names = [LABEL_PREFIX + n for n in block_names(len(channels))]
        keys = label_key_paths(space)
        for label, (_, key) in keys.items():
            if label not in names:
                raise SpecError(
                    file, key, f"unknown dimension '{label}' for family 'controlnet' with {len(channels)} levels; "
                    f"allowed: {', '.join(names)}",
                )  # fmt: skip
        missing = [n for n in names if n not in keys]
        if missing:
            raise SpecError(file, "dimensions", f"family 'controlnet' needs the dimensions {', '.join(names)}; "
                            f"missing: {', '.join(missing)}")  # fmt: skip
        for label in names:
            i, _ = keys[label]
            d = space.spec.dimensions[i]
            if not isinstance(d, CategoricalDimension):
                raise SpecError(file, f"dimensions[{i}].type", f"'{label}' must be categorical (got '{d.type}')")
            c_in, c_out, _ = block_channels(channels, label[len(LABEL_PREFIX) :])
            for k, choice in enumerate(d.choices):
                where = f"dimensions[{i}].choices[{k}]"
                if not isinstance(choice, str):
                    hint = ' (YAML reads a bare off as false: write "off" in quotes)' if choice is False else ""
                    raise SpecError(
                        file, where, f"'{label}': expected off, light, full or lora_<rank> (got {choice!r}){hint}"
                    )
                try:
                    kind, rank = parse_kind(choice)
                except ValueError as exc:
                    raise SpecError(file, where, f"'{label}': {exc}") from None
                if kind == "lora" and rank > min(c_in, c_out):
                    raise SpecError(
                        file, where, f"'{label}': LoRA rank {rank} exceeds the block's width {min(c_in, c_out)}"
                    )

    # text forms ----------------------------------------------------------------------------------------------
    def _names(self, space: SearchSpace) -> list[str]:
        return block_names(len(getattr(space.macro, "channels")))  # noqa: B009 - macro is a family model

    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        """The blocks' choices in order, joined by ``|`` (``full|light|lora_4|off``)."""
        return "|".join(str(arch[LABEL_PREFIX + n]) for n in self._names(space))

    def from_string(self, space: SearchSpace, text: str) -> Architecture:
        text = text.strip()
        if "=" in text:
            return super().from_string(space, text)
        names = self._names(space)
        parts = [p.strip() for p in text.split("|")]
        if len(parts) != len(names):
            raise NasplatError(
                f"'{text}' is not a configuration of space '{space.name}': expected {len(names)} choices joined by "
                f"'|' (for {', '.join(names)}), e.g. '{'|'.join(['full'] * len(names))}'"
            )
        values: dict[str, Value] = {}
        for name, part in zip(names, parts, strict=True):
            allowed = space.dimension(LABEL_PREFIX + name).choices
            if part not in allowed:
                raise NasplatError(
                    f"'{text}': choice '{part}' for {name} is not in space '{space.name}'; "
                    f"allowed: {', '.join(map(str, allowed))}"
                )
            values[LABEL_PREFIX + name] = part
        return space.make(values)

    def describe(self, space: SearchSpace, arch: Architecture) -> dict[str, object]:
        return {
            "string": self.to_string(space, arch),
            "choices": arch.as_dict(),
            "blocks": {n: str(arch[LABEL_PREFIX + n]) for n in self._names(space)},
            "macro": model_config(space),
        }

    # networks ------------------------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> ControlSupernet:
        """The control supernet on the frozen base UNet loaded from ``macro.base_weights`` (which must exist:
        see :func:`.base.train_base`)."""
        state = load_base(space)
        with seeded(seed):
            return ControlSupernet(space, state)

    def task(self, space: SearchSpace) -> Task:
        m: Any = space.macro
        return DiffusionControlTask(
            model_config(space),
            tuple(m.pixel_mean),
            tuple(m.pixel_std),
            sample_steps=m.sample_steps,
            fidelity_images=m.fidelity_images,
            eval_seed=m.eval_seed,
        )

    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        """Largest: ``full`` where allowed, else the highest LoRA rank, else ``light``; smallest: ``light``,
        else the lowest LoRA rank, else ``full`` (``off`` only where a block allows nothing else: an
        all-``off`` configuration has no weights to train)."""

        def heavy(choice: Value) -> tuple[int, int]:
            kind, rank = parse_kind(str(choice))
            return ({"full": 3, "lora": 2, "light": 1, "off": 0}[kind], rank)

        def light(choice: Value) -> tuple[int, int]:
            kind, rank = parse_kind(str(choice))
            return ({"light": 3, "lora": 2, "full": 1, "off": 0}[kind], -rank)

        largest = space.make({d.label: max(d.choices, key=heavy) for d in space.dimensions})
        smallest = space.make({d.label: max(d.choices, key=light) for d in space.dimensions})
        return largest, smallest

    def bundle_extras(self, space: SearchSpace, arch: Architecture) -> dict[str, str]:
        """``sample.py``: generates images for condition images with the bundle alone (see its docstring)."""
        return {"sample.py": (Path(__file__).parent / "sample_script.py").read_text(encoding="utf-8")}

    # costs ---------------------------------------------------------------------------------------------------
    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        """What ``arch`` adds to the frozen base, at batch 1: the hint pyramid up to the deepest active block,
        each active block (a LoRA block's re-run base convolutions with ``params_count`` 0) and its zero
        projection, and the two adds (hint into the block input, residual into the base)."""
        cfg = model_config(space)
        channels: list[int] = cfg["channels"]
        _, height, width = cfg["input_shape"]
        names = block_names(len(channels))
        choices = {n: str(arch[LABEL_PREFIX + n]) for n in names}
        active = [n for n in names if choices[n] != "off"]
        if not active:
            return []
        temb_dim = 4 * channels[0]

        def hw(level: int) -> tuple[int, int]:
            return (height >> level, width >> level)

        out: list[LayerRecord] = []
        depth = max(hint_stage_of(channels, n) for n in active) + 1
        for i in range(depth):
            p = f"control.hint.stages.{i}"
            if i == 0:
                out += [
                    _conv(f"{p}.0", 1, cfg["hint_channels"], 3, 1, hw(0)),
                    _act(f"{p}.1", cfg["hint_channels"], hw(0)),
                    _conv(f"{p}.2", cfg["hint_channels"], channels[0], 3, 1, hw(0)),
                ]
                continue
            c_prev = channels[0] if i == 1 else channels[i - 2]
            if i < len(channels):
                out += [_act(f"{p}.0", c_prev, hw(i - 1)), _conv(f"{p}.1", c_prev, channels[i - 1], 3, 2, hw(i - 1))]
            else:
                out += [_act(f"{p}.0", c_prev, hw(i - 1)), _conv(f"{p}.1", c_prev, channels[-1], 3, 1, hw(i - 1))]
        for name in active:
            kind, rank = parse_kind(choices[name])
            c_in, c_out, level = block_channels(channels, name)
            size = hw(level)
            p = f"control.blocks.{name}"
            out.append(LayerRecord(f"{p}.hint_add", "add", c_in, c_in, size, size))
            if kind == "full":
                out += _resblock(f"{p}.full", c_in, c_out, temb_dim, size, counted=True)
            elif kind == "light":
                w = light_width(c_out, cfg["light_ratio"])
                out += [_conv(f"{p}.light.conv1", c_in, w, 3, 1, size), _act(f"{p}.light.act", w, size),
                        _conv(f"{p}.light.conv2", w, c_out, 1, 1, size)]  # fmt: skip
            else:
                out += _resblock(f"{p}.lora.base", c_in, c_out, temb_dim, size, counted=False)
                for conv, ci in (("conv1", c_in), ("conv2", c_out)):
                    out += [
                        _conv(f"{p}.lora.{conv}.a", ci, rank, 3, 1, size, bias=False),
                        _conv(f"{p}.lora.{conv}.b", rank, c_out, 1, 1, size, bias=False),
                        LayerRecord(f"{p}.lora.{conv}.add", "add", c_out, c_out, size, size),
                    ]
            out.append(_conv(f"{p}.zero", c_out, c_out, 1, 1, size))
            out.append(LayerRecord(f"{p}.residual_add", "add", c_out, c_out, size, size))
        return out


# helpers ------------------------------------------------------------------------------------------------------


def _conv(
    name: str, c_in: int, c_out: int, kernel: int, stride: int, in_hw: tuple[int, int], *, bias: bool = True,
    counted: bool = True,
) -> LayerRecord:  # fmt: skip
    pad = kernel // 2
    out_hw = ((in_hw[0] + 2 * pad - kernel) // stride + 1, (in_hw[1] + 2 * pad - kernel) // stride + 1)
    extra = () if counted else (("params_count", 0.0),)
    return LayerRecord(name, "conv2d", c_in, c_out, in_hw, out_hw, kernel=kernel, stride=stride, bias=bias, extra=extra)


def _act(name: str, c: int, hw: tuple[int, int]) -> LayerRecord:
    return LayerRecord(name, "gelu", c, c, hw, hw)


def _norm(name: str, c: int, hw: tuple[int, int], counted: bool) -> LayerRecord:
    """GroupNorm, recorded as ``layernorm`` (a per-group layer norm; ``2*C`` affine parameters)."""
    return LayerRecord(name, "layernorm", c, c, hw, hw, extra=() if counted else (("affine", 0.0),))


def _resblock(p: str, c_in: int, c_out: int, temb_dim: int, hw: tuple[int, int], *, counted: bool) -> list[LayerRecord]:
    """A ResBlock's records; ``counted=False`` for the frozen base's own block re-run (MACs only)."""
    linear_extra = () if counted else (("params_count", 0.0),)
    out = [
        _norm(f"{p}.norm1", c_in, hw, counted),
        _act(f"{p}.act1", c_in, hw),
        _conv(f"{p}.conv1", c_in, c_out, 3, 1, hw, counted=counted),
        _act(f"{p}.temb_act", temb_dim, (1, 1)),
        LayerRecord(f"{p}.temb", "linear", temb_dim, c_out, (1, 1), (1, 1), bias=True, extra=linear_extra),
        LayerRecord(f"{p}.temb_add", "add", c_out, c_out, hw, hw),
        _norm(f"{p}.norm2", c_out, hw, counted),
        _act(f"{p}.act2", c_out, hw),
        _conv(f"{p}.conv2", c_out, c_out, 3, 1, hw, counted=counted),
    ]
    if c_in != c_out:
        out.append(_conv(f"{p}.skip", c_in, c_out, 1, 1, hw, counted=counted))
    out.append(LayerRecord(f"{p}.add", "add", c_out, c_out, hw, hw))
    return out
