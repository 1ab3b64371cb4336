"""The ``combined`` estimator: inherited accuracy and a training-free score as one estimate with an uncertainty,
calibrated on a few architectures trained stand-alone when the run grants the budget.

Two signals per architecture: ``s``, the task's primary metric (``accuracy``) with weights inherited from the
trained supernet (the ``supernet`` estimator), and ``z``, the zero-cost score (the ``zero_cost`` estimator's
AZ-NAS-style combination). Their scales differ and neither is an accuracy one can trust, so both are put on one
scale first: a *reference sample* (``reference`` distinct seeded draws of the space) is scored once, and each
signal becomes a normal score ``q = Φ⁻¹(percentile in the reference)`` (mid-rank percentiles, so one
architecture's score depends only on it and the reference, never on what else is evaluated).

Without anchors (``anchors=0``), the estimate is the prior combination ``c = weight·q_s + (1 - weight)·q_z``,
rescaled to the reference's inherited metric (its mean plus its standard deviation times ``c`` over ``c``'s
spread in the reference), and ``<primary>_std`` is half the two signals' disagreement ``|q_s - q_z|`` in those
units: a ranking, not a calibrated accuracy (provenance ``calibrated: no``).

With ``anchors=k``, ``k`` architectures of the reference, spread evenly over the prior combination's ranks, are
trained stand-alone for ``anchor_steps`` steps each (:func:`nasplat.train.train_standalone`, fresh seeded
weights), and a Bayesian linear model ``stand-alone metric ~ 1 + q_s + q_z`` is fitted to them, its slopes'
prior centred on the prior combination (so a handful of anchors re-weighs the signals only as far as they show
it). The estimate is the model's predictive mean, in stand-alone units, and ``<primary>_std`` its predictive
standard deviation (noise plus the uncertainty of the weights): calibrated on what was trained. How well each
signal ranked the anchors (Kendall tau) is in :meth:`CombinedEstimator.summary` and the provenance.

A task whose primary metric is minimised (an error) is handled by combining goodness (the metric negated) and
negating the estimate back. Metrics: ``<primary>`` (the estimate, in the primary metric's direction), ``<primary>_std``, ``inherited_<m>`` for every task metric,
the task's other metrics as inherited (``loss``...), and ``zero_cost``.

The reference's scores and the anchors' results are measured once per estimator; with ``cache_dir`` (a search
passes ``<run_dir>/estimator``) they are kept in a JSON file named by everything they depend on, written
atomically under a file lock, so Ray actors and resumed runs measure them once between them.

Options: ``reference`` (32), ``weight`` (0.5, the prior weight of the inherited signal), ``anchors`` (0),
``anchor_steps`` (200), ``anchor_batch_size`` (64), ``anchor_lr`` (0.05), ``zero_cost`` (options of the
``zero_cost`` estimator; default: its four AZ components on the run's dataset), ``eval_batch_size``,
``calib_batches`` and ``seed`` as for ``supernet``; ``checkpoint``, ``data`` and ``cache_dir`` come from the run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat import registry, seeds
from nasplat.errors import NasplatError
from nasplat.measure import Estimator, rank_percentiles
from nasplat.seeds import derive_seed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nasplat.datasets import DataSpec
    from nasplat.space import Architecture, SearchSpace

CACHE_FORMAT = 1
_NORMAL = NormalDist()


def normal_scores(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``Φ⁻¹`` of each value's mid-rank percentile in ``reference`` (finite: percentiles lie in (0, 1))."""
    return np.array([_NORMAL.inv_cdf(float(p)) for p in rank_percentiles(values, reference)], dtype=np.float64)


def _kendall(a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy.stats import kendalltau

    if len(a) < 3:
        return None
    tau = kendalltau(a, b).statistic
    return None if tau is None or not math.isfinite(float(tau)) else float(tau)


class LinearCalibration:
    """Bayesian linear regression of standardised targets on features, slopes' prior ``N(prior, I)``, a flat prior
    on the intercept, the noise variance set from the residuals (floored); predictive mean and deviation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, prior: np.ndarray, *, noise_floor: float = 0.05) -> None:
        self.mean_y = float(np.mean(y))
        spread = float(np.std(y))
        self.scale_y = spread if spread > 1e-12 else 1.0
        t = (np.asarray(y, dtype=np.float64) - self.mean_y) / self.scale_y
        design = np.column_stack([np.ones(len(x)), x])
        precision0 = np.diag([1e-6, *([1.0] * x.shape[1])])
        mean0 = np.concatenate([[0.0], prior])
        noise = 0.5
        for _ in range(5):  # a few rounds of setting the noise from the residuals of the current fit
            a = design.T @ design / noise + precision0
            self.cov = np.linalg.inv(a)
            self.coef = self.cov @ (design.T @ t / noise + precision0 @ mean0)
            resid = t - design @ self.coef
            noise = max(float(np.mean(resid**2)) * len(t) / max(len(t) - 1, 1), noise_floor)
        self.noise = noise

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        design = np.column_stack([np.ones(len(x)), x])
        mean = design @ self.coef
        var = self.noise + np.einsum("ij,jk,ik->i", design, self.cov, design)
        return self.mean_y + self.scale_y * mean, self.scale_y * np.sqrt(var)


@registry.register("estimator", "combined")
class CombinedEstimator(Estimator):
    """Inherited accuracy and the zero-cost score, combined and (with anchors) calibrated (module docstring)."""

    name: ClassVar[str] = "combined"
    needs_supernet: ClassVar[bool] = True

    def __init__(
        self,
        space: SearchSpace,
        checkpoint: str | Path,
        data: DataSpec,
        *,
        reference: int = 32,
        weight: float = 0.5,
        anchors: int = 0,
        anchor_steps: int = 200,
        anchor_batch_size: int = 64,
        anchor_lr: float = 0.05,
        zero_cost: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        eval_batch_size: int = 256,
        calib_batches: int = 10,
        seed: int = 0,
    ) -> None:
        from nasplat.train import StandaloneBudget

        if reference < 4:
            raise NasplatError(f"estimator 'combined': reference must be >= 4 architectures, got {reference}")
        if not 0.0 <= weight <= 1.0:
            raise NasplatError(f"estimator 'combined': weight must be within [0, 1], got {weight}")
        if not 0 <= anchors <= reference:
            raise NasplatError(
                f"estimator 'combined': anchors must be within [0, reference={reference}], got {anchors}"
            )
        if zero_cost is not None and not isinstance(zero_cost, Mapping):
            raise NasplatError("estimator 'combined': zero_cost must be a mapping of the zero_cost estimator's options")
        self.space = space
        self.task = space.family.task(space)
        self.primary = self.task.primary
        #: +1 when the primary metric is maximised, -1 when minimised (an error): signals are combined as goodness
        self.sign = 1.0 if self.task.metrics.get(self.primary, "maximize") == "maximize" else -1.0
        self.reference_size, self.weight, self.n_anchors, self.seed = int(reference), float(weight), int(anchors), seed
        self.budget = StandaloneBudget(steps=anchor_steps, batch_size=anchor_batch_size, lr=anchor_lr)
        self.data = data
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.inherited = registry.build(
            "estimator",
            "supernet",
            space,
            options={
                "checkpoint": checkpoint,
                "data": data,
                "eval_batch_size": eval_batch_size,
                "calib_batches": calib_batches,
                "seed": seed,
            },
        )
        zc_options: dict[str, Any] = {"proxies": [], "seed": seed, "data": _zero_cost_data(space, data)}
        zc_options.update(zero_cost or {})
        registry.check_options("estimator", "zero_cost", zc_options, fixed=("space",))
        self.zero_cost = registry.build("estimator", "zero_cost", space, options=zc_options)
        self._state: dict[str, Any] | None = None
        self._calibration: LinearCalibration | None = None

    # --- what it returns -------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, str]:
        return _metrics(self.task.metrics, self.primary)

    @classmethod
    def declared_metrics(cls, space: SearchSpace, options: Mapping[str, Any]) -> dict[str, str] | None:
        task = space.family.task(space)
        return _metrics(task.metrics, task.primary)

    def provenance(self) -> dict[str, str]:
        state = self.state()
        summary = self.summary()
        return {
            **self.inherited.provenance(),
            "estimator": self.name,
            "zero_cost": json.dumps(self.zero_cost.provenance(), sort_keys=True),
            "reference": str(self.reference_size),
            "weight": str(self.weight),
            "anchors": str(len(state["anchors"])),
            "anchor_budget": json.dumps(_budget_json(self.budget), sort_keys=True),
            "calibrated": "yes" if state["anchors"] else "no",
            "anchor_tau": json.dumps({k: v for k, v in summary.items() if k.endswith("_tau")}, sort_keys=True),
        }

    def summary(self) -> dict[str, Any]:
        """How each signal ranked the anchors (Kendall tau against their stand-alone metric, in goodness terms: 1
        is a perfect ranking whatever the metric's direction), and the fit."""
        state = self.state()
        anchors = state["anchors"]
        out: dict[str, Any] = {"anchors": len(anchors), "reference": len(state["keys"])}
        if not anchors:
            return out
        out["anchor_cpu_s"] = float(sum(a.get("cpu_s", 0.0) for a in anchors))
        idx = [state["keys"].index(a["key"]) for a in anchors]
        y = [self.sign * a["metric"] for a in anchors]
        q_s, q_z = self._reference_scores()
        out["inherited_tau"] = _kendall([self.sign * state["inherited"][i] for i in idx], y)
        out["zero_cost_tau"] = _kendall([state["zero_cost"][i] for i in idx], y)
        prior = self.weight * q_s + (1 - self.weight) * q_z
        out["prior_tau"] = _kendall(prior[idx].tolist(), y)
        cal = self.calibration()
        if cal is not None:
            out["coefficients"] = [float(c) for c in cal.coef]
            out["noise_std"] = float(math.sqrt(cal.noise) * cal.scale_y)
        return out

    # --- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        if not archs:
            return []
        state = self.state()
        inherited = self.inherited.evaluate(archs)
        zc = np.array([m["zero_cost"] for m in self.zero_cost.evaluate(archs)], dtype=np.float64)
        s = self.sign * np.array([m[self.primary] for m in inherited], dtype=np.float64)
        q_s = normal_scores(s, self.sign * np.array(state["inherited"]))
        q_z = normal_scores(zc, np.array(state["zero_cost"]))
        good, std = self._combine(q_s, q_z)
        mean = self.sign * good
        out = []
        for i, m in enumerate(inherited):
            row = {k: float(v) for k, v in m.items() if k != self.primary}
            row.update({f"inherited_{k}": float(v) for k, v in m.items()})
            row.update({self.primary: float(mean[i]), f"{self.primary}_std": float(std[i]), "zero_cost": float(zc[i])})
            out.append(row)
        return out

    def _combine(self, q_s: np.ndarray, q_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cal = self.calibration()
        if cal is not None:
            return cal.predict(np.column_stack([q_s, q_z]))
        state = self.state()
        ref = self.sign * np.array(state["inherited"], dtype=np.float64)
        rq_s, rq_z = self._reference_scores()
        spread = float(np.std(self.weight * rq_s + (1 - self.weight) * rq_z)) or 1.0
        c = (self.weight * q_s + (1 - self.weight) * q_z) / spread
        scale = float(np.std(ref)) or 1.0
        return float(np.mean(ref)) + scale * c, scale * np.abs(q_s - q_z) / 2

    def _reference_scores(self) -> tuple[np.ndarray, np.ndarray]:
        state = self.state()
        s, z = self.sign * np.array(state["inherited"]), np.array(state["zero_cost"])
        return normal_scores(s, s), normal_scores(z, z)

    def calibration(self) -> LinearCalibration | None:
        """The fit to the anchors (None without anchors)."""
        state = self.state()
        if not state["anchors"]:
            return None
        if self._calibration is None:
            q_s, q_z = self._reference_scores()
            idx = [state["keys"].index(a["key"]) for a in state["anchors"]]
            x = np.column_stack([q_s[idx], q_z[idx]])
            y = self.sign * np.array([a["metric"] for a in state["anchors"]], dtype=np.float64)
            spread = float(np.std(self.weight * q_s + (1 - self.weight) * q_z)) or 1.0
            prior = np.array([self.weight, 1 - self.weight]) / spread
            self._calibration = LinearCalibration(x, y, prior)
        return self._calibration

    # --- the reference and the anchors, measured once --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The reference sample's keys and scores and the anchors' results (measured, or read from the cache)."""
        if self._state is None:
            path = self._cache_path()
            if path is None:
                self._state = self._measure()
            else:
                with _locked(path):
                    kept = _read_cache(path)
                    if kept is None:  # none yet, or damaged: measured (again) and written in one piece
                        kept = self._measure()
                        _write_atomically(path, kept)
                    self._state = kept
        return self._state

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        what = {
            "format": CACHE_FORMAT,
            "space": self.space.hash,
            "inherited": self.inherited.provenance(),
            "zero_cost": self.zero_cost.provenance(),
            "reference": self.reference_size,
            "weight": self.weight,
            "anchors": self.n_anchors,
            "budget": _budget_json(self.budget),
            "seed": self.seed,
        }
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.cache_dir / f"combined-{digest}.json"

    def _reference_archs(self) -> list[Architecture]:
        rng = np.random.default_rng(derive_seed(self.seed, seeds.ANCHOR_PICK))
        archs: dict[str, Architecture] = {}
        for _ in range(50 * self.reference_size):
            if len(archs) >= self.reference_size:
                break
            a = self.space.sample(rng)
            archs.setdefault(a.key, a)
        if len(archs) < 4:
            raise NasplatError(
                f"estimator 'combined': space '{self.space.name}' has fewer than 4 distinct architectures"
            )
        return list(archs.values())

    def _measure(self) -> dict[str, Any]:
        archs = self._reference_archs()
        inherited = [m[self.primary] for m in self.inherited.evaluate(archs)]
        zc = [m["zero_cost"] for m in self.zero_cost.evaluate(archs)]
        state: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "keys": [a.key for a in archs],
            "inherited": [float(v) for v in inherited],
            "zero_cost": [float(v) for v in zc],
            "anchors": [],
        }
        self._state = state
        if self.n_anchors:
            q_s, q_z = self._reference_scores()
            prior = self.weight * q_s + (1 - self.weight) * q_z
            order = np.argsort(-prior, kind="stable")
            picks = sorted({int(order[round(j)]) for j in np.linspace(0, len(archs) - 1, self.n_anchors)})
            state["anchors"] = [self._train_anchor(archs[i], n) for n, i in enumerate(picks)]
        return state

    def _train_anchor(self, arch: Architecture, n: int) -> dict[str, Any]:
        from nasplat.train import train_standalone

        supernet = self.space.family.build_supernet(self.space, seed=derive_seed(self.seed, seeds.ANCHOR_INIT, n))
        model = supernet.extract(arch)
        del supernet
        train, val = self.inherited.train_data, self.inherited.val_data
        t0 = time.process_time()
        metrics = train_standalone(
            model, self.task, train, val, self.budget, seed=derive_seed(self.seed, seeds.ANCHOR_DATA, n)
        )
        cpu_s = time.process_time() - t0
        return {"key": arch.key, "metric": float(metrics[self.primary]), "metrics": metrics, "cpu_s": cpu_s}


def _metrics(task_metrics: Mapping[str, str], primary: str) -> dict[str, str]:
    out = {primary: task_metrics.get(primary, "maximize"), f"{primary}_std": "minimize"}
    out.update({k: v for k, v in task_metrics.items() if k != primary})
    out.update({f"inherited_{k}": v for k, v in task_metrics.items()})
    out["zero_cost"] = "maximize"
    return out


def _zero_cost_data(space: SearchSpace, data: DataSpec) -> str:
    """The run's dataset when it is registered (the zero-cost batch comes from its training split), else noise."""
    return data.name if data.name in registry.available("dataset") else "noise"


def _budget_json(budget: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(budget)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process measuring the same reference: wait for its file
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_cache(path: Path) -> dict[str, Any] | None:
    from nasplat.files import read_json_mapping

    if not path.exists():
        return None
    try:
        state = read_json_mapping(path)
    except NasplatError:
        return None  # damaged: measured again and replaced
    if state.get("format") != CACHE_FORMAT or not isinstance(state.get("keys"), list):
        return None
    return state


def _write_atomically(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)
