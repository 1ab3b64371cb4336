"""Learned latency model: per-layer features, pre-trained on other devices, adapted from a few measurements.

A network's latency on most devices is close to a sum over its layers plus a fixed cost, so the model is linear
in **per-layer features**: for each distinct layer configuration (:attr:`~nasplat.measure.LayerRecord.config_key`)
of a space, how many times the network uses it (:func:`layer_features`). Its coefficients are a *learned
lookup table* (milliseconds per use of each layer configuration) plus an intercept (the per-network overhead).

:class:`FewShotLatencyModel` fits those coefficients robustly (Cauchy loss on the *relative* error, so a few
disturbed measurements do not pull the fit; iteratively reweighted least squares) with a ridge penalty that
pulls them towards a **prior**:

- ``pretrain(X_prior, P)``: for each prior device (a column of ``P``, latencies in ms, NaN where unknown), fit
  its own coefficients on every row it has. This is the ``--prior`` table of ``nasplat predictor fit``
  (``../shared/data/nb201/latency.csv``: one column per device), featurized in the *target* space (the rows are
  architecture strings, so a prior measured on NAS-Bench-201's CIFAR network serves a smaller variant of the
  same cells too).
- ``fit(X, y)``: with a prior, first the non-negative mix of prior devices that best explains the few target
  measurements, then the per-layer coefficients shrunk towards that mix; without one, towards zero. The
  penalty's strength is chosen by leave-one-out on the few measurements.

:func:`covering_design` picks the networks to measure on a new device from the prior devices' latencies alone
(seeded maximin), so the few measurements cover the space without looking at the new device.

Everything is numpy arrays in and out (``predict`` returns ms); ``to_dict``/``from_dict`` give a JSON-able
form for saving. The predictor commands (``nasplat predictor fit --prior``) wrap this class; see the report in
``docs/bench-cost-models.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import Predictor, check_space, check_training_data, read_manifest, space_record, write_manifest
from nasplat.registry import register

if TYPE_CHECKING:
    from nasplat.measure import LayerRecord
    from nasplat.space import Architecture, SearchSpace

ConfigKey = tuple[object, ...]


# ------------------------------------------------------------------------------------------------ features
@dataclass
class LayerVocabulary:
    """The layer configurations features are counted over (one column each), in a fixed order."""

    keys: list[ConfigKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {k: i for i, k in enumerate(self.keys)}

    def index(self, key: ConfigKey) -> int | None:
        return self._index.get(key)

    def add(self, key: ConfigKey) -> int:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.keys)
            self.keys.append(key)
        return i

    def names(self) -> list[str]:
        """Short readable column names (op, channels, sizes, kernel, stride)."""
        out = []
        for key in self.keys:
            d: dict[str, Any] = dict(key)  # type: ignore[arg-type]
            (ih, iw), (oh, ow) = d["in_hw"], d["out_hw"]
            out.append(
                f"{d['op']}:{d['in_channels']}->{d['out_channels']}@{ih}x{iw}->{oh}x{ow}"
                f":k{d['kernel']}s{d['stride']}:{d['weight_format']}/{d['act_format']}"
            )
        return out


def layer_features(
    records_per_network: Iterable[Sequence[LayerRecord]], vocabulary: LayerVocabulary | None = None
) -> tuple[np.ndarray, LayerVocabulary]:
    """Count matrix (networks x layer configurations) and its vocabulary.

    With ``vocabulary=None`` a new one is grown from these networks; with a given one, configurations it does
    not hold are refused (a model cannot price a layer it has never seen).
    """
    grow = vocabulary is None
    vocab = LayerVocabulary() if vocabulary is None else vocabulary
    rows: list[dict[int, int]] = []
    key_of: dict[int, tuple[LayerRecord, ConfigKey]] = {}  # records shared between networks are keyed once
    for records in records_per_network:
        counts: dict[int, int] = {}
        for rec in records:
            hit = key_of.get(id(rec))
            if hit is None:
                hit = key_of[id(rec)] = (rec, rec.config_key)
            key = hit[1]
            i = vocab.add(key) if grow else vocab.index(key)
            if i is None:
                raise NasplatError(
                    f"layer '{rec.name}' ({rec.op}, {rec.in_channels}->{rec.out_channels} channels, "
                    f"{rec.in_hw[0]}x{rec.in_hw[1]}) is not among the layer configurations the model was fitted on"
                )
            counts[i] = counts.get(i, 0) + 1
        rows.append(counts)
    x = np.zeros((len(rows), len(vocab.keys)))
    for r, counts in enumerate(rows):
        for i, c in counts.items():
            x[r, i] = c
    return x, vocab


def space_features(
    space: SearchSpace, archs: Sequence[Architecture], vocabulary: LayerVocabulary | None = None
) -> tuple[np.ndarray, LayerVocabulary]:
    """:func:`layer_features` of architectures of ``space`` (through ``space.family.layers``)."""
    return layer_features((space.family.layers(space, a) for a in archs), vocabulary)


# ------------------------------------------------------------------------------------------------ fitting
_ANNEAL: tuple[float, ...] = ()


def _irls(
    a: np.ndarray,
    y: np.ndarray,
    *,
    w0: np.ndarray,
    penalty: np.ndarray,
    f_scale: float,
    iters: int,
) -> np.ndarray:
    """argmin_w  sum_i cauchy((a_i.w)/y_i - 1; f_scale) + sum_j penalty_j (w_j - w0_j)^2, by reweighting.

    Starts from the penalised least-squares fit of the *absolute* errors (relative errors would hand the start
    to the smallest measurements, which are the ones most often wrong), then narrows the Cauchy scale from
    0.5 down to ``f_scale`` (graduated non-convexity, so the fit settles on the bulk of the measurements
    rather than on whichever subset it started near).
    """
    ar = a / y[:, None]  # relative residual r = ar.w - 1
    p = np.diag(penalty)
    rhs0 = penalty * w0
    ref = float(np.median(y))
    w = np.linalg.solve(a.T @ a / ref**2 + p, a.T @ y / ref**2 + rhs0) if len(y) else w0
    scales = [f for f in _ANNEAL if f > f_scale] + [f_scale]
    per_scale = max(2, iters // len(scales))
    for f in scales:
        for _ in range(per_scale):
            r = ar @ w - 1.0
            weights = 1.0 / (1.0 + (r / f) ** 2)
            aw = ar * weights[:, None]
            lhs = ar.T @ aw + p
            rhs = aw.sum(axis=0) + rhs0
            try:
                w_new = np.linalg.solve(lhs, rhs)
            except np.linalg.LinAlgError:
                w_new = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
            done = np.max(np.abs(w_new - w)) <= 1e-9 * (1.0 + np.max(np.abs(w_new)))
            w = w_new
            if done:
                break
    return w


def _cauchy(r: np.ndarray, f_scale: float) -> float:
    return float(np.mean(np.log1p((r / f_scale) ** 2)))


@dataclass
class FewShotLatencyModel:
    """Latency (ms) = intercept + per-layer features · coefficients, fitted robustly towards a prior.

    ``f_scale``: the relative error beyond which a measurement counts as disturbed (Cauchy loss scale).
    ``lambdas``: candidate penalty strengths, chosen by leave-one-out on the fitting rows (5 interleaved folds
    beyond ``loo_max`` rows).
    """

    f_scale: float = 0.03
    lambdas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    iters: int = 40
    prior_lambda: float = 1e-6
    loo_max: int = 40
    # learned state
    center: np.ndarray | None = None  # feature means over the reference rows
    projection: np.ndarray | None = None  # features -> whitened directions the reference rows span
    basis: np.ndarray | None = None  # (1 + directions) x prior devices
    mix: np.ndarray | None = None  # prior devices' weights for the fitted device
    coef: np.ndarray | None = None  # (1 + directions)
    chosen_lambda: float | None = None
    prior_names: list[str] = field(default_factory=list)

    # -- helpers
    def set_columns(self, reference: np.ndarray) -> None:
        """Find the directions in which networks of the space differ, from ``reference`` feature rows.

        Networks of one space often use several layer configurations in lockstep (the cell family repeats one
        cell in every stage, and the stem and head are always there), so the per-layer counts span few
        directions: NAS-Bench-201's 30 layer configurations span 5 beyond the constant. The model works in
        those directions, centred and whitened over the reference rows, so the penalty treats them alike.
        Called by :meth:`pretrain` (prior rows) and :meth:`fit` (its ``reference`` rows, default its own).
        """
        ref = np.asarray(reference, float)
        if ref.ndim != 2 or len(ref) < 2:
            raise NasplatError(f"need at least 2 reference rows of features, got shape {ref.shape}")
        self.center = ref.mean(axis=0)
        _, sv, vt = np.linalg.svd((ref - self.center) / np.sqrt(len(ref)), full_matrices=False)
        keep = sv > 1e-8 * max(float(sv[0]) if len(sv) else 0.0, 1e-300)
        self.projection = vt[keep].T / sv[keep]

    def _design(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.center is None or self.projection is None:
            raise NasplatError("the latency model is not fitted")
        if x.ndim != 2 or x.shape[1] != len(self.center):
            raise NasplatError(f"expected {len(self.center)} feature columns, got shape {x.shape}")
        return np.hstack([np.ones((len(x), 1)), (x - self.center) @ self.projection])

    def layer_costs_ms(self) -> np.ndarray:
        """The fitted model as a lookup table: ms per use of each layer configuration (minimum-norm solution;
        configurations used in lockstep share their cost), and the intercept as element 0."""
        if self.coef is None or self.center is None or self.projection is None:
            raise NasplatError("the latency model is not fitted: call fit() first")
        per_layer = self.projection @ self.coef[1:]
        return np.concatenate([[self.coef[0] - float(self.center @ per_layer)], per_layer])

    # -- pre-training on other devices
    def pretrain(self, x: np.ndarray, prior: np.ndarray, names: Sequence[str] | None = None) -> FewShotLatencyModel:
        """Fit one coefficient vector per prior device (columns of ``prior``, ms; NaN = not measured)."""
        x = np.asarray(x, float)
        prior = np.asarray(prior, float)
        if prior.ndim == 1:
            prior = prior[:, None]
        if len(x) != len(prior):
            raise NasplatError(f"prior has {len(prior)} rows but the features have {len(x)}")
        self.set_columns(x)
        a = self._design(x)
        basis = []
        for d in range(prior.shape[1]):
            ok = np.isfinite(prior[:, d]) & (prior[:, d] > 0)
            if ok.sum() < a.shape[1]:
                raise NasplatError(
                    f"prior device {names[d] if names else d} has {int(ok.sum())} usable rows; need at least "
                    f"{a.shape[1]} (one per feature and the intercept)"
                )
            y = prior[ok, d]
            ref = float(np.median(y))
            pen = np.full(a.shape[1], self.prior_lambda * ok.sum() / ref**2)
            basis.append(_irls(a[ok], y, w0=np.zeros(a.shape[1]), penalty=pen, f_scale=self.f_scale, iters=self.iters))
        self.basis = np.stack(basis, axis=1)
        self.prior_names = list(names) if names is not None else [f"prior_{d}" for d in range(prior.shape[1])]
        return self

    # -- adaptation
    def _fit_once(self, a: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
        ref = float(np.median(y))
        if self.basis is not None:
            mix = self._fit_mix(a, y)
            w0 = self.basis @ mix
        else:
            w0 = np.zeros(a.shape[1])
            w0[0] = ref
        if not np.isfinite(lam):
            return w0
        pen = np.full(a.shape[1], lam / ref**2)
        if self.basis is None:
            pen[0] = 1e-6 / ref**2  # the intercept is not pulled towards an arbitrary value
        return _irls(a, y, w0=w0, penalty=pen, f_scale=self.f_scale, iters=self.iters)

    def _fit_mix(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Non-negative weights of the prior devices (robust relative fit, projected onto mix >= 0)."""
        assert self.basis is not None
        preds = a @ self.basis  # rows x devices
        d = preds.shape[1]
        pen = np.full(d, 1e-6)
        mix = _irls(preds, y, w0=np.zeros(d), penalty=pen, f_scale=self.f_scale, iters=self.iters)
        active = np.ones(d, bool)
        for _ in range(d):  # drop negative weights one at a time and refit the rest
            if (mix[active] >= 0).all():
                break
            worst = np.flatnonzero(active)[np.argmin(mix[active])]
            active[worst] = False
            mix = np.zeros(d)
            if active.any():
                mix[active] = _irls(
                    preds[:, active], y, w0=np.zeros(active.sum()), penalty=pen[active], f_scale=self.f_scale,
                    iters=self.iters,
                )  # fmt: skip
        return np.maximum(mix, 0.0)

    def fit(self, x: np.ndarray, y: np.ndarray, reference: np.ndarray | None = None) -> FewShotLatencyModel:
        """Adapt to a device from its measured networks (``y`` in ms, all positive).

        ``reference``: feature rows of networks of the space (measured or not) used to merge proportional
        columns when there is no prior; default ``x`` itself. Give a sample of the space when ``x`` is small,
        or columns that happen to be proportional on the few rows would be merged.
        """
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        if len(x) != len(y) or len(y) < 2:
            raise NasplatError(f"need at least 2 measured networks with features (got {len(y)} and {len(x)} rows)")
        if not (np.isfinite(y).all() and (y > 0).all()):
            raise NasplatError("measured latencies must be positive numbers")
        if self.basis is None:
            self.set_columns(x if reference is None else reference)
        a = self._design(x)
        grid = list(self.lambdas) + ([float("inf")] if self.basis is not None else [])
        best: tuple[float, float] | None = None
        n = len(y)
        folds = np.arange(n) % (n if n <= self.loo_max else 5)  # leave-one-out, or 5 interleaved folds
        for lam in grid:
            r = np.empty(n)
            for k in np.unique(folds):
                out = folds == k
                w = self._fit_once(a[~out], y[~out], lam)
                r[out] = a[out] @ w / y[out] - 1.0
            score = _cauchy(r, self.f_scale)
            if best is None or score < best[0] - 1e-12:
                best = (score, lam)
        assert best is not None
        self.chosen_lambda = best[1]
        self.coef = self._fit_once(a, y, best[1])
        self.mix = self._fit_mix(a, y) if self.basis is not None else None
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise NasplatError("the latency model is not fitted: call fit() first")
        return self._design(x) @ self.coef

    def predict_prior(self, x: np.ndarray) -> np.ndarray:
        """The pre-trained prior devices' predictions (ms), one column per prior device."""
        if self.basis is None:
            raise NasplatError("the latency model has no prior: call pretrain() first")
        return self._design(x) @ self.basis

    # -- saving
    def to_dict(self) -> dict[str, Any]:
        def arr(v: np.ndarray | None) -> Any:
            return None if v is None else np.asarray(v).tolist()

        return {
            "f_scale": self.f_scale,
            "lambdas": list(self.lambdas),
            "iters": self.iters,
            "prior_lambda": self.prior_lambda,
            "loo_max": self.loo_max,
            "center": arr(self.center),
            "projection": arr(self.projection),
            "basis": arr(self.basis),
            "mix": arr(self.mix),
            "coef": arr(self.coef),
            "chosen_lambda": self.chosen_lambda
            if self.chosen_lambda is None or np.isfinite(self.chosen_lambda)
            else "inf",
            "prior_names": list(self.prior_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FewShotLatencyModel:
        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.asarray(v, dtype=float)

        lam = data.get("chosen_lambda")
        return cls(
            f_scale=float(data["f_scale"]),
            lambdas=tuple(float(v) for v in data["lambdas"]),
            iters=int(data["iters"]),
            prior_lambda=float(data["prior_lambda"]),
            loo_max=int(data.get("loo_max", 40)),
            center=arr(data.get("center")),
            projection=arr(data.get("projection")),
            basis=arr(data.get("basis")),
            mix=arr(data.get("mix")),
            coef=arr(data.get("coef")),
            chosen_lambda=float(lam) if lam is not None else None,
            prior_names=list(data.get("prior_names", [])),
        )


# ------------------------------------------------------------------------------------------------ design
def covering_design(prior_ms: np.ndarray, n: int, seed: int, *, pool: int = 2000, dims: int = 3) -> np.ndarray:
    """Row indices of ``n`` networks to measure on a new device, chosen from the prior devices' latencies alone.

    A seeded pool of ``pool`` rows (those with a positive, finite value on every prior device) is embedded by
    the first ``dims`` principal components of the standardised log latencies, and ``n`` rows are picked by
    greedy farthest-point selection (maximin) from a random first row: networks that the prior devices already
    tell apart, spread over the space. It never reads the new device, so a user can run it before measuring
    anything. The same ``prior_ms`` and seed give the same rows.
    """
    p = np.asarray(prior_ms, dtype=float)
    if p.ndim == 1:
        p = p[:, None]
    ok = np.flatnonzero(np.isfinite(p).all(axis=1) & (p > 0).all(axis=1))
    if n < 1 or n > len(ok):
        raise NasplatError(f"cannot choose {n} networks from {len(ok)} rows with every prior device measured")
    rng = np.random.default_rng(seed)
    cand = rng.permutation(ok)[: max(n, min(pool, len(ok)))]
    logs = np.log(p[cand])
    sd = logs.std(axis=0)
    z = (logs - logs.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    u, sv, _ = np.linalg.svd(z, full_matrices=False)
    emb = u[:, :dims] * sv[:dims]
    chosen = [0]
    dist = np.linalg.norm(emb - emb[0], axis=1)
    for _ in range(n - 1):
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(emb - emb[j], axis=1))
    return cand[np.asarray(chosen)]


# ------------------------------------------------------------------------------------------------ metrics
def latency_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Share within ±10 % of measured, RMSE (ms), mean absolute relative error, and Kendall's tau."""
    from scipy.stats import kendalltau

    y = np.asarray(measured, float)
    p = np.asarray(predicted, float)
    rel = np.abs(p / y - 1.0)
    tau = kendalltau(y, p).statistic if len(y) > 1 else float("nan")
    return {
        "within_10pct": float(np.mean(rel <= 0.10)),
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape": float(np.mean(rel)),
        "kendall_tau": float(tau),
    }


# ------------------------------------------------------------------------------------------------ predictor
def _key_to_json(key: ConfigKey) -> list[Any]:
    out: list[Any] = []
    for item in key:
        pair: tuple[Any, Any] = item  # type: ignore[assignment]
        out.append([pair[0], list(pair[1]) if isinstance(pair[1], tuple) else pair[1]])
    return out


def _key_from_json(item: list[Any]) -> ConfigKey:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in item)


def _refuse_extra(extra: np.ndarray | None) -> None:
    """The few-shot model learns from layer features alone: extra feature columns would be silently dropped."""
    if extra is not None:
        raise NasplatError(
            "predictor 'fewshot_latency' takes no extra features; give other devices' latencies as a prior table "
            "(it pre-trains on them: `nasplat predictor fit --prior`)"
        )


@register("predictor", "fewshot_latency")
class FewShotLatencyPredictor(Predictor):
    """Latency (ms) from per-layer features with :class:`FewShotLatencyModel`, as a predictor.

    With ``nasplat predictor fit --prior TABLE`` it is pre-trained on every row of the prior table (one column
    per other device) and then adapted to the few measured rows of the target; without a prior it fits the
    measured rows alone (columns found from a seeded sample of ``reference_size`` architectures of the space).
    """

    name: ClassVar[str] = "fewshot_latency"
    pretrains_on_prior: ClassVar[bool] = True

    def __init__(self, *, f_scale: float = 0.03, reference_size: int = 500) -> None:
        self.f_scale = float(f_scale)
        self.reference_size = int(reference_size)
        self.model = FewShotLatencyModel(f_scale=self.f_scale)
        self.vocab: LayerVocabulary | None = None
        self.space_record: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return {"f_scale": self.f_scale, "reference_size": self.reference_size}

    def pretrain(
        self, space: SearchSpace, archs: Sequence[Architecture], prior: np.ndarray, names: Sequence[str]
    ) -> None:
        x, self.vocab = space_features(space, archs)
        self.model.pretrain(x, prior, list(names))

    def fit(
        self,
        space: SearchSpace,
        archs: Sequence[Architecture],
        y: Sequence[float] | np.ndarray,
        *,
        seed: int = 0,
        extra: np.ndarray | None = None,
    ) -> FewShotLatencyPredictor:
        _refuse_extra(extra)
        yv, _ = check_training_data(archs, y, None)
        reference = None
        if self.vocab is None:
            rng = np.random.default_rng(seed)
            sample = [space.sample(rng) for _ in range(self.reference_size)]
            ref_x, self.vocab = space_features(space, [*archs, *sample])
            reference = ref_x
        x, _ = space_features(space, archs, self.vocab)
        self.model.fit(x, yv, reference=reference)
        self.space_record = space_record(space)
        return self

    def predict(
        self, space: SearchSpace, archs: Sequence[Architecture], *, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.vocab is None or self.space_record is None:
            raise NasplatError("predictor 'fewshot_latency' is not fitted: call fit first")
        _refuse_extra(extra)
        check_space(self.space_record, space)
        if not len(archs):
            return np.zeros(0), None
        x, _ = space_features(space, archs, self.vocab)
        return self.model.predict(x), None

    def save(self, directory: str | Path) -> None:
        if self.vocab is None or self.space_record is None:
            raise NasplatError("predictor 'fewshot_latency' is not fitted: call fit first")
        write_manifest(
            directory,
            {
                "model": self.name,
                "params": self.params(),
                "space": self.space_record,
                "model_state": self.model.to_dict(),
                "layer_configs": [_key_to_json(k) for k in self.vocab.keys],
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> FewShotLatencyPredictor:
        m = read_manifest(directory)
        p = cls(**m["params"])
        p.model = FewShotLatencyModel.from_dict(m["model_state"])
        p.vocab = LayerVocabulary([_key_from_json(k) for k in m["layer_configs"]])
        p.space_record = m["space"]
        return p
