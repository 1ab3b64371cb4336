"""Path-sampling strategies: which paths of the supernet each training step trains (uniform as in SPOS,
sandwich, fair, attentive)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.model import Supernet, kept_bn_statistics

if TYPE_CHECKING:
    from nasplat.model import Batch, Task
    from nasplat.space import Architecture, SearchSpace

# --------------------------------------------------------------------------------------------------------------
# sampling strategies


class SamplingStrategy:
    """Which paths of the supernet are trained on a step (their losses are averaged).

    Strategies are registered with ``registry.register("strategy", NAME)`` and built as
    ``cls(space, **options)`` (options from ``TrainSettings.strategy_options``). :meth:`setup` hands them the
    supernet and task before training starts. ``distill = True`` makes the first path of every step the
    teacher of the others (in-place distillation through ``Task.distill_loss``). A strategy that keeps state
    between steps must return it from ``state_dict`` (JSON-able) and take it back in ``load_state_dict`` so
    that resumed runs are exact.
    """

    name: ClassVar[str] = ""
    distill: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.supernet: Supernet | None = None
        self.task: Task | None = None

    def setup(self, supernet: Supernet, task: Task) -> None:
        self.supernet, self.task = supernet, task

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@registry.register("strategy", "uniform")
class UniformStrategy(SamplingStrategy):
    """SPOS: one uniformly random path per step."""

    name: ClassVar[str] = "uniform"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [space.sample(rng)]


@registry.register("strategy", "sandwich")
class SandwichStrategy(SamplingStrategy):
    """The sandwich rule (BigNAS): the largest, the smallest and ``n_random`` random paths every step; the
    largest learns from the labels and teaches the others (in-place distillation). Largest and smallest come
    from the family (``Family.extremes``)."""

    name: ClassVar[str] = "sandwich"
    distill: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, n_random: int = 2) -> None:
        super().__init__(space)
        if n_random < 0:
            raise NasplatError(f"strategy 'sandwich': n_random must be >= 0, got {n_random}")
        self.n_random = int(n_random)
        self.largest, self.smallest = space.family.extremes(space)

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [self.largest, self.smallest, *(space.sample(rng) for _ in range(self.n_random))]


@registry.register("strategy", "fair")
class FairStrategy(SamplingStrategy):
    """Fair sampling (FairNAS): every step trains K paths such that each choice of every dimension is used
    exactly once (K = the largest choice count; dimensions with fewer choices repeat theirs in a shuffled
    cycle). A path that breaks a space constraint is replaced by a random valid one."""

    name: ClassVar[str] = "fair"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        k = max(len(d.choices) for d in space.dimensions)
        columns = []
        for d in space.dimensions:
            n = len(d.choices)
            order = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k]
            columns.append([d.choices[int(i)] for i in order])
        out = []
        for i in range(k):
            choices = {d.label: col[i] for d, col in zip(space.dimensions, columns)}
            out.append(space.make(choices) if space.satisfies(choices) else space.sample(rng))
        return out


@registry.register("strategy", "attentive")
class AttentiveStrategy(SamplingStrategy):
    """Pareto-aware sampling (after AttentiveNAS): each step draws ``candidates`` random paths, scores them by a
    cost model's ``metric`` and by their loss on the step's batch (no gradients), and trains ``train_paths`` of
    those on the current (cost, loss) front, so training favours subnets near the accuracy/cost front. With
    ``with_extremes`` the family's largest and smallest paths are trained too (sandwich-style, no distillation
    unless ``distill`` is set)."""

    name: ClassVar[str] = "attentive"

    def __init__(
        self,
        space: SearchSpace,
        cost_model: str = "analytical",
        metric: str = "macs",
        device: str | None = None,
        candidates: int = 4,
        train_paths: int = 1,
        with_extremes: bool = False,
    ) -> None:
        super().__init__(space)
        if candidates < 1 or train_paths < 1:
            raise NasplatError("strategy 'attentive': candidates and train_paths must be >= 1")
        model = registry.get("cost_model", cost_model)()
        model.check_device(device)
        if metric not in model.metrics:
            raise NasplatError(
                f"strategy 'attentive': cost model '{cost_model}' has no metric '{metric}'; it has {list(model.metrics)}"
            )
        self.cost_model, self.metric, self.device = model, metric, device
        self.candidates, self.train_paths, self.with_extremes = int(candidates), int(train_paths), bool(with_extremes)
        self._costs: dict[str, float] = {}
        self.extremes = space.family.extremes(space) if with_extremes else ()

    def cost(self, arch: Architecture) -> float:
        if arch.key not in self._costs:
            self._costs[arch.key] = float(self.cost_model.estimate(self.space, arch, self.device)[self.metric])
        return self._costs[arch.key]

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        if self.supernet is None or self.task is None or batch is None:
            raise NasplatError("strategy 'attentive' needs setup(supernet, task) and the step's batch")
        pool = list({a.key: a for a in (space.sample(rng) for _ in range(self.candidates))}.values())
        scores = []
        with torch.no_grad(), kept_bn_statistics([self.supernet]):
            for arch in pool:
                with self.supernet.activate(arch):
                    scores.append((self.cost(arch), float(self.task.loss(self.supernet, batch, None))))
        front = [
            a
            for a, (c, v) in zip(pool, scores)
            if not any(c2 <= c and v2 <= v and (c2, v2) != (c, v) for c2, v2 in scores)
        ]
        picked = [front[int(i)] for i in rng.permutation(len(front))[: self.train_paths]]
        return [*self.extremes, *picked]


def make_strategy(name: str, space: SearchSpace, options: dict[str, Any] | None = None) -> SamplingStrategy:
    strategy = registry.build("strategy", name, space, options=options)
    if not isinstance(strategy, SamplingStrategy):
        raise NasplatError(f"strategy '{name}' is not a SamplingStrategy")
    return strategy
