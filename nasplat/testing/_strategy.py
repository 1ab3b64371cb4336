"""The path-sampling strategy suite: paths are architectures of the space; state_dict resumes exactly."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasplat.errors import NasplatError

from ._common import Check, example_batch, expect, fail, run_checks

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.space import SearchSpace
    from nasplat.train import SamplingStrategy


def _what(name: str, space: SearchSpace) -> str:
    return f"strategy '{name}' (space '{space.name}')"


def _ready(name: str, space: SearchSpace, options: dict[str, Any] | None, seed: int) -> SamplingStrategy:
    """The strategy built as the trainer builds it (by name, with ``options``), set up on a fresh supernet."""
    from nasplat.train import make_strategy

    strategy = make_strategy(name, space, dict(options or {}))
    net = space.family.build_supernet(space, seed=seed)
    strategy.setup(net, space.family.task(space))
    return strategy


def _steps(strategy: SamplingStrategy, space: SearchSpace, rng: np.random.Generator, start: int, n: int,
           seed: int, what: str, check: str) -> list[list[str]]:  # fmt: skip
    """The keys of each step's paths for steps ``start .. start + n - 1`` (each path checked)."""
    out = []
    for step in range(start, start + n):
        batch = example_batch(space, 4, seed * 1000 + step)
        paths = strategy.paths(space, rng, step, batch)
        expect(isinstance(paths, list) and paths, what, check, f"step {step}: paths() must return a non-empty list")
        for arch in paths:
            try:
                space.validate(arch)
            except (NasplatError, AttributeError) as exc:
                fail(what, check, f"step {step}: path {arch!r} is not an architecture of the space: {exc}")
        out.append([a.key for a in paths])
    return out


def check_valid_paths(name: str, space: SearchSpace, *, options: dict[str, Any] | None = None, steps: int = 3,
                      seed: int = 0) -> None:  # fmt: skip
    """After ``setup(supernet, task)``, every step's ``paths`` is a non-empty list of architectures of the space;
    the same generator seed gives the same paths."""
    what = _what(name, space)
    strategy = _ready(name, space, options, seed)
    a = _steps(strategy, space, np.random.default_rng(seed), 0, steps, seed, what, "valid paths")
    b = _steps(_ready(name, space, options, seed), space, np.random.default_rng(seed), 0, steps, seed, what,
               "valid paths")  # fmt: skip
    expect(a == b, what, "valid paths", "two strategies built alike, with generators of one seed, pick other paths")


def check_state_resume(name: str, space: SearchSpace, *, options: dict[str, Any] | None = None, steps: int = 3,
                       seed: int = 0) -> None:  # fmt: skip
    """A strategy rebuilt from another's ``state_dict`` (JSON round trip) picks the same next paths as the one
    that went on, given the same generator state: a resumed training run is exact."""
    what, check = _what(name, space), "state_dict resume"
    strategy = _ready(name, space, options, seed)
    rng = np.random.default_rng(seed)
    _steps(strategy, space, rng, 0, steps, seed, what, check)
    state = strategy.state_dict()
    expect(isinstance(state, dict), what, check, f"state_dict() must be a dict, got {type(state).__name__}")
    try:
        saved = json.loads(json.dumps(state))
    except (TypeError, ValueError) as exc:
        fail(what, check, f"state_dict() is not JSON-able: {exc}")
    rng_state = rng.bit_generator.state
    resumed = _ready(name, space, options, seed)
    resumed.load_state_dict(saved)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    went_on = _steps(strategy, space, rng, steps, steps, seed, what, check)
    again = _steps(resumed, space, rng2, steps, steps, seed, what, check)
    expect(went_on == again, what, check, "the resumed strategy picks other paths than the one that went on")


def noise_dataset(space: SearchSpace, n: int = 32, seed: int = 0) -> ArrayDataset:
    """A seeded dataset of uint8 noise images of the space's input shape, with uniform labels."""
    import torch

    from nasplat.datasets import ArrayDataset

    c, h, w = (int(s) for s in space.macro.input_shape)  # type: ignore[attr-defined]
    classes = int(getattr(space.macro, "num_classes", 10))
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return ArrayDataset("noise", images, labels, (0.5,) * c, (0.25,) * c, tuple(str(i) for i in range(classes)))


def check_training_resume(name: str, space: SearchSpace, *, options: dict[str, Any] | None = None, steps: int = 3,
                          seed: int = 0) -> None:  # fmt: skip
    """Through :func:`nasplat.train.train_supernet` (2 epochs of 2 steps on noise images), training straight,
    and training 1 epoch, stopping and resuming into a supernet built from another seed, end with the same
    weights, bit for bit."""
    import torch

    from nasplat.train import TrainSettings, train_supernet

    what, check = _what(name, space), "training resumes exactly"
    task = space.family.task(space)
    data = noise_dataset(space, 32, seed)
    settings = TrainSettings(epochs=2, batch_size=8, lr=0.05, seed=seed, max_steps_per_epoch=2,
                             strategy=name, strategy_options=dict(options or {}))  # fmt: skip

    class Stop(Exception):
        pass

    def stop(_record: dict[str, Any]) -> None:
        raise Stop

    with tempfile.TemporaryDirectory(prefix="nasplat-testing-") as tmp:
        straight = space.family.build_supernet(space, seed=seed)
        train_supernet(straight, task, data, settings, Path(tmp) / "a", progress=False)
        with contextlib.suppress(Stop):
            train_supernet(space.family.build_supernet(space, seed=seed), task, data, settings, Path(tmp) / "b",
                           progress=False, on_epoch=stop)  # fmt: skip
        resumed = space.family.build_supernet(space, seed=seed + 1)
        train_supernet(resumed, task, data, settings, Path(tmp) / "b", progress=False)
    a, b = straight.state_dict(), resumed.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    expect(not differ, what, check, f"a resumed run ends with other weights: {differ[:3]}")


#: Every strategy check, in the order :func:`check_strategy` runs them.
STRATEGY_CHECKS: dict[str, Check] = {
    "valid_paths": check_valid_paths,
    "state_resume": check_state_resume,
    "training_resume": check_training_resume,
}


def check_strategy(name: str, space: SearchSpace, *, options: dict[str, Any] | None = None, steps: int = 3,
                   seed: int = 0, skip: Sequence[str] = ()) -> None:  # fmt: skip
    """Run every strategy check (:data:`STRATEGY_CHECKS`, but those in ``skip``) on the strategy registered as
    ``name`` (``registry.register("strategy", name)``: the trainer builds strategies by name), built for
    ``space`` with ``options`` as ``TrainSettings.strategy_options`` would give them."""
    run_checks(STRATEGY_CHECKS, skip, name, space, options=options, steps=steps, seed=seed)
