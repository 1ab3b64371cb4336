"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

ASHA stops a trial at a rung (``grace_period * reduction_factor**k`` units of ``time_attr``, below ``max_t``)
when its one metric is not in the top ``1/reduction_factor`` of the results recorded at that rung so far.
:class:`MultiObjectiveASHA` keeps that rule, and the asynchrony (a trial is judged when it arrives, against
what the rung holds then), but orders a rung's results on several objectives, as MO-ASHA does (Schmucker et
al., 2021, "Multi-objective Asynchronous Successive Halving"): by non-domination rank first, then, within
one rank, by crowding distance (NSGA-II's tie-break: the ends of a front and its sparse stretches go first;
the paper also offers an epsilon-net, which it finds close to this). A trial carries on when fewer than
``n / reduction_factor`` of the rung's ``n`` results (its own included) come strictly before it; ties go to
the newcomer, as ASHA's ``>=`` cutoff does. A trial on the rung's front is therefore stopped only when that
front alone holds more than ``n / reduction_factor`` results and it sits in a crowded part of it; a
dominated one is stopped as soon as enough results rank ahead of it.

Objectives are metrics in the reported results (``objectives={"accuracy": "max", "macs": "min"}``). One
that is fixed for a trial (a cost measured once, like MACs or latency) may instead live in the trial's
configuration: ``static={"macs": "macs"}`` names, per objective, the configuration key (``a/b`` for a nested
one) that holds its value. A result without some objective is not judged (the trial carries on), as ASHA
does with a result lacking its metric.

Groups (``group="<config key>"``): trials with the same value of that key (hyper-parameter samples of one
architecture, say) are one candidate at each rung. A trial is stopped when

1. within its group, its result is not in the top ``1/reduction_factor`` of the group's results at the rung
   (samples of one architecture compete with each other, on the same objectives), or
2. across groups, its group's point is not in the top ``1/reduction_factor`` of the groups at the rung: a
   group's point is the best value of each objective over its trials' results at the rung (what the
   group has shown it can reach; for an architecture with fixed costs it is its best sample's result), so a
   group whose best is dominated by enough others has every trial stopped at that rung.

Without ``group`` every trial is its own group (plain MO-ASHA). ``nasplat finetune --scheduler mo-asha``
groups by finalist, so compute goes to the architectures that can still reach the stand-alone front, while
each architecture keeps its results up to the rung where it was stopped.

Restore: Tune does not keep a scheduler's state across ``Tuner.restore``; a trial that comes back with
results (``on_trial_add`` of a trial that has reported) has its recorded history replayed into the rungs
(from the trial's ``result.json``, else its last result), so decisions after a resume see the results from
before it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nasplat.errors import NasplatError

_DIRECTIONS = {"max": -1.0, "maximize": -1.0, "min": 1.0, "minimize": 1.0}


def _ranks(points: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row of a minimisation table (0 = not dominated; NaN rows last)."""
    from nasplat.search import pareto_ranks

    return np.asarray(pareto_ranks(points, ["minimize"] * points.shape[1]))


def _crowding(points: np.ndarray) -> np.ndarray:
    from nasplat.search import crowding

    return np.asarray(crowding(points))


def order_position(points: np.ndarray, target: int) -> int:
    """How many rows come strictly before row ``target`` (minimisation form): a lower non-domination rank, or
    the same rank and a larger crowding distance within that rank."""
    if len(points) <= 1:
        return 0
    ranks = _ranks(points)
    mine = ranks[target]
    before = int(np.sum(ranks < mine))
    same = np.flatnonzero(ranks == mine)
    if len(same) > 1:
        pts = points[same]
        if np.all(np.isfinite(pts)):
            dist = _crowding(pts)
            before += int(np.sum(dist > dist[int(np.flatnonzero(same == target)[0])]))
    return before


def kept(points: np.ndarray, target: int, reduction_factor: float) -> bool:
    """Whether row ``target`` is within the top ``1/reduction_factor`` of ``points`` (ties kept)."""
    return order_position(points, target) < len(points) / reduction_factor


class _Rung:
    def __init__(self, milestone: float) -> None:
        self.milestone = milestone
        self.points: dict[str, np.ndarray] = {}  # trial id -> objectives (minimisation form)
        self.groups: dict[str, Any] = {}  # trial id -> group

    def group_points(self) -> tuple[list[Any], np.ndarray]:
        """Each group's point: its best value of every objective over its trials' results at the rung."""
        by_group: dict[Any, list[np.ndarray]] = {}
        for tid, p in self.points.items():
            by_group.setdefault(self.groups[tid], []).append(p)
        names = list(by_group)
        return names, np.array([np.fmin.reduce(np.vstack(by_group[g]), axis=0) for g in names])


class MultiObjectiveASHA(FIFOScheduler):  # type: ignore[misc]
    """Asynchronous successive halving on several objectives (see the module doc for the rule).

    Args:
        objectives: metric name -> ``"max"`` or ``"min"`` (``"maximize"``/``"minimize"`` too).
        time_attr: the result's progress counter the rungs are measured in.
        max_t: the most ``time_attr`` a trial runs; it is stopped there.
        grace_period: the first rung; no trial is stopped before it.
        reduction_factor: ``eta``: rungs are ``grace_period * eta**k`` and the top ``1/eta`` carry on.
        group: configuration key whose value groups trials (one candidate per value); ``None``: none.
        static: objective -> configuration key (``a/b`` nested) holding a value fixed for the trial.
    """

    _supports_buffered_results = False  # every result must be seen, or a rung could be skipped

    def __init__(
        self,
        objectives: Mapping[str, str],
        *,
        time_attr: str = "training_iteration",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        group: str | None = None,
        static: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not objectives:
            raise NasplatError("MultiObjectiveASHA: objectives must name at least one metric")
        bad = {k: v for k, v in objectives.items() if str(v).lower() not in _DIRECTIONS}
        if bad:
            name, value = next(iter(bad.items()))
            raise NasplatError(
                f"MultiObjectiveASHA: objective '{name}' has direction {value!r}; expected 'max' or 'min'"
            )
        unknown = sorted(set(static or {}) - set(objectives))
        if unknown:
            raise NasplatError(
                f"MultiObjectiveASHA: static names '{unknown[0]}', which is not an objective ({sorted(objectives)})"
            )
        if not max_t > 0 or not grace_period > 0 or grace_period > max_t:
            raise NasplatError(
                f"MultiObjectiveASHA: need 0 < grace_period <= max_t, got grace_period {grace_period}, max_t {max_t}"
            )
        if not reduction_factor > 1:
            raise NasplatError(f"MultiObjectiveASHA: reduction_factor must exceed 1, got {reduction_factor}")
        self.objectives = {str(k): "max" if _DIRECTIONS[str(v).lower()] < 0 else "min" for k, v in objectives.items()}
        self._signs = np.array([_DIRECTIONS[d] for d in self.objectives.values()])
        self.time_attr = time_attr
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = float(reduction_factor)
        self.group = group
        self.static = dict(static or {})
        milestones = []
        m = float(grace_period)
        while m < max_t:
            milestones.append(m)
            m *= self.reduction_factor
        self._rungs = [_Rung(m) for m in milestones]
        self._level: dict[str, int] = {}  # trial id -> index of the highest rung it has passed (-1: none)
        self._trial_group: dict[str, Any] = {}
        self._stopped: dict[str, str] = {}  # trial id -> "within" or "across"

    # -------------------------------------------------------------------------------------------- Tune hooks

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives are this scheduler's own; TuneConfig's metric/mode serve the result grid

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if trial.trial_id in self._level:
            return
        self._level[trial.trial_id] = -1
        self._trial_group[trial.trial_id] = self._group_of(trial)
        for result in self._history(trial):  # a trial that comes back with a restored experiment
            self._advance(trial, result, decide=False)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self.on_trial_add(tune_controller, trial)
        if self.time_attr in result and float(result[self.time_attr]) >= self.max_t:
            self._advance(trial, result, decide=False)
            return str(TrialScheduler.STOP)
        return self._advance(trial, result, decide=True)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self.on_trial_add(tune_controller, trial)
        if result:
            self._advance(trial, result, decide=False)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._level.pop(trial.trial_id, None)  # its recorded results stay: they are evidence for the rungs

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        objs = ", ".join(f"{k} ({v})" for k, v in self.objectives.items())
        within = sum(v == "within" for v in self._stopped.values())
        rungs = "; ".join(f"rung {r.milestone:g}: {len(r.points)} results" for r in self._rungs) or "no rungs"
        grouped = f", grouped by '{self.group}'" if self.group else ""
        return (
            f"MO-ASHA on {objs}{grouped}: {len(self._stopped)} trials stopped early "
            f"({len(self._stopped) - within} dominated across groups, {within} within their group); {rungs}"
        )

    # ------------------------------------------------------------------------------------------ decisions

    @property
    def milestones(self) -> list[float]:
        return [r.milestone for r in self._rungs]

    def stopped(self) -> dict[str, str]:
        """Trial id -> why it was stopped early (``"within"`` its group or ``"across"`` groups)."""
        return dict(self._stopped)

    def _advance(self, trial: Any, result: Mapping[str, Any], decide: bool) -> str:
        tid = trial.trial_id
        if self.time_attr not in result:
            return str(TrialScheduler.CONTINUE)
        t = float(result[self.time_attr])
        level = self._level.get(tid, -1)
        reached = [k for k, r in enumerate(self._rungs) if r.milestone <= t and k > level]
        if not reached:
            return str(TrialScheduler.CONTINUE)
        point = self._point(trial, result)
        if point is None:
            return str(TrialScheduler.CONTINUE)
        k = reached[-1]
        self._level[tid] = k
        rung = self._rungs[k]
        rung.points[tid] = point
        rung.groups[tid] = self._trial_group.get(tid, tid)
        if not decide:
            return str(TrialScheduler.CONTINUE)
        why = self._verdict(rung, tid)
        if why is None:
            return str(TrialScheduler.CONTINUE)
        self._stopped[tid] = why
        return str(TrialScheduler.STOP)

    def _verdict(self, rung: _Rung, tid: str) -> str | None:
        """None when the trial carries on past ``rung``, else why it stops."""
        group = rung.groups[tid]
        mates = [t for t, g in rung.groups.items() if g == group]
        if len(mates) > 1:
            points = np.vstack([rung.points[t] for t in mates])
            if not kept(points, mates.index(tid), self.reduction_factor):
                return "within"
        names, points = rung.group_points()
        if len(names) > 1 and not kept(points, names.index(group), self.reduction_factor):
            return "across"
        return None

    def _point(self, trial: Any, result: Mapping[str, Any]) -> np.ndarray | None:
        values = []
        for name in self.objectives:
            if name in self.static:
                value = _lookup(trial.config, self.static[name])
                if value is None:
                    raise NasplatError(
                        f"MultiObjectiveASHA: trial {trial.trial_id}'s config has no key '{self.static[name]}' "
                        f"(static value of objective '{name}')"
                    )
            elif name in result:
                value = result[name]
            else:
                return None
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                return None
        point = np.array(values) * self._signs
        return np.where(np.isnan(point), np.inf, point)  # a NaN objective counts as the worst value

    def _group_of(self, trial: Any) -> Any:
        if self.group is None:
            return trial.trial_id
        value = _lookup(trial.config, self.group)
        if value is None:
            raise NasplatError(f"MultiObjectiveASHA: trial {trial.trial_id}'s config has no group key '{self.group}'")
        try:
            hash(value)
        except TypeError:
            return json.dumps(value, sort_keys=True, default=str)
        return value

    def _history(self, trial: Any) -> list[Mapping[str, Any]]:
        """The results a trial reported before it was added here (only a restored trial has any)."""
        meta = getattr(trial, "run_metadata", None)
        last = getattr(meta, "last_result", None) or {}
        if self.time_attr not in last:
            return []
        path = getattr(trial, "path", None)
        results: list[Mapping[str, Any]] = []
        if path:
            try:
                lines = (Path(path) / "result.json").read_text().splitlines()
                results = [json.loads(line) for line in lines if line.strip()]
            except (OSError, ValueError):
                results = []
        done = float(last[self.time_attr])
        results = [r for r in results if self.time_attr in r and float(r[self.time_attr]) <= done]
        return results or [last]


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
