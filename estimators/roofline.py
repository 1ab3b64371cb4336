"""Roofline cost model over device profiles declared as YAML data (``estimators/devices/*.yaml``).

A device profile (:class:`DeviceProfile`, validated with ``extra="forbid"``; a bad file fails naming the file
and the key) gives the device's peak throughput per number format (``peak_gops``: billions of operations per
second, one multiply-accumulate = 2 operations), whether that format is native or emulated, a throughput for
element-wise work (``vector_gops``), the memory bandwidth (``memory_bandwidth_gbs``, GB/s) and a fixed cost
per kernel (``kernel_overhead_us``), with the sources of every number written in the file.

Per layer (batch ``batch_size``)::

    time = max(compute_ops / peak(format), bytes_moved / bandwidth) + kernel_overhead

``compute_ops`` is ``2 * macs`` (the analytical model's MACs) for conv2d, linear, attention and matmul, run at
the peak of the layer's compute format (the wider of its weight and activation formats); element-wise and
pooling layers count one operation per output element (times the window for pooling, per input element for
global pooling) at ``vector_gops``. ``bytes_moved`` is the weights in their format plus every input and the
output in the activation format. ``identity`` launches no kernel and costs nothing. A layer whose weight or
activation format the profile does not list is refused with a one-line error naming the device and format.

Profiles ship for this machine's class (a 2-core x86 AVX-512 VM, numbers measured here), an NVIDIA H100 SXM
and a phone-class Arm Cortex-A76 core (published numbers). More directories of profiles can be added through
``$NASPLAT_DEVICE_PROFILES`` (paths separated by ``os.pathsep``) or the ``profile_paths`` argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nasplat.errors import NasplatError, SpecError
from nasplat.measure import FORMAT_BITS, CostModel, LayerRecord
from nasplat.registry import register
from nasplat.space import read_yaml_mapping, register_schema, spec_error_from_validation

from .analytical import layer_costs

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

#: Where the shipped device profiles live.
DEVICES_DIR = Path(__file__).parent / "devices"
#: Extra profile files or folders, separated by ``os.pathsep``.
PROFILES_ENV = "NASPLAT_DEVICE_PROFILES"

_MAC_OPS = frozenset({"conv2d", "linear", "attention", "matmul"})
_NO_KERNEL = frozenset({"identity"})
_TWO_INPUTS = frozenset({"add", "matmul"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FormatPeak(_Strict):
    """Throughput of one number format on a device."""

    peak_gops: float = Field(gt=0, description="dense peak, GOP/s (1 multiply-accumulate = 2 operations)")
    native: bool = Field(default=True, description="false: emulated (e.g. unpacked to a wider format)")
    note: str = ""


class DeviceProfile(_Strict):
    """A device as the roofline model sees it; every number's source is written in ``sources``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="the device name; must equal the file's stem")
    description: str
    kind: Literal["cpu", "gpu", "npu", "fpga"]
    sources: list[str] = Field(min_length=1, description="where each number comes from")
    memory_bandwidth_gbs: float = Field(gt=0, description="sustained memory bandwidth, GB/s")
    kernel_overhead_us: float = Field(ge=0, description="fixed cost of launching one layer's kernel, µs")
    vector_gops: float = Field(gt=0, description="element-wise throughput (activations, norms, pooling), GOP/s")
    formats: dict[str, FormatPeak] = Field(min_length=1, description="supported number formats")
    notes: str = ""

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v: dict[str, FormatPeak]) -> dict[str, FormatPeak]:
        unknown = [k for k in v if k not in FORMAT_BITS]
        if unknown:
            raise ValueError(f"unknown number format '{unknown[0]}'; allowed: {', '.join(FORMAT_BITS)}")
        return v


register_schema(DeviceProfile)


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file; errors name the file and the key."""
    data = read_yaml_mapping(path)
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = spec_error_from_validation(str(path), exc)
        if err.key.startswith("formats.") and err.expected.startswith("unknown key") and "allowed" not in err.expected:
            # a key inside one format's entry (a dict value, which the generic report cannot look into)
            rest = err.expected[len("unknown key") :]
            raise SpecError(
                str(path), err.key, f"unknown key; allowed keys: {', '.join(sorted(FormatPeak.model_fields))}{rest}"
            ) from None
        raise err from None
    if profile.name != path.stem:
        raise SpecError(str(path), "name", f"must equal the file name '{path.stem}' (got '{profile.name}')")
    return profile


def profile_paths(extra: Sequence[str | Path] = ()) -> list[Path]:
    """The shipped profile files, then those of ``$NASPLAT_DEVICE_PROFILES``, then ``extra`` (files or folders)."""
    entries: list[Path] = [DEVICES_DIR]
    env = os.environ.get(PROFILES_ENV, "")
    entries += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    entries += [Path(p) for p in extra]
    files: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            files += sorted(entry.glob("*.yaml"))
        elif entry.exists():
            files.append(entry)
        else:
            raise NasplatError(f"device profile path not found: {entry}")
    return files


def load_profiles(extra: Sequence[str | Path] = ()) -> dict[str, DeviceProfile]:
    """Every profile by name; a name declared twice is an error naming both files."""
    out: dict[str, DeviceProfile] = {}
    where: dict[str, Path] = {}
    for path in profile_paths(extra):
        profile = load_profile(path)
        if profile.name in out and where[profile.name].resolve() != path.resolve():
            raise SpecError(str(path), "name", f"device '{profile.name}' is already declared in {where[profile.name]}")
        out[profile.name] = profile
        where[profile.name] = path
    return out


def layer_work(rec: LayerRecord, batch_size: int = 1) -> tuple[float, float, float, bool]:
    """``(mac_ops, vector_ops, bytes_moved, kernel)`` of one layer at ``batch_size``.

    ``mac_ops`` run at the compute format's peak, ``vector_ops`` at the device's element-wise throughput.
    """
    macs, params, _, _, _, _ = layer_costs(rec)
    w_bytes = params * FORMAT_BITS[rec.weight_format] / 8
    a_bytes = FORMAT_BITS[rec.act_format] / 8
    op = rec.op
    in_el = rec.in_channels * rec.in_hw[0] * rec.in_hw[1] * batch_size
    out_el = rec.out_channels * rec.out_hw[0] * rec.out_hw[1] * batch_size
    if op in _NO_KERNEL:
        return 0.0, 0.0, 0.0, False
    mac_ops = vec_ops = 0.0
    if op in _MAC_OPS:
        mac_ops = 2.0 * macs * batch_size
    elif op in ("avgpool", "maxpool"):
        vec_ops = float(out_el * rec.kernel * rec.kernel)
    elif op == "global_avgpool":
        vec_ops = float(in_el)
    elif op in ("batchnorm", "layernorm"):
        vec_ops = 2.0 * out_el
    elif op == "zero":
        in_el = 0
    elif op != "concat":
        vec_ops = float(out_el)
    n_inputs = 2 if op in _TWO_INPUTS else 1
    moved = w_bytes + (n_inputs * in_el + out_el) * a_bytes
    if op == "concat":  # in_channels is the first input; the rest of the output comes from the others
        moved = w_bytes + 2 * out_el * a_bytes
    return mac_ops, vec_ops, moved, True


def compute_format(rec: LayerRecord) -> str:
    """The format a layer computes in: the wider of its weight and activation formats (ties: activations)."""
    w, a = rec.weight_format, rec.act_format
    return w if FORMAT_BITS[w] > FORMAT_BITS[a] else a


def derive_cpu_numbers(threads: int = 1, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measure this machine's roofline numbers with PyTorch on ``threads`` threads (best of ``repeats``).

    ``peak_gops_<format>``: a ``size``-square matmul (float32, bfloat16, float16; int8 with ``torch._int_mm``);
    ``memory_bandwidth_gbs``: bytes read plus written by copying a 256 MiB tensor; ``vector_gops``: a ReLU
    over 256 Ki floats held in cache; ``kernel_overhead_us``: the median
    time of one eager module call on a one-element input (ReLU, BatchNorm2d, 1x1 Conv2d, AvgPool2d, add).
    Used to write ``devices/x86-avx512-2core.yaml``; run it again on another machine to make its profile.
    """
    import statistics
    import time

    import torch
    from torch import nn

    def best(fn: object, n: int = repeats) -> float:
        f = fn  # type: ignore[assignment]
        f()  # type: ignore[operator]
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, float] = {}
    try:
        gen = torch.Generator().manual_seed(0)
        flops = 2.0 * size**3
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
            a = torch.randn(size, size, generator=gen).to(dtype)
            b = torch.randn(size, size, generator=gen).to(dtype)
            out[f"peak_gops_{name}"] = flops / best(lambda a=a, b=b: a @ b) / 1e9
        try:
            a8 = torch.randint(-64, 64, (size, size), dtype=torch.int8, generator=gen)
            b8 = torch.randint(-64, 64, (size, size), dtype=torch.int8, generator=gen)
            out["peak_gops_int8"] = flops / best(lambda: torch._int_mm(a8, b8)) / 1e9
        except (RuntimeError, AttributeError):  # no int8 matmul kernel for this CPU
            pass
        src = torch.randn(64 * 1024 * 1024, generator=gen)
        dst = torch.empty_like(src)
        out["memory_bandwidth_gbs"] = 2 * src.numel() * 4 / best(lambda: dst.copy_(src)) / 1e9
        small, small_out = src[: 256 * 1024], dst[: 256 * 1024]  # 1 MiB: stays in cache
        vec_s = best(lambda: [torch.clamp_min(small, 0.0, out=small_out) for _ in range(100)]) / 100
        out["vector_gops"] = small.numel() / vec_s / 1e9
        x = torch.randn(1, 1, 1, 1, generator=gen)
        mods = [nn.ReLU(), nn.BatchNorm2d(1).eval(), nn.Conv2d(1, 1, 1, bias=False), nn.AvgPool2d(1)]
        per_call = []
        with torch.inference_mode():
            for m in mods:
                per_call.append(best(lambda m=m: [m(x) for _ in range(1000)]) / 1000)
            per_call.append(best(lambda: [x + x for _ in range(1000)]) / 1000)
        out["kernel_overhead_us"] = statistics.median(per_call) * 1e6
    finally:
        torch.set_num_threads(before)
    return out


def layer_times(
    records: Iterable[LayerRecord], profile: DeviceProfile, batch_size: int = 1
) -> list[tuple[float, float, float]]:
    """``(compute_s, memory_s, overhead_s)`` of each layer on ``profile`` (formats must be in the profile)."""
    bw = profile.memory_bandwidth_gbs * 1e9
    vec = profile.vector_gops * 1e9
    overhead = profile.kernel_overhead_us * 1e-6
    out = []
    for rec in records:
        mac_ops, vec_ops, moved, kernel = layer_work(rec, batch_size)
        fmt = compute_format(rec)
        peak = profile.formats[fmt].peak_gops * 1e9
        out.append((mac_ops / peak + vec_ops / vec, moved / bw, overhead if kernel else 0.0))
    return out


def roofline_ms(times: Iterable[tuple[float, float, float]]) -> dict[str, float]:
    """Totals of :func:`layer_times` in ms: ``latency_ms`` (sum of max(compute, memory) + overhead) and parts."""
    lat = comp = mem = ovh = 0.0
    for c, m, o in times:
        lat += max(c, m) + o
        comp += c
        mem += m
        ovh += o
    return {"latency_ms": lat * 1e3, "compute_ms": comp * 1e3, "memory_ms": mem * 1e3, "overhead_ms": ovh * 1e3}


@register("cost_model", "roofline")
class RooflineCostModel(CostModel):
    """Roofline latency of an architecture on a declared device (see the module docstring).

    Devices: the profiles found (:func:`load_profiles`); formats: those the chosen device's profile lists.
    ``latency_ms`` is the prediction; ``compute_ms``, ``memory_ms`` and ``overhead_ms`` are its parts (sums
    over layers of each term alone).
    """

    name: ClassVar[str] = "roofline"
    metrics: ClassVar[tuple[str, ...]] = ("latency_ms", "compute_ms", "memory_ms", "overhead_ms")

    def __init__(self, profile_paths: Sequence[str | Path] = (), *, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise NasplatError(f"cost model 'roofline': batch_size must be at least 1 (got {batch_size})")
        self.profiles = load_profiles(profile_paths)
        self.batch_size = batch_size

    def devices(self) -> list[str] | None:
        return sorted(self.profiles)

    def formats(self, device: str | None = None) -> list[str] | None:
        if device is None:
            return None
        self.check_device(device)
        return list(self.profiles[device].formats)

    def profile(self, device: str | None) -> DeviceProfile:
        self.check_device(device)
        assert device is not None
        return self.profiles[device]

    def estimate_layers(self, records: Sequence[LayerRecord], device: str | None) -> dict[str, float]:
        """The roofline totals of a list of layer records on ``device``."""
        profile = self.profile(device)
        self.check_formats(records, device)
        return roofline_ms(layer_times(records, profile, self.batch_size))

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        self.check_device(device)
        if arch.space != space.name:
            raise NasplatError(f"architecture belongs to space '{arch.space}', not '{space.name}'")
        return self.estimate_layers(space.family.layers(space, arch), device)
