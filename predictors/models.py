"""Predictors over encodings: LightGBM gradient-boosted trees, an ensemble of small MLPs (mean and spread,
squared or pairwise ranking loss) and an exact Gaussian process.

Each encodes architectures with the encoders named in ``encoder`` (``"default"``: ``path+pathstats+onehot+costs``,
keeping those the space supports), canonicalised unless ``canonical=False``, appends the ``extra`` columns,
and fits on the (optionally log-transformed) target. ``target_transform="auto"`` takes ``log`` when every
target is positive and the values are strongly right-skewed (skewness > 1, as latencies and energies are),
and leaves accuracies as they are.

Saved as ``predictor.json`` plus ``gbdt.txt`` (LightGBM's text model), ``mlp.safetensors`` or
``gp.safetensors``; nothing is pickled, and a loaded predictor predicts exactly what the saved one did.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import (
    Predictor,
    check_extra,
    check_space,
    check_training_data,
    make_encoder,
    read_manifest,
    space_record,
    write_manifest,
)
from nasplat.registry import register

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

#: The encoders ``encoder="default"`` combines, in this order, keeping those the space supports.
DEFAULT_ENCODERS: tuple[str, ...] = ("path", "pathstats", "onehot", "costs")
TRANSFORMS = ("auto", "none", "log")


def default_encoder(space: SearchSpace) -> str:
    """``path+pathstats+onehot+costs``, without the encoders ``space`` does not support."""
    from nasplat.measure import supported_encoders

    ok = set(supported_encoders(space))
    return "+".join(e for e in DEFAULT_ENCODERS if e in ok) or "onehot"


def choose_transform(y: np.ndarray, transform: str) -> str:
    if transform != "auto":
        return transform
    if np.all(y > 0) and len(y) > 2:
        from scipy.stats import skew

        if float(skew(y)) > 1.0:
            return "log"
    return "none"


class EncodedPredictor(Predictor):
    """Base of the predictors that fit a model on an encoding matrix (plus extra columns)."""

    def __init__(self, *, encoder: str = "default", canonical: bool = True, target_transform: str = "auto") -> None:
        if target_transform not in TRANSFORMS:
            raise NasplatError(f"unknown target_transform '{target_transform}'; allowed: {', '.join(TRANSFORMS)}")
        self.encoder = encoder
        self.canonical = bool(canonical)
        self.target_transform = target_transform
        self._state: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "canonical": self.canonical, "target_transform": self.target_transform}

    # the model, on matrices ----------------------------------------------------------------------------------
    def fit_matrix(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def save_model(self, directory: Path) -> dict[str, Any]:
        """Write the model files; return the JSON-able state :meth:`load_model` needs."""
        raise NotImplementedError

    def load_model(self, directory: Path, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # encodings -----------------------------------------------------------------------------------------------
    def resolved_encoder(self, space: SearchSpace) -> str:
        return default_encoder(space) if self.encoder == "default" else self.encoder

    # the role ------------------------------------------------------------------------------------------------
    def fit(
        self,
        space: SearchSpace,
        archs: Sequence[Architecture],
        y: Sequence[float] | np.ndarray,
        *,
        seed: int = 0,
        extra: np.ndarray | None = None,
    ) -> EncodedPredictor:
        yv, ex = check_training_data(archs, y, extra)
        self._state = None
        spec = self.resolved_encoder(space)
        transform = choose_transform(yv, self.target_transform)
        if transform == "log" and np.any(yv <= 0):
            raise NasplatError("target_transform 'log' needs positive target values")
        x = self.features_with(space, archs, ex, spec)
        self.fit_matrix(x, np.log(yv) if transform == "log" else yv, seed)
        self._state = {
            "encoder": spec,
            "transform": transform,
            "n_extra": 0 if ex is None else int(ex.shape[1]),
            "n_train": len(yv),
            "seed": seed,
            "space": space_record(space),
        }
        return self

    def features_with(
        self, space: SearchSpace, archs: Sequence[Architecture], extra: np.ndarray | None, spec: str
    ) -> np.ndarray:
        """The matrix the model sees: the encodings named in ``spec``, then the extra columns (float64)."""
        parts = [e.encode(space, archs).astype(np.float64) for e in make_encoder(space, spec, canonical=self.canonical)]
        if extra is not None:
            parts.append(extra)
        return np.hstack(parts)

    def fitted_state(self) -> dict[str, Any]:
        if self._state is None:
            raise NasplatError(f"predictor '{self.name}' is not fitted: call fit first")
        return self._state

    def predict(
        self, space: SearchSpace, archs: Sequence[Architecture], *, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        st = self.fitted_state()
        check_space(st["space"], space)
        ex = check_extra(archs, extra, st["n_extra"])
        if not len(archs):
            return np.zeros(0), (np.zeros(0) if self.provides_std else None)
        x = self.features_with(space, archs, ex, st["encoder"])
        mean, std = self.predict_matrix(x)
        return self.untransform(mean, std)

    def untransform(self, mean: np.ndarray, std: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        st = self.fitted_state()
        if st["transform"] == "log":
            m = np.exp(mean)
            return m, (None if std is None else m * std)  # first-order spread of exp(mean)
        return np.asarray(mean, dtype=np.float64), (None if std is None else np.asarray(std, dtype=np.float64))

    def save(self, directory: str | Path) -> None:
        st = self.fitted_state()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        model_state = self.save_model(d)
        write_manifest(d, {"model": self.name, "params": self.params(), **st, "model_state": model_state})

    @classmethod
    def load(cls, directory: str | Path) -> EncodedPredictor:
        m = read_manifest(directory)
        p = cls(**m["params"])
        p.load_model(Path(directory), m["model_state"])
        p._state = {k: m[k] for k in ("encoder", "transform", "n_extra", "n_train", "seed", "space")}
        return p


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block, restoring the previous count after: the tiny batched
    matrices of the MLP ensemble only lose time to thread hand-offs (ten times over on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _safetensors_save(arrays: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def _safetensors_load(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise NasplatError(f"{path}: model file missing")
    return dict(load_file(str(path)))


class _Scaler:
    """Drops constant columns and standardises (or min-max scales) the rest, from the training matrix."""

    def __init__(self, mode: str = "standard") -> None:
        self.mode = mode
        self.keep = np.zeros(0, dtype=bool)
        self.shift = np.zeros(0)
        self.scale = np.zeros(0)

    def fit(self, x: np.ndarray) -> _Scaler:
        self.keep = np.ptp(x, axis=0) > 0 if len(x) else np.zeros(x.shape[1], dtype=bool)
        k = x[:, self.keep]
        if self.mode == "standard":
            self.shift, self.scale = k.mean(axis=0), k.std(axis=0)
        else:
            self.shift, self.scale = k.min(axis=0), np.ptp(k, axis=0)
        self.scale = np.where(self.scale > 0, self.scale, 1.0)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x[:, self.keep] - self.shift) / self.scale

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scaler_keep": self.keep.astype(np.uint8), "scaler_shift": self.shift, "scaler_scale": self.scale}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], mode: str) -> _Scaler:
        s = cls(mode)
        s.keep = arrays["scaler_keep"].astype(bool)
        s.shift = arrays["scaler_shift"]
        s.scale = arrays["scaler_scale"]
        return s


# --------------------------------------------------------------------------------------------------------------
# LightGBM


@register("predictor", "gbdt")
class GBDTPredictor(EncodedPredictor):
    """LightGBM gradient-boosted regression trees (one thread, deterministic; no spread)."""

    name: ClassVar[str] = "gbdt"

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 3,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.hyper: dict[str, Any] = {
            "n_estimators": int(n_estimators),
            "learning_rate": float(learning_rate),
            "num_leaves": int(num_leaves),
            "min_child_samples": int(min_child_samples),
            "subsample": float(subsample),
            "colsample_bytree": float(colsample_bytree),
            "reg_lambda": float(reg_lambda),
        }
        self._booster: Any = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.hyper}

    def fit_matrix(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        import lightgbm as lgb

        h = self.hyper
        params = {
            "objective": "regression",
            "learning_rate": h["learning_rate"],
            "num_leaves": h["num_leaves"],
            "min_data_in_leaf": h["min_child_samples"],
            "min_sum_hessian_in_leaf": 1e-3,
            "bagging_fraction": h["subsample"],
            "bagging_freq": 1 if h["subsample"] < 1 else 0,
            "feature_fraction": h["colsample_bytree"],
            "lambda_l2": h["reg_lambda"],
            "min_data_in_bin": 1,
            "feature_pre_filter": False,
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "seed": int(seed),
            "verbosity": -1,
        }
        data = lgb.Dataset(x, label=y, params={"verbosity": -1})
        self._booster = lgb.train(params, data, num_boost_round=h["n_estimators"])

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64), None

    def save_model(self, directory: Path) -> dict[str, Any]:
        (directory / "gbdt.txt").write_text(self._booster.model_to_string())
        return {"file": "gbdt.txt"}

    def load_model(self, directory: Path, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        path = directory / str(state.get("file", "gbdt.txt"))
        if not path.is_file():
            raise NasplatError(f"{path}: model file missing")
        self._booster = lgb.Booster(model_str=path.read_text())


# --------------------------------------------------------------------------------------------------------------
# MLP ensemble

LOSSES = ("mse", "rank")
#: Pairs per epoch of the ranking loss: all of them up to this many, else a fresh random sample.
MAX_PAIRS = 8192


@register("predictor", "mlp")
class MLPEnsemblePredictor(EncodedPredictor):
    """An ensemble of ``members`` small ReLU MLPs trained full-batch with Adam from different seeded
    initialisations; the prediction is their mean and the spread their standard deviation.

    ``loss="mse"`` fits standardised targets; ``loss="rank"`` minimises a pairwise logistic ranking loss
    (every training pair with different targets, or a fresh seeded sample of ``MAX_PAIRS`` of them each
    epoch when there are more) and then maps each member's scores to the target's units
    with a least-squares line, so predictions keep their units. The members train together as one batched
    network, which is fast on a CPU.
    """

    name: ClassVar[str] = "mlp"
    provides_std: ClassVar[bool] = True
    default_loss: ClassVar[str] = "mse"

    def __init__(
        self,
        *,
        members: int = 5,
        hidden: int = 64,
        layers: int = 2,
        epochs: int = 300,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        loss: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        loss = loss or self.default_loss
        if loss not in LOSSES:
            raise NasplatError(f"unknown loss '{loss}'; allowed: {', '.join(LOSSES)}")
        if members < 1 or hidden < 1 or layers < 1 or epochs < 1:
            raise NasplatError("members, hidden, layers and epochs must be >= 1")
        self.hyper: dict[str, Any] = {
            "members": int(members),
            "hidden": int(hidden),
            "layers": int(layers),
            "epochs": int(epochs),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "loss": loss,
        }
        self._weights: list[np.ndarray] = []
        self._scaler = _Scaler("standard")
        self._y_shift = 0.0
        self._y_scale = 1.0
        self._calib = np.zeros((0, 2))

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.hyper}

    def _forward(self, ws: list[Any], x: Any) -> Any:
        """``x`` (n, d) -> (members, n) through the batched members (weights (m, in, out), biases (m, 1, out))."""
        import torch

        h = x.unsqueeze(0).expand(ws[0].shape[0], -1, -1)
        n_layers = len(ws) // 2
        for k in range(n_layers):
            h = torch.baddbmm(ws[2 * k + 1], h, ws[2 * k])
            if k < n_layers - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def fit_matrix(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        with torch_threads(1):
            self._fit(x, y, seed)

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        import torch

        h = self.hyper
        self._scaler = _Scaler("standard").fit(x)
        xs = torch.as_tensor(self._scaler(x), dtype=torch.float32)
        self._y_shift, self._y_scale = float(y.mean()), float(y.std()) or 1.0
        ys = torch.as_tensor((y - self._y_shift) / self._y_scale, dtype=torch.float32)
        g = torch.Generator().manual_seed(int(seed))
        m = h["members"]
        sizes = [xs.shape[1], *([h["hidden"]] * h["layers"]), 1]
        ws: list[torch.Tensor] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / max(fan_in, 1) ** 0.5  # PyTorch's default Linear initialisation range
            ws.append(((torch.rand((m, fan_in, fan_out), generator=g) * 2 - 1) * bound).requires_grad_())
            ws.append(((torch.rand((m, 1, fan_out), generator=g) * 2 - 1) * bound).requires_grad_())
        opt = torch.optim.Adam(ws, lr=h["lr"], weight_decay=h["weight_decay"])
        if h["loss"] == "rank":  # every ordered pair (i, j) with y_i > y_j
            first, second = torch.nonzero(ys[:, None] > ys[None, :], as_tuple=True)
        for _ in range(h["epochs"]):
            opt.zero_grad()
            out = self._forward(ws, xs)
            if h["loss"] == "mse":
                loss = ((out - ys) ** 2).mean()
            elif len(first) == 0:
                loss = out.sum() * 0.0
            else:
                i, j = first, second
                if len(first) > MAX_PAIRS:  # a fresh seeded sample of pairs each epoch
                    pick = torch.randint(0, len(first), (MAX_PAIRS,), generator=g)
                    i, j = first[pick], second[pick]
                loss = torch.nn.functional.softplus(out[:, j] - out[:, i]).mean()
            loss.backward()
            opt.step()
        self._weights = [w.detach().numpy().copy() for w in ws]
        with torch.no_grad():
            scores = self._forward([torch.as_tensor(w) for w in self._weights], xs).numpy().astype(np.float64)
        if h["loss"] == "rank":  # per member: standardised target ~ a * score + b
            calib = []
            for s in scores:
                a, b = np.polyfit(s, ys.numpy().astype(np.float64), 1) if np.ptp(s) > 0 else (0.0, 0.0)
                calib.append((a, b))
            self._calib = np.asarray(calib, dtype=np.float64)
        else:
            self._calib = np.tile([1.0, 0.0], (m, 1))

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        xs = torch.as_tensor(self._scaler(x), dtype=torch.float32)
        with torch.no_grad(), torch_threads(1):
            scores = self._forward([torch.as_tensor(w) for w in self._weights], xs).numpy().astype(np.float64)
        preds = scores * self._calib[:, :1] + self._calib[:, 1:]
        preds = preds * self._y_scale + self._y_shift
        return preds.mean(axis=0), preds.std(axis=0)

    def save_model(self, directory: Path) -> dict[str, Any]:
        arrays = {f"w{k}": w for k, w in enumerate(self._weights)}
        arrays.update(self._scaler.arrays())
        arrays["calib"] = self._calib
        _safetensors_save(arrays, directory / "mlp.safetensors")
        return {
            "file": "mlp.safetensors",
            "y_shift": self._y_shift,
            "y_scale": self._y_scale,
            "n_weights": len(self._weights),
        }

    def load_model(self, directory: Path, state: dict[str, Any]) -> None:
        arrays = _safetensors_load(directory / str(state.get("file", "mlp.safetensors")))
        self._weights = [arrays[f"w{k}"] for k in range(int(state["n_weights"]))]
        self._scaler = _Scaler.from_arrays(arrays, "standard")
        self._calib = arrays["calib"]
        self._y_shift, self._y_scale = float(state["y_shift"]), float(state["y_scale"])


@register("predictor", "mlp_rank")
class RankMLPEnsemblePredictor(MLPEnsemblePredictor):
    """The MLP ensemble trained with the pairwise ranking loss (``mlp`` with ``loss="rank"``)."""

    name: ClassVar[str] = "mlp_rank"
    default_loss: ClassVar[str] = "rank"


# --------------------------------------------------------------------------------------------------------------
# Gaussian process

KERNELS = ("matern", "rbf")


@register("predictor", "gp")
class GPPredictor(EncodedPredictor):
    """Exact Gaussian process regression (scikit-learn) over the encoding, min-max scaled to [0, 1]:
    ``constant * Matern(ν=2.5) + white noise`` (or RBF), one length scale, hyperparameters by maximum
    marginal likelihood with ``restarts`` seeded restarts. Mean and predictive standard deviation."""

    name: ClassVar[str] = "gp"
    provides_std: ClassVar[bool] = True

    def __init__(self, *, kernel: str = "matern", restarts: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        if kernel not in KERNELS:
            raise NasplatError(f"unknown kernel '{kernel}'; allowed: {', '.join(KERNELS)}")
        self.hyper: dict[str, Any] = {"kernel": kernel, "restarts": int(restarts)}
        self._gp: Any = None
        self._scaler = _Scaler("minmax")

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.hyper}

    def _kernel(self) -> Any:
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel

        base = (
            Matern(length_scale=1.0, nu=2.5, length_scale_bounds=(1e-2, 1e3))
            if self.hyper["kernel"] == "matern"
            else RBF(1.0, (1e-2, 1e3))
        )
        return ConstantKernel(1.0, (1e-3, 1e3)) * base + WhiteKernel(0.1, (1e-6, 1e1))

    def _regressor(self, kernel: Any, optimize: bool, seed: int) -> Any:
        from sklearn.gaussian_process import GaussianProcessRegressor

        return GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            n_restarts_optimizer=self.hyper["restarts"] if optimize else 0,
            optimizer="fmin_l_bfgs_b" if optimize else None,
            random_state=int(seed),
        )

    def fit_matrix(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits

        self._scaler = _Scaler("minmax").fit(x)
        gp = self._regressor(self._kernel(), True, seed)
        with warnings.catch_warnings(), threadpool_limits(1):  # small matrices: threads only contend
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(self._scaler(x), y)
        self._gp = gp
        self._x = self._scaler(x)
        self._y = y

    def predict_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            mean, std = self._gp.predict(self._scaler(x), return_std=True)
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def save_model(self, directory: Path) -> dict[str, Any]:
        arrays = {"x_train": self._x, "y_train": self._y, "theta": self._gp.kernel_.theta}
        arrays.update(self._scaler.arrays())
        _safetensors_save(arrays, directory / "gp.safetensors")
        return {"file": "gp.safetensors"}

    def load_model(self, directory: Path, state: dict[str, Any]) -> None:
        arrays = _safetensors_load(directory / str(state.get("file", "gp.safetensors")))
        self._scaler = _Scaler.from_arrays(arrays, "minmax")
        self._x, self._y = arrays["x_train"], arrays["y_train"]
        from threadpoolctl import threadpool_limits

        kernel = self._kernel().clone_with_theta(arrays["theta"])
        with threadpool_limits(1):
            self._gp = self._regressor(kernel, False, 0).fit(self._x, self._y)
