"""What every suite shares: the failure type, seeded architectures and inputs, a warmed-up supernet."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    import torch

    from nasplat.model import Supernet
    from nasplat.space import Architecture, SearchSpace

Check = Callable[..., None]


class ConformanceError(AssertionError):
    """A component broke its role's contract. The message names the component, the check and what was seen.

    An ``AssertionError``, so pytest reports it as a failed test (not an error in the test's set-up)."""


def fail(what: str, check: str, message: str) -> NoReturn:
    raise ConformanceError(f"{what}: {check}: {message}")


def expect(condition: object, what: str, check: str, message: str) -> None:
    if not condition:
        fail(what, check, message)


def run_checks(checks: Mapping[str, Check], skip: Sequence[str], *args: Any, **kwargs: Any) -> None:
    """Run every check of a role (those named in ``skip`` excepted), in the table's order."""
    unknown = [s for s in skip if s not in checks]
    if unknown:
        raise NasplatError(f"no such check {', '.join(map(repr, unknown))}; checks: {', '.join(checks)}")
    for name, check in checks.items():
        if name not in skip:
            check(*args, **kwargs)


def sample_archs(space: SearchSpace, n: int = 6, seed: int = 0) -> list[Architecture]:
    """``n`` distinct seeded samples of ``space`` (fewer when the space is smaller), in drawing order.

    The architectures every suite checks by default: a caller that must prepare something per architecture (a
    benchmark table, a lookup table) builds it for these and passes the same list on."""
    rng = np.random.default_rng(seed)
    out: dict[str, Architecture] = {}
    for _ in range(20 * n):
        arch = space.sample(rng)
        out.setdefault(arch.key, arch)
        if len(out) == n:
            break
    return list(out.values())


def example_batch(space: SearchSpace, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(images, labels)`` batch of the space's ``macro.input_shape`` and ``num_classes``: Gaussian
    noise images (the normalised form a dataset's batches have) and uniform labels."""
    import torch

    macro = space.macro
    shape = tuple(int(s) for s in getattr(macro, "input_shape", ()))
    if len(shape) != 3:
        raise NasplatError(f"space '{space.name}': the suites need a macro input_shape (channels, height, width)")
    classes = int(getattr(macro, "num_classes", 10))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def model_inputs(space: SearchSpace, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The network inputs of :func:`example_batch` (through the family task's ``model_inputs``)."""
    return tuple(space.family.task(space).model_inputs(example_batch(space, n, seed)))


def warmed_supernet(space: SearchSpace, seed: int = 0, paths: int = 3) -> Supernet:
    """A supernet whose numbers are all non-trivial, as after some training, in eval mode.

    Built from ``seed``; ``paths`` sampled paths then run forward in train mode (gradients on, no step) so that
    normalisation statistics and calibrated ranges (fake quantization) move off their initial values, and every
    trainable parameter gets seeded noise (zero-initialised projections, as ControlNet's, stop being zero).
    Frozen parameters (``requires_grad`` False) are left as they are: training never changes them either."""
    import torch

    net = space.family.build_supernet(space, seed=seed)
    inputs = model_inputs(space, 4, seed + 1)
    net.train()
    for arch in sample_archs(space, paths, seed + 2):  # with gradients on, as training runs (calibration may
        with net.activate(arch):  # observe only then); nothing is stepped
            net(*inputs)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 3)
        for p in net.parameters():
            if p.requires_grad and p.is_floating_point():
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.device, p.dtype))
    return net.eval()


def flat_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a network output (a tensor, or nested tuples, lists and dicts of them), in order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for k in sorted(out) for t in flat_tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flat_tensors(item)]
    return []


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two network outputs (inf when their structure or shapes differ)."""
    ta, tb = flat_tensors(a), flat_tensors(b)
    if len(ta) != len(tb) or not ta:
        return math.inf
    worst = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return math.inf
        if x.numel():
            worst = max(worst, float((x.detach().double() - y.detach().double()).abs().max()))
    return worst


def scale_of(out: Any) -> float:
    """Largest absolute value of a network output (for relative tolerances)."""
    return max((float(t.detach().abs().max()) for t in flat_tensors(out) if t.numel()), default=0.0)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
