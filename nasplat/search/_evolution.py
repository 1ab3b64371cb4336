"""nasplat's own samplers, usable anywhere Optuna's are (ask/tell, ``study.optimize``, Ray Tune's OptunaSearch).

They see the space, so their moves are the space's own: ``SearchSpace.mutate`` changes one cell edge, one
stage depth, one bit-width, to a neighbouring choice where choices are ordered.

- :class:`EvolutionSampler`: regularized (aging) evolution (Real et al. 2019). The population is the most
  recent ``population_size`` completed trials; a parent is the winner of a random tournament and its child a
  mutation. With several objectives the tournament compares non-domination rank, then crowding distance.
- :class:`GuidedSampler`: predictor-guided search; with several objectives it ranks candidates by the
  hypervolume their predicted points add (see the class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nasplat.errors import NasplatError
from nasplat.pareto import non_dominated_mask
from nasplat.registry import OPTIONS_OF, register
from nasplat.study import space_distributions

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace


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


def hv_gains(points: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume each point would add to ``front`` (maximisation form, reference ``ref``)."""
    from nasplat.pareto import hypervolume

    m = front.shape[1]
    up = ["maximize"] * m
    base = hypervolume(front, ref.tolist(), up) if len(front) else 0.0
    gains = np.zeros(len(points))
    for i, p in enumerate(points):
        if np.any(p <= ref) or (len(front) and np.any(np.all(front >= p, axis=1))):
            continue  # below the reference or weakly dominated: adds nothing
        gains[i] = hypervolume(np.vstack([front, p]) if len(front) else p[None], ref.tolist(), up) - base
    return gains


def greedy_front_order(points: np.ndarray, front: np.ndarray, ref: np.ndarray, span: np.ndarray, n_pick: int,
                       explore: float = 0.0, start: int = 0) -> list[int]:  # fmt: skip
    """Order candidates (their predicted points, maximisation form) for evaluation against a front.

    Of the first ``n_pick``, a share ``explore`` (pick ``k`` when ``floor((start + k + 1) * explore)`` steps
    up, so the share holds across calls that each hand out only their first few picks) comes from the candidates' own predicted front (the ends and
    the sparsest stretches first, by crowding distance): predictors shrink towards the mean where they have
    seen little, so a candidate at an end of the front is often predicted behind the measured front although
    it would extend it; comparing candidates among themselves does not suffer from that bias. The others are
    chosen greedily by hypervolume gain over the measured front, each pick's predicted point joining the front
    before the next (so a batch spreads along the front instead of crowding one gap). The remaining
    candidates follow by gain, then by how far (in units of ``span``) they fall short of the front.
    """
    gains = hv_gains(points, front, ref)
    ranks = pareto_ranks(points, ["maximize"] * points.shape[1])
    by_front = np.lexsort((-crowding_by_rank(points, ranks), ranks))
    order: list[int] = []
    left = np.ones(len(points), dtype=bool)
    cur = front
    for k in range(n_pick):
        if not left.any():
            break
        step = start + k
        if int((step + 1) * explore) > int(step * explore) or gains[left].max() <= 0:
            i = int(next(c for c in by_front if left[c]))
        else:
            i = int(np.flatnonzero(left)[np.argmax(gains[left])])
        order.append(i)
        left[i] = False
        cur = np.vstack([cur, points[i]])
        stale = left & (gains > 0)
        gains[stale] = hv_gains(points[stale], cur, ref)
    rest = np.flatnonzero(left)
    if len(front):  # shortfall: the smallest uniform improvement (scaled) that would put a point on the front
        lack = ((front[None, :, :] - points[rest, None, :]) / span).max(axis=2).min(axis=1)
    else:
        lack = np.zeros(len(rest))
    order.extend(int(rest[k]) for k in np.lexsort((lack, -gains[rest])))
    return order


def crowding_by_rank(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Crowding distance of each row within its non-domination rank."""
    out = np.zeros(len(values))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        out[members] = crowding(values[members])
    return out


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


setattr(_make_evolution, OPTIONS_OF, lambda: EvolutionSampler)


class GuidedSampler(SpaceAwareSampler):
    """Predictor-guided search (in the spirit of BANANAS and DyNAS-T's LINAS).

    After ``n_init`` random architectures, it fits a registered predictor per objective on everything
    evaluated so far, scores a pool of cheap candidates and proposes the most promising one not yet
    evaluated. Promise is an optimistic estimate (mean + ``kappa`` x spread where the predictor gives a
    spread). Predictors are refitted when the evaluated set has grown by ``refit_fraction`` (10 % by
    default), and the ranked pool is reused in between, so a batch of asks costs one fit.

    One objective: the pool is mutations of the best architectures found plus random ones, ranked by the
    optimistic estimate.

    Several objectives (a front):

    - the pool (``candidates`` per objective) is the canonical forms of front members, mutations of them
      (the least crowded first, so the whole front is searched locally), uniform crossovers of them and
      random architectures; equivalents of evaluated architectures (same canonical form, other dead parts)
      stay candidates while their class holds less than a share ``equivalents`` of the evaluated ones;
    - each objective is learned in its own units (a skewed cost may be log-transformed) and, when the
      predictor has a ``canonical`` option the user left unset, with or without canonicalisation as 3-fold
      cross-validation prefers (a latency also depends on the dead edges the canonical form drops);
    - candidates are ordered by the hypervolume their predicted point adds to the evaluated front *as the
      predictors see it* (the evaluated architectures' fitted values, so the predictors' shrinkage towards
      the mean cancels), greedily: each pick joins the front before the next, so a batch spreads out;
    - a share ``explore`` of the proposals instead comes from the candidates' own predicted front, its ends
      and sparsest stretches first: where the predictors have seen little they predict too timidly, and the
      ends of the front (the cheapest cells that still work) are found this way.
    """

    def __init__(
        self, space: SearchSpace, *, seed: int = 0, predictor: str = "gbdt",
        predictor_params: dict[str, Any] | None = None, n_init: int = 10, candidates: int = 300,
        parents: int = 10, kappa: float = 0.5, refit_fraction: float = 0.1, explore: float = 0.3,
        equivalents: float = 0.05,
    ) -> None:  # fmt: skip
        super().__init__(space, seed=seed)
        from nasplat.measure import make_predictor

        make_predictor(predictor, **(predictor_params or {}))  # fail early on a bad name or parameters
        self.predictor = predictor
        self.predictor_params = dict(predictor_params or {})
        self.n_init = max(2, n_init)
        self.candidates = candidates
        self.parents = parents
        self.kappa = kappa
        self.refit_fraction = refit_fraction
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.explore = explore
        self.equivalents = max(0.0, equivalents)  # 0: no limit
        self._fitted_at = -1
        self._ranked: list[Architecture] = []
        self._seed = seed
        self._predicted: dict[str, tuple[float, ...]] = {}  # arch key -> predicted objective values
        self._pending: list[tuple[np.ndarray, tuple[float, ...]]] = []  # (measured, predicted) not yet scored
        self._canonical: dict[int, tuple[int, bool]] = {}  # objective -> (evaluated when decided, canonical)
        self._rng_cv = np.random.default_rng(seed + 1)

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
        from nasplat.measure import prediction_quality
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
        directions = [d.name.lower() for d in study.directions]
        signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
        feasible = violations <= 0
        if values.shape[1] == 1:
            return self._rank_single(archs, values, directions, signs, feasible)
        return self._rank_front(archs, values, directions, signs, feasible)

    def _predict(
        self, archs: list[Architecture], values: np.ndarray, cands: list[Architecture], signs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted means and spreads of the candidates, in maximisation form (objective x sign).

        Each objective is learned in its own units, so a predictor may log-transform a skewed positive
        metric such as a latency.
        """
        from nasplat.measure import make_predictor

        means = np.zeros((len(cands), values.shape[1]))
        spreads = np.zeros_like(means)
        for j in range(values.shape[1]):
            params = {**self.predictor_params, **self._objective_params(archs, values, j)}
            model = make_predictor(self.predictor, **params)
            model.fit(self.space, archs, values[:, j], seed=self._seed + len(archs))
            mean, std = model.predict(self.space, cands)
            means[:, j] = mean * signs[j]
            if std is not None:
                spreads[:, j] = std
        return means, spreads

    def _objective_params(self, archs: list[Architecture], values: np.ndarray, j: int) -> dict[str, Any]:
        """Per-objective predictor settings: whether to encode canonical forms, by cross-validation.

        A canonical encoding pools equivalent architectures, which suits a metric of the function computed
        (accuracy); a cost measured on the network as built (latency) also depends on the dead parts the
        canonical form drops. When the predictor has a ``canonical`` parameter the user did not set, 3-fold
        Kendall tau decides, again each time the evaluated set has doubled (not while canonicalisation
        changes no evaluated architecture).
        """
        from nasplat import registry
        from nasplat.measure import make_predictor, prediction_quality, predictor_parameters

        if "canonical" in self.predictor_params:
            return {}
        if "canonical" not in predictor_parameters(registry.get("predictor", self.predictor)):
            return {}
        n = len(archs)
        decided = self._canonical.get(j)
        if decided is not None and n < 2 * decided[0]:
            return {"canonical": decided[1]}
        if n < 12:
            return {}
        if all(self.space.family.canonical(self.space, a).key == a.key for a in archs):
            return {}  # canonicalisation changes nothing here: no choice to make (yet)
        fold = np.arange(n) % 3
        self._rng_cv.shuffle(fold)
        taus = {}
        for canonical in (True, False):
            pred = np.zeros(n)
            for k in range(3):
                test = fold == k
                model = make_predictor(self.predictor, **{**self.predictor_params, "canonical": canonical})
                model.fit(self.space, [a for a, t in zip(archs, test, strict=True) if not t], values[~test, j],
                          seed=self._seed + n)  # fmt: skip
                pred[test] = model.predict(self.space, [a for a, t in zip(archs, test, strict=True) if t])[0]
            taus[canonical] = prediction_quality(values[:, j], pred)["kendall_tau"]
        choice = bool(not taus[False] > taus[True])  # canonical unless the built form ranks better
        self._canonical[j] = (n, choice)
        return {"canonical": choice}

    def _rank_single(self, archs: list[Architecture], values: np.ndarray, directions: list[str],
                     signs: np.ndarray, feasible: np.ndarray) -> list[Architecture]:  # fmt: skip
        from nasplat.measure import make_predictor

        score = values * signs  # larger is better
        # candidate pool: mutations of the best and fresh random architectures
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
        model = make_predictor(self.predictor, **self.predictor_params)
        model.fit(self.space, archs, score[:, 0], seed=self._seed + len(archs))
        mean, std = model.predict(self.space, cands)
        optimistic = mean + (self.kappa * std if std is not None else 0.0)
        self._predicted.update({c.key: (float(mean[i] * signs[0]),) for i, c in enumerate(cands)})
        return [cands[i] for i in np.argsort(-optimistic, kind="stable")]

    def _front_pool(self, archs: list[Architecture], values: np.ndarray, directions: list[str],
                    feasible: np.ndarray) -> list[Architecture]:  # fmt: skip
        """Candidates for a front: the canonical forms of front members, mutations of them (local search
        along the whole front, the sparse parts first), uniform crossovers of them and random architectures,
        none evaluated yet.

        Architectures equivalent to an evaluated one (same canonical form) stay candidates while their class
        holds less than a share ``equivalents`` of the evaluated ones (at least 2): they compute the same function but may differ in
        cost (a device runs the dead edges of a cell too), which the predictors can tell when they encode
        architectures as they are; but chasing small cost differences in one class must not crowd out the
        search for better functions.
        """
        ranks = pareto_ranks(values, directions) + (~feasible) * 1_000_000
        parents_idx: list[int] = []
        for r in np.unique(ranks):  # whole fronts, the least crowded members first, until enough parents
            members = np.flatnonzero(ranks == r)
            crowd = crowding(values[members])
            parents_idx.extend(int(i) for i in members[np.argsort(-crowd, kind="stable")])
            if len(parents_idx) >= self.parents:
                break
        parents = [archs[i] for i in parents_idx]
        seen = {a.key for a in archs}
        canon = self.space.family.canonical
        classes: dict[str, int] = {}
        for a in archs:
            c = canon(self.space, a).key
            classes[c] = classes.get(c, 0) + 1
        cap = max(2, int(self.equivalents * len(archs))) if self.equivalents > 0 else len(archs) + 1
        pool: dict[str, Architecture] = {}

        def offer(a: Architecture) -> None:
            if a.key in seen or a.key in pool:
                return
            if classes.get(canon(self.space, a).key, 0) >= cap:
                return
            pool[a.key] = a

        for a in parents:  # the simplest build of each parent's function (its dead parts dropped)
            offer(canon(self.space, a))
        size = self.candidates * values.shape[1]  # a front has more stretches to fill than a single best
        n_mut = size // 3
        for i in range(n_mut):
            offer(self.space.mutate(parents[i % len(parents)], self._rng, 1 + int(self._rng.integers(2))))
        if len(parents) > 1:  # uniform crossover of two front members: recombines what makes each good
            for _ in range(n_mut):
                pa, pb = self._rng.choice(len(parents), size=2, replace=False)
                va, vb = parents[int(pa)].as_dict(), parents[int(pb)].as_dict()
                take = self._rng.random(len(va)) < 0.5
                child = {k: (vb[k] if t else v) for (k, v), t in zip(va.items(), take, strict=True)}
                if self.space.satisfies(child):
                    offer(self.space.make(child, check=False))
        for _ in range(4 * size):
            if len(pool) >= size:
                break
            offer(self.space.sample(self._rng))
        return list(pool.values())

    def _rank_front(self, archs: list[Architecture], values: np.ndarray, directions: list[str],
                    signs: np.ndarray, feasible: np.ndarray) -> list[Architecture]:  # fmt: skip
        cands = self._front_pool(archs, values, directions, feasible)
        if not cands:
            return []
        means, spreads = self._predict(archs, values, [*cands, *archs], signs)
        fitted = means[len(cands) :]  # the predictors' own view of the evaluated architectures
        means, spreads = means[: len(cands)], spreads[: len(cands)]
        self._predicted.update({c.key: tuple(float(v) for v in means[i] * signs) for i, c in enumerate(cands)})
        optimistic = means + self.kappa * spreads
        score = values * signs
        ok = np.all(np.isfinite(score), axis=1) & (feasible if feasible.any() else True)
        # gains are measured against the front as the predictors see it: a candidate like an evaluated
        # architecture is predicted with the same bias (shrunk towards the mean where data is thin) and must
        # beat that, not the measurement, to count as an improvement
        front = fitted[ok]
        front = front[non_dominated_mask(front, ["maximize"] * front.shape[1])]
        lo = np.minimum(score[ok].min(axis=0), fitted[ok].min(axis=0))
        hi = np.maximum(score[ok].max(axis=0), fitted[ok].max(axis=0))
        span = np.where(hi > lo, hi - lo, 1.0)
        ref = lo - 0.1 * span  # a little beyond the worst evaluated point, so the front's ends count
        n_pick = min(len(cands), max(1, int(self.refit_fraction * len(archs))) + 2)
        return [cands[i] for i in greedy_front_order(optimistic, front, ref, span, n_pick, self.explore, len(archs))]

    def _space_size(self) -> int:
        try:
            return self.space.size()
        except NasplatError:
            return 1 << 62


@register("sampler", "guided")
def _make_guided(seed: int, n_objectives: int, space: SearchSpace, **options: Any) -> GuidedSampler:
    return GuidedSampler(space, seed=seed, **options)


setattr(_make_guided, OPTIONS_OF, lambda: GuidedSampler)
