"""nasplat's own samplers, usable anywhere Optuna's are (ask/tell, ``study.optimize``, Ray Tune's OptunaSearch).

They see the space, so their moves are the space's own: ``SearchSpace.mutate`` changes one cell edge, one
stage depth, one bit-width, to a neighbouring choice where choices are ordered.

- :class:`EvolutionSampler`: regularized (aging) evolution (Real et al. 2019). The population is the most
  recent ``population_size`` completed trials; a parent is the winner of a random tournament and its child a
  mutation. With several objectives the tournament compares non-domination rank, then crowding distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from nasplat.errors import NasplatError
from nasplat.pareto import non_dominated_mask
from nasplat.registry import register

if TYPE_CHECKING:
    from nasplat.architecture import Architecture
    from nasplat.space import SearchSpace


def space_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each dimension (as :func:`nasplat.study.suggest_architecture` asks them)."""
    out: dict[str, BaseDistribution] = {}
    for d in space.dimensions:
        if d.kind == "integer" and len(d.choices) > 1:
            ints = [int(c) for c in d.choices]  # type: ignore[arg-type]
            out[d.label] = IntDistribution(ints[0], ints[-1], step=ints[1] - ints[0])
        else:
            out[d.label] = CategoricalDistribution(d.choices)  # type: ignore[arg-type]
    return out


def pareto_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-domination rank of each row (0 = on the front), by peeling fronts."""
    ranks = np.full(len(values), -1)
    remaining = np.arange(len(values))
    rank = 0
    while len(remaining):
        mask = non_dominated_mask(values[remaining], directions)
        if not mask.any():  # only NaN rows left
            ranks[remaining] = rank
            break
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def crowding(values: np.ndarray) -> np.ndarray:
    """Crowding distance of each row within its set (larger = more isolated; extremes are infinite)."""
    n, m = values.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(values[:, j])
        span = values[order[-1], j] - values[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / span
    return dist


class SpaceAwareSampler(optuna.samplers.BaseSampler):
    """Base for samplers that propose whole architectures of a space (relative sampling over every label)."""

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._distributions = space_distributions(space)
        self._key_cache: dict[tuple[int, int], str] = {}

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        seen = self._seen_keys(study, trial)
        arch = self.propose(study, seen)
        return arch.as_dict()

    def propose(self, study: optuna.Study, seen: set[str]) -> Architecture:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers for subclasses
    def _history(self, study: optuna.Study) -> tuple[list[Architecture], np.ndarray, np.ndarray]:
        """Completed architectures in trial order, their objective values and constraint violations."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
        done.sort(key=lambda t: t.number)
        archs, values, violations = [], [], []
        for t in done:
            try:
                archs.append(self.space.make(t.params, check=False))
            except NasplatError:  # a trial of another shape (enqueued by hand) is skipped
                continue
            values.append(t.values)
            violations.append(sum(max(0.0, c) for c in t.constraints.values()))
        shape = (len(archs), len(study.directions))
        return archs, np.asarray(values, dtype=float).reshape(shape), np.asarray(violations, dtype=float)

    def _seen_keys(self, study: optuna.Study, current: FrozenTrial) -> set[str]:
        """Keys of architectures evaluated or being evaluated (proposing them again would waste budget)."""
        keys = set()
        labels = set(self.space.labels)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == current.number:
                continue
            key = self._key_cache.get((study._study_id, t.number))
            if key is None and set(t.params) == labels:
                key = self.space.make(t.params, check=False).key
                if t.state == TrialState.COMPLETE:
                    self._key_cache[(study._study_id, t.number)] = key
            if key is not None:
                keys.add(key)
        return keys

    def _fresh(self, make: Any, seen: set[str], tries: int = 50) -> Architecture:
        """The first candidate from ``make()`` not evaluated yet (or the last one tried)."""
        arch = make()
        for _ in range(tries):
            if arch.key not in seen:
                break
            arch = make()
        return arch  # type: ignore[no-any-return]


class EvolutionSampler(SpaceAwareSampler):
    """Regularized (aging) evolution; multi-objective by non-domination rank and crowding."""

    def __init__(
        self, space: SearchSpace, *, seed: int = 0, population_size: int = 20, tournament_size: int = 5,
        n_changes: int = 1,
    ) -> None:  # fmt: skip
        super().__init__(space, seed=seed)
        if population_size < 2 or not 1 <= tournament_size <= population_size:
            raise ValueError("need population_size >= 2 and 1 <= tournament_size <= population_size")
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.n_changes = n_changes

    def propose(self, study: optuna.Study, seen: set[str]) -> Architecture:
        archs, values, violations = self._history(study)
        if len(archs) < self.population_size:
            return self._fresh(lambda: self.space.sample(self._rng), seen)
        pop_archs = archs[-self.population_size :]
        pop_values = values[-self.population_size :]
        pop_violations = violations[-self.population_size :]
        directions = [d.name.lower() for d in study.directions]
        picks = self._rng.choice(len(pop_archs), size=self.tournament_size, replace=False)
        # constraint handling: only the least-violating contestants compete on the objectives
        picks = picks[pop_violations[picks] == pop_violations[picks].min()]
        parent = pop_archs[self._tournament_winner(pop_values[picks], directions, picks)]
        return self._fresh(lambda: self.space.mutate(parent, self._rng, self.n_changes), seen)

    def _tournament_winner(self, values: np.ndarray, directions: list[str], picks: np.ndarray) -> int:
        if values.shape[1] == 1:
            v = values[:, 0] if directions[0] == "minimize" else -values[:, 0]
            v = np.where(np.isfinite(v), v, np.inf)
            return int(picks[int(np.argmin(v))])
        ranks = pareto_ranks(values, directions)
        best = np.flatnonzero(ranks == ranks.min())
        crowd = crowding(values[best])
        return int(picks[best[int(np.argmax(crowd))]])


@register("sampler", "evolution")
def _make_evolution(seed: int, n_objectives: int, space: SearchSpace, **options: Any) -> EvolutionSampler:
    return EvolutionSampler(space, seed=seed, **options)


class GuidedSampler(SpaceAwareSampler):
    """Predictor-guided search (in the spirit of BANANAS and DyNAS-T's LINAS).

    After ``n_init`` random architectures, it fits a registered predictor per objective on everything
    evaluated so far, scores a pool of cheap candidates (mutations of the best architectures found plus
    random ones) and proposes the most promising one not yet evaluated. Promise is an optimistic estimate
    (mean + ``kappa`` x spread where the predictor gives a spread); with several objectives it is the
    hypervolume the candidate's optimistic point would add to the current front. Predictors are refitted
    when the evaluated set has grown by ``refit_fraction`` (10 % by default), and the ranked pool is reused
    in between, so a batch of asks costs one fit.
    """

    def __init__(
        self, space: SearchSpace, *, seed: int = 0, predictor: str = "gbdt",
        predictor_params: dict[str, Any] | None = None, n_init: int = 10, candidates: int = 300,
        parents: int = 10, kappa: float = 0.5, refit_fraction: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__(space, seed=seed)
        from nasplat.predictor import make_predictor

        make_predictor(predictor, **(predictor_params or {}))  # fail early on a bad name or parameters
        self.predictor = predictor
        self.predictor_params = dict(predictor_params or {})
        self.n_init = max(2, n_init)
        self.candidates = candidates
        self.parents = parents
        self.kappa = kappa
        self.refit_fraction = refit_fraction
        self._fitted_at = -1
        self._ranked: list[Architecture] = []
        self._seed = seed
        self._predicted: dict[str, tuple[float, ...]] = {}  # arch key -> predicted objective values
        self._pending: list[tuple[np.ndarray, tuple[float, ...]]] = []  # (measured, predicted) not yet scored

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = super().sample_relative(study, trial, search_space)
        predicted = self._predicted.get(self.space.make(params, check=False).key) if params else None
        if predicted is not None:  # shown next to the measured values (dashboard: predicted against measured)
            from nasplat.study import objective_names

            for name, value in zip(objective_names(study), predicted, strict=True):
                study._storage.set_trial_user_attr(trial._trial_id, f"predicted:{name}", float(value))
        return params

    def propose(self, study: optuna.Study, seen: set[str]) -> Architecture:
        archs, values, violations = self._history(study)
        if len(archs) < self.n_init:
            return self._fresh(lambda: self.space.sample(self._rng), seen)
        grown = len(archs) - self._fitted_at
        if self._fitted_at < 0 or grown >= max(1, int(self.refit_fraction * self._fitted_at)):
            self._record_quality(study, archs, values)
            self._ranked = self._rank(study, archs, values, violations)
            self._fitted_at = len(archs)
        while self._ranked:
            arch = self._ranked.pop(0)
            if arch.key not in seen:
                return arch
        return self._fresh(lambda: self.space.sample(self._rng), seen)

    def _record_quality(self, study: optuna.Study, archs: list[Architecture], values: np.ndarray) -> None:
        """How well the last fit ranked the architectures it had not seen, now that they are evaluated.

        Appended to the study attribute ``predictor_quality`` (Kendall tau and Spearman per objective), so a
        user can see whether to trust the predictor.
        """
        from nasplat.predictor import prediction_quality
        from nasplat.study import objective_names

        for i, a in enumerate(archs):
            if a.key in self._predicted:
                self._pending.append((values[i], self._predicted.pop(a.key)))
        if len(self._pending) < 10:  # score predictions in groups of at least ten
            return
        measured = np.array([m for m, _ in self._pending])
        pred = np.array([p for _, p in self._pending])
        records = list(study.user_attrs.get("predictor_quality") or [])
        for j, name in enumerate(objective_names(study)):
            q = prediction_quality(measured[:, j], pred[:, j])
            records.append({"trials": len(archs), "model": self.predictor, "metric": name, "n": len(pred), **q})
        study.set_user_attr("predictor_quality", records)
        self._pending = []

    def _rank(self, study: optuna.Study, archs: list[Architecture], values: np.ndarray,
              violations: np.ndarray) -> list[Architecture]:  # fmt: skip
        from nasplat.pareto import hypervolume
        from nasplat.predictor import make_predictor

        directions = [d.name.lower() for d in study.directions]
        signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
        score = values * signs  # larger is better in every column
        feasible = violations <= 0
        # candidate pool: mutations of the best (front members first) and fresh random architectures
        order = np.argsort(pareto_ranks(values, directions) + (~feasible) * 1e6, kind="stable")
        parents = [archs[i] for i in order[: self.parents]]
        seen = {a.key for a in archs}
        pool: dict[str, Architecture] = {}
        n_mut = (2 * self.candidates) // 3
        for i in range(n_mut):
            child = self.space.mutate(parents[i % len(parents)], self._rng, 1 + int(self._rng.integers(2)))
            if child.key not in seen:
                pool.setdefault(child.key, child)
        while len(pool) < self.candidates:
            a = self.space.sample(self._rng)
            if a.key not in seen:
                pool.setdefault(a.key, a)
            if len(pool) + len(seen) >= self._space_size():
                break
        cands = list(pool.values())
        if not cands:
            return []
        optimistic = np.zeros((len(cands), score.shape[1]))
        means = np.zeros_like(optimistic)
        for j in range(score.shape[1]):
            model = make_predictor(self.predictor, **self.predictor_params)
            model.fit(self.space, archs, score[:, j], seed=self._seed + len(archs))
            mean, std = model.predict(self.space, cands)
            optimistic[:, j] = mean + (self.kappa * std if std is not None else 0.0)
            means[:, j] = mean * signs[j]  # back in the objective's own units and direction
        if score.shape[1] == 1:
            ranking = np.argsort(-optimistic[:, 0], kind="stable")
        else:  # hypervolume each candidate would add to the current feasible front (maximisation form)
            front = score[feasible] if feasible.any() else score
            ref = np.minimum(front.min(axis=0), optimistic.min(axis=0)) - 1e-9
            base = hypervolume(front, ref, ["maximize"] * score.shape[1])
            gain = np.array(
                [hypervolume(np.vstack([front, p]), ref, ["maximize"] * score.shape[1]) - base for p in optimistic]
            )
            ranking = np.lexsort((-optimistic.sum(axis=1), -gain))
        self._predicted.update({c.key: tuple(float(v) for v in means[i]) for i, c in enumerate(cands)})
        return [cands[i] for i in ranking]

    def _space_size(self) -> int:
        try:
            return self.space.size()
        except NasplatError:
            return 1 << 62


@register("sampler", "guided")
def _make_guided(seed: int, n_objectives: int, space: SearchSpace, **options: Any) -> GuidedSampler:
    return GuidedSampler(space, seed=seed, **options)
