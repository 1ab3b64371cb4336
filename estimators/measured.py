"""Measured cost model: the real latency of an architecture's stand-alone network on this machine.

The family's supernet is built once per space (seeded; weights do not change the work done), the architecture
is extracted as a stand-alone module in eval mode and timed on a random input of the space's input shape:
``warmup`` untimed runs, then ``repeats`` timed runs, with a fixed number of intra-op threads. It reports the
median (``latency_ms``) and the interquartile range (``latency_iqr_ms``) of the timed runs.

Two engines, registered as two cost models: ``measured`` (PyTorch eager, ``torch.inference_mode``) and
``measured_onnx`` (the module exported to ONNX and run with ONNX Runtime's CPU provider).

The device is this machine: it answers to :data:`LOCAL_DEVICE` (``local-cpu``) and to a name derived from
the CPU model (for example ``cpu-intel-xeon-processor``, see :func:`local_device`). Every result can be traced
to :func:`local_device`'s provenance (CPU model, logical CPUs, threads, torch and onnxruntime versions).
Only float32 networks are timed (quantized layer records are refused: eager PyTorch would run them in float).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from nasplat.errors import NasplatError
from nasplat.measure import CostModel
from nasplat.registry import register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nasplat.model import Supernet
    from nasplat.space import Architecture, SearchSpace

#: The name this machine answers to in every model that measures on it.
LOCAL_DEVICE = "local-cpu"
#: Engines that time a module.
ENGINES = ("eager", "onnxruntime")
#: Formats the measuring engines run (as built by the families: float32 modules).
MEASURED_FORMATS = ("float32",)


# ------------------------------------------------------------------------------------------------ the device
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_slug(cpu_model: str) -> str:
    """A device name from a CPU model string: ``Intel(R) Xeon(R) Processor`` -> ``cpu-intel-xeon-processor``."""
    text = re.sub(r"\((r|tm|c)\)", " ", cpu_model.lower())
    text = re.sub(r"\bcpu\b|@.*$", " ", text)
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return f"cpu-{slug or 'unknown'}"


@cache
def local_device() -> dict[str, Any]:
    """Provenance of this machine: device names, CPU model, logical CPUs, library versions."""
    import torch

    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:  # pragma: no cover - a declared dependency
        ort_version = "not installed"
    model = _cpu_model()
    return {
        "device": LOCAL_DEVICE,
        "device_slug": device_slug(model),
        "cpu_model": model,
        "logical_cpus": os.cpu_count() or 0,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
    }


def local_device_names() -> list[str]:
    """The names this machine answers to: ``local-cpu`` and the one derived from its CPU model."""
    info = local_device()
    return [LOCAL_DEVICE, str(info["device_slug"])]


def check_local_device(model_name: str, device: str | None) -> str:
    """``device`` if it names this machine (None means this machine); otherwise a one-line error."""
    names = local_device_names()
    if device is None or device in names:
        return device or LOCAL_DEVICE
    raise NasplatError(
        f"cost model '{model_name}' measures on this machine only; device '{device}' is not it "
        f"(this machine is: {', '.join(names)})"
    )


# ------------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class Measurement:
    """Timed runs of one callable: median and interquartile range in milliseconds, and the samples."""

    latency_ms: float
    latency_iqr_ms: float
    samples_ms: tuple[float, ...]

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Measurement:
        xs = sorted(samples_ms)
        if len(xs) >= 4:
            q = statistics.quantiles(xs, n=4, method="inclusive")
            iqr = q[2] - q[0]
        else:
            iqr = xs[-1] - xs[0]
        return cls(statistics.median(xs), iqr, tuple(samples_ms))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous setting."""
    import torch

    if threads < 1:
        raise NasplatError(f"threads must be at least 1 (got {threads})")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_callable(fn: Callable[[], object], *, warmup: int, repeats: int, inner: int = 1) -> Measurement:
    """Call ``fn`` ``warmup`` times untimed, then time ``repeats`` blocks of ``inner`` calls (ms per call)."""
    if repeats < 1 or warmup < 0 or inner < 1:
        raise NasplatError(f"need repeats >= 1, warmup >= 0, inner >= 1 (got {repeats}, {warmup}, {inner})")
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - t0) / 1e6 / inner)
    return Measurement.of(samples)


def auto_inner(fn: Callable[[], object], target_ms: float = 0.5, cap: int = 1000) -> int:
    """How many calls of ``fn`` make a block of about ``target_ms`` (for timing very short calls)."""
    fn()
    t0 = time.perf_counter_ns()
    fn()
    once_ms = max((time.perf_counter_ns() - t0) / 1e6, 1e-4)
    return max(1, min(cap, int(target_ms / once_ms)))


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Keep torch.onnx's warnings and progress output out of the caller's output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def onnx_bytes(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> bytes:
    """``module`` as an ONNX model (fixed shapes): TorchScript exporter first, the dynamo one if it fails."""
    import torch

    errors = []
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            with quiet_export(), torch.no_grad():
                torch.onnx.export(
                    module,
                    inputs,
                    buf,  # type: ignore[arg-type]
                    dynamo=dynamo,
                    input_names=_input_names(len(inputs)),
                )
            return buf.getvalue()
        except Exception as exc:  # the exporters raise many kinds; report them together
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {exc}".splitlines()[0])
    raise NasplatError(f"ONNX export failed ({'; '.join(errors)})")


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def ort_session(model: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def measure_module(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    engine: str = "eager",
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 30,
    inner: int | None = 1,
) -> Measurement:
    """Latency of one forward pass of ``module`` (eval mode) on ``inputs``; ``inner=None`` picks a block size."""
    import numpy as np
    import torch

    if engine not in ENGINES:
        raise NasplatError(f"unknown engine '{engine}'; allowed: {', '.join(ENGINES)}")
    module.eval()
    with torch_threads(threads), torch.inference_mode():
        fn: Callable[[], object]
        if engine == "eager":

            def fn() -> object:
                return module(*inputs)

        else:
            session = ort_session(onnx_bytes(module, inputs), threads)
            feed = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(_input_names(len(inputs)), inputs, strict=True)}
            run = session.run

            def fn() -> object:
                return run(None, feed)

        n_inner = auto_inner(fn) if inner is None else inner
        return time_callable(fn, warmup=warmup, repeats=repeats, inner=n_inner)


# ------------------------------------------------------------------------------------------------ cost models
@register("cost_model", "measured")
class MeasuredCostModel(CostModel):
    """Median latency (and IQR) of the stand-alone network, timed on this machine with PyTorch eager.

    ``threads`` intra-op threads, ``batch_size`` samples per forward pass, ``warmup`` untimed and ``repeats``
    timed passes. Devices: this machine only (``local-cpu`` or its CPU-derived name); formats: float32.
    """

    name: ClassVar[str] = "measured"
    metrics: ClassVar[tuple[str, ...]] = ("latency_ms", "latency_iqr_ms")
    engine: ClassVar[str] = "eager"

    def __init__(
        self, *, threads: int = 1, batch_size: int = 1, warmup: int = 10, repeats: int = 30, seed: int = 0
    ) -> None:
        if threads < 1 or batch_size < 1 or repeats < 1 or warmup < 0:
            raise NasplatError(
                f"cost model '{self.name}': need threads, batch_size, repeats >= 1 and warmup >= 0 "
                f"(got threads={threads}, batch_size={batch_size}, repeats={repeats}, warmup={warmup})"
            )
        self.threads = threads
        self.batch_size = batch_size
        self.warmup = warmup
        self.repeats = repeats
        self.seed = seed
        self._supernets: dict[tuple[str, str], Supernet] = {}

    def devices(self) -> list[str] | None:
        return local_device_names()

    def check_device(self, device: str | None) -> None:
        check_local_device(self.name, device)

    def formats(self, device: str | None = None) -> list[str] | None:
        return list(MEASURED_FORMATS)

    def provenance(self) -> dict[str, Any]:
        """Where and how the numbers are measured."""
        return {
            **local_device(),
            "engine": self.engine,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "repeats": self.repeats,
        }

    def module(self, space: SearchSpace, arch: Architecture) -> nn.Module:
        """The stand-alone network of ``arch`` (eval mode), extracted from a seeded supernet built once."""
        key = (space.name, space.hash)
        net = self._supernets.get(key)
        if net is None:
            net = self._supernets[key] = space.family.build_supernet(space, seed=self.seed)
        return net.extract(arch).eval()

    def inputs(self, space: SearchSpace) -> tuple[torch.Tensor, ...]:
        """A random batch of the space's input shape (seeded), as the family's networks take it: through its
        task's ``model_inputs`` (a ControlNet takes a noisy image, a timestep and a condition)."""
        import torch

        shape = tuple(int(s) for s in space.macro.input_shape)  # type: ignore[attr-defined]
        gen = torch.Generator().manual_seed(self.seed)
        images = torch.randn((self.batch_size, *shape), generator=gen)
        labels = torch.randint(0, int(getattr(space.macro, "num_classes", 10)), (self.batch_size,), generator=gen)
        return tuple(space.family.task(space).model_inputs((images, labels)))

    def measure(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> Measurement:
        """The full measurement (every timed sample) of ``arch`` on this machine."""
        self.check_device(device)
        space.validate(arch)
        self.check_formats(space.family.layers(space, arch), device)
        return measure_module(
            self.module(space, arch),
            self.inputs(space),
            engine=self.engine,
            threads=self.threads,
            warmup=self.warmup,
            repeats=self.repeats,
        )

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        m = self.measure(space, arch, device)
        return {"latency_ms": m.latency_ms, "latency_iqr_ms": m.latency_iqr_ms}


@register("cost_model", "measured_onnx")
class OnnxMeasuredCostModel(MeasuredCostModel):
    """As ``measured``, but the network is exported to ONNX and timed with ONNX Runtime (CPU provider)."""

    name: ClassVar[str] = "measured_onnx"
    engine: ClassVar[str] = "onnxruntime"
