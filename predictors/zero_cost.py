"""Zero-cost proxies: scores of an architecture's real stand-alone network at initialisation, no training.

The network is ``space.family.build_supernet(space, seed=seed).extract(arch)`` (the supernet is built once
per :class:`ZeroCostProxies`; every architecture's network starts from the same seeded initial weights).
Proxies (larger means "predicted better" for all of them):

``params``     analytical parameter count (the family's layer records, ``analytical`` cost model)
``macs``       analytical multiply-accumulates (batch 1)
``synflow``    SynFlow (Tanaka et al., 2020): ``sum |θ ⊙ ∂R/∂θ|`` with ``R`` the summed output of the network
               with all weights made positive, on an all-ones input, BatchNorm in eval mode (the identity
               at initialisation), in float64; reported as ``log`` of the sum
``grad_norm``  ``sum over weight tensors of ||∂L/∂W||₂`` for the task's loss on one batch (train mode)
``snip``       SNIP saliency ``sum |θ ⊙ ∂L/∂θ|`` from the same backward pass
``naswot``     NASWOT (Mellor et al., 2021): ``log|K|`` of the Hamming-similarity kernel of the ReLU
               activation patterns of the batch

The batch is ``batch_size`` inputs of the space's ``macro.input_shape``: seeded Gaussian noise with random
labels (``data="noise"``, the default: needs no dataset), or images of a registered dataset
(``data="cifar10"``...), drawn with the seed. Scores are cached per (space, settings, architecture).

:class:`ZeroCostEncoder` (encoder ``zc``) makes the proxies extra features; :class:`ZeroCostPredictor`
(predictors ``zc_<proxy>``) uses one proxy as a predictor: the sign is taken from the training data (a proxy
that anti-correlates is flipped) and a linear map to the target's units is fitted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import (
    Encoder,
    Predictor,
    check_extra,
    check_space,
    check_training_data,
    read_manifest,
    space_record,
    write_manifest,
)
from nasplat.registry import register

if TYPE_CHECKING:
    import torch

    from nasplat.space import Architecture, SearchSpace

#: Every proxy, in the order features and reports use.
PROXIES: tuple[str, ...] = ("params", "macs", "synflow", "grad_norm", "snip", "naswot")
_NETWORK_PROXIES = ("synflow", "grad_norm", "snip", "naswot")


@dataclass(frozen=True)
class ZeroCostSettings:
    """How proxies are computed: the initialisation seed, the batch size and where the batch comes from."""

    seed: int = 0
    batch_size: int = 16
    data: str = "noise"
    device: str = "cpu"  # where each network is scored ("cuda" on a GPU machine)

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise NasplatError(f"zero-cost proxies need batch_size >= 2, got {self.batch_size}")


_SCORE_CACHE: dict[tuple[str, str, ZeroCostSettings, Architecture], dict[str, float]] = {}
_SCORE_CACHE_MAX = 200_000


class ZeroCostProxies:
    """Computes proxies of architectures of one space (see the module docstring)."""

    def __init__(
        self, space: SearchSpace, settings: ZeroCostSettings | None = None, *, batch: tuple[Any, ...] | None = None
    ) -> None:
        self.space = space
        self.settings = settings or ZeroCostSettings()
        self._batch = batch
        self._supernet: Any = None
        self._cost_model: Any = None
        #: seconds spent computing network proxies (not counting cache hits)
        self.seconds = 0.0

    # inputs ------------------------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(x, y)`` batch every network is scored on (built once, seeded)."""
        import torch

        if self._batch is None:
            s = self.settings
            macro: Any = self.space.macro
            shape = tuple(int(v) for v in macro.input_shape)
            classes = int(getattr(macro, "num_classes", 10))
            if s.data == "noise":
                g = torch.Generator().manual_seed(s.seed)
                x = torch.randn((s.batch_size, *shape), generator=g)
                y = torch.randint(0, classes, (s.batch_size,), generator=g)
            else:
                from nasplat.datasets import load_dataset

                ds = load_dataset(s.data, "train")
                if ds.input_shape != shape:
                    raise NasplatError(
                        f"zero-cost data '{s.data}' has inputs {ds.input_shape}, space '{self.space.name}' expects {shape}"
                    )
                pick = np.random.default_rng(s.seed).choice(len(ds), size=s.batch_size, replace=False)
                sub = ds.subset(np.sort(pick))
                x, y = next(sub.batches(s.batch_size, seed=None, shuffle=False))
            self._batch = (x, y)
        return self._batch  # type: ignore[return-value]

    def supernet(self) -> Any:
        if self._supernet is None:
            self._supernet = self.space.family.build_supernet(self.space, seed=self.settings.seed)
        return self._supernet

    def _costs(self, arch: Architecture) -> dict[str, float]:
        from nasplat import registry

        if self._cost_model is None:
            self._cost_model = registry.get("cost_model", "analytical")()
        return dict(self._cost_model.estimate(self.space, arch))

    # scores ------------------------------------------------------------------------------------------------
    def scores(self, arch: Architecture, proxies: Sequence[str] = PROXIES) -> dict[str, float]:
        """The asked proxies of one architecture."""
        unknown = [p for p in proxies if p not in PROXIES]
        if unknown:
            raise NasplatError(f"unknown zero-cost proxy '{unknown[0]}'; allowed: {', '.join(PROXIES)}")
        key = (self.space.name, self.space.hash, self.settings, arch)
        cached = _SCORE_CACHE.setdefault(key, {}) if len(_SCORE_CACHE) < _SCORE_CACHE_MAX else {}
        todo = [p for p in proxies if p not in cached]
        if any(p in ("params", "macs") for p in todo):
            costs = self._costs(arch)
            cached["params"] = float(costs["params_count"])
            cached["macs"] = float(costs["macs"])
        if any(p in _NETWORK_PROXIES for p in todo):
            t0 = time.perf_counter()
            cached.update(self._network_scores(arch))
            self.seconds += time.perf_counter() - t0
        return {p: cached[p] for p in proxies}

    def compute(
        self,
        archs: Sequence[Architecture],
        proxies: Sequence[str] = PROXIES,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """``{proxy: scores of archs}`` (float64 arrays, in order)."""
        out = {p: np.empty(len(archs), dtype=np.float64) for p in proxies}
        for i, a in enumerate(archs):
            s = self.scores(a, proxies)
            for p in proxies:
                out[p][i] = s[p]
            if progress is not None:
                progress(i + 1, len(archs))
        return out

    def _network_scores(self, arch: Architecture) -> dict[str, float]:
        import torch
        from torch import nn

        dev = torch.device(self.settings.device)
        x, y = (t.to(dev) for t in self.batch())
        task = self.space.family.task(self.space)
        net = self.supernet().extract(arch).to(dev)
        net.train()
        # one forward in train mode: ReLU activation patterns (NASWOT), then the loss's gradients
        patterns = _PatternKernel()

        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            patterns.add(inputs[0].detach() > 0)

        handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.GELU))]
        try:
            net.zero_grad(set_to_none=True)
            loss = task.loss(net, (x, y))
            if loss.requires_grad:  # else no trainable weight reaches the loss (a ControlNet with every block off)
                loss.backward()
        finally:
            for h in handles:
                h.remove()
        grad_norm = 0.0
        snip = 0.0
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                    grad_norm += float(m.weight.grad.norm())
                    snip += float((m.weight.grad * m.weight).abs().sum())
        naswot = patterns.log_det()
        synflow = _synflow(net, task.model_inputs((torch.ones_like(x[:1]), y[:1])))
        return {"grad_norm": grad_norm, "snip": snip, "naswot": naswot, "synflow": synflow}


class _PatternKernel:
    """NASWOT's kernel ``K[i, j]`` = the number of units on which inputs ``i`` and ``j`` agree (both active or both
    inactive), accumulated layer by layer: ``K = C Cᵀ + (1 - C)(1 - C)ᵀ = 2 C Cᵀ - r_i - r_j + D`` for the 0/1
    pattern matrix ``C`` with row sums ``r`` over ``D`` units, without ever holding ``C`` or ``1 - C`` whole."""

    def __init__(self) -> None:
        self.gram: Any = None  # float64 [batch, batch]: sum over layers of C Cᵀ
        self.rows: Any = None  # float64 [batch]
        self.units = 0

    def add(self, active: Any) -> None:
        c = active.flatten(1).float()  # a layer's C Cᵀ is exact in float32 (integers below 2**24)
        gram, rows = (c @ c.T).double(), c.sum(1).double()
        self.gram = gram if self.gram is None else self.gram + gram
        self.rows = rows if self.rows is None else self.rows + rows
        self.units += c.shape[1]

    def log_det(self) -> float:
        import torch

        if self.gram is None:
            return 0.0
        k = 2 * self.gram - self.rows[:, None] - self.rows[None, :] + self.units
        sign, logdet = torch.linalg.slogdet(k.cpu())
        return float(logdet) if float(sign) > 0 else -math.inf  # singular: two inputs share a pattern


def _synflow(net: Any, inputs: tuple[torch.Tensor, ...]) -> float:
    """SynFlow of ``net`` on ``inputs``: the network's inputs built (by the family's task) from one all-ones
    image, in float64."""
    import torch
    from torch import nn

    net = net.double()
    net.eval()  # BatchNorm with initial running statistics: the identity (up to eps)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    out = torch.sum(net(*(t.double() if t.is_floating_point() else t for t in inputs)))
    if not out.requires_grad:  # no trainable weight reaches the output
        return -math.inf
    out.backward()
    total = 0.0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())
    return math.log(total) if total > 0 else -math.inf


def proxy_features(values: dict[str, np.ndarray]) -> np.ndarray:
    """Proxies as features, one column per proxy in ``values`` (in :data:`PROXIES` order): ``log1p`` of params,
    MACs, grad_norm and snip; synflow (already a log) and naswot as they are; non-finite values (a cell cut
    off from its input) replaced by the column's finite minimum minus one."""
    cols = []
    for p in (p for p in PROXIES if p in values):
        v = np.asarray(values[p], dtype=np.float64)
        if p in ("params", "macs", "grad_norm", "snip"):
            v = np.log1p(np.maximum(v, 0.0))
        cols.append(v)
    x = np.stack(cols, axis=1) if cols else np.zeros((0, 0))
    for j in range(x.shape[1]):
        bad = ~np.isfinite(x[:, j])
        if bad.any():
            finite = x[~bad, j]
            x[bad, j] = (finite.min() - 1.0) if len(finite) else 0.0
    return x


@register("encoder", "zc")
class ZeroCostEncoder(Encoder):
    """Zero-cost proxies as features (default settings: seed 0, batch 16 of seeded noise). Expensive: each new
    architecture costs a forward and backward pass of its network. Like every encoder it scores the canonical
    architecture by default (for cells: the cheapest network computing the same function)."""

    name: ClassVar[str] = "zc"

    def __init__(self, *, canonical: bool = True, settings: ZeroCostSettings | None = None) -> None:
        super().__init__(canonical=canonical)
        self.settings = settings or ZeroCostSettings()
        self._proxies: dict[str, ZeroCostProxies] = {}

    def supports(self, space: SearchSpace) -> bool:
        from nasplat import registry

        macro = space.macro
        return hasattr(macro, "input_shape") and "analytical" in registry.available("cost_model")

    def requirement(self) -> str:
        return "a macro input_shape and the 'analytical' cost model"

    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        zp = self._proxies.get(space.hash)
        if zp is None:
            zp = self._proxies[space.hash] = ZeroCostProxies(space, self.settings)
        values = zp.compute(self.prepare(space, archs))
        if not len(archs):
            return np.zeros((0, len(PROXIES)), dtype=np.float32)
        x = proxy_features(values)
        return x.astype(np.float32)

    def feature_names(self, space: SearchSpace) -> list[str]:
        return [f"zc:{p}" for p in PROXIES]


class ZeroCostPredictor(Predictor):
    """One zero-cost proxy as a predictor: ``predicted = a * score + b`` with the sign of ``a`` and the scale
    fitted on the training data (so a proxy that anti-correlates is flipped). No spread."""

    name: ClassVar[str] = "zc"
    proxy: ClassVar[str] = "synflow"

    def __init__(self, *, seed: int = 0, batch_size: int = 16, data: str = "noise", device: str = "cpu") -> None:
        self.settings = ZeroCostSettings(seed=seed, batch_size=batch_size, data=data, device=device)
        self._fitted: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return asdict(self.settings)

    def _score(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        zp = ZeroCostProxies(space, self.settings)
        return proxy_features(zp.compute(archs, [self.proxy]))[:, 0]

    def fit(
        self,
        space: SearchSpace,
        archs: Sequence[Architecture],
        y: Sequence[float] | np.ndarray,
        *,
        seed: int = 0,
        extra: np.ndarray | None = None,
    ) -> ZeroCostPredictor:
        yv, _ = check_training_data(archs, y, extra)
        s = self._score(space, archs)
        if np.ptp(s) > 0:
            a, b = np.polyfit(s, yv, 1)
        else:
            a, b = 0.0, float(yv.mean())
        self._fitted = {"a": float(a), "b": float(b), "space": space_record(space), "n_train": len(yv)}
        return self

    def predict(
        self, space: SearchSpace, archs: Sequence[Architecture], *, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._fitted is None:
            raise NasplatError(f"predictor '{self.name}' is not fitted: call fit first")
        check_space(self._fitted["space"], space)
        check_extra(archs, extra)
        s = self._score(space, archs)
        a = self._fitted["a"]
        # a zero slope (a constant proxy on the training set) still ranks by the proxy
        return (a * s + self._fitted["b"] if a != 0 else s), None

    def save(self, directory: str | Path) -> None:
        if self._fitted is None:
            raise NasplatError(f"predictor '{self.name}' is not fitted: call fit first")
        write_manifest(directory, {"model": self.name, "params": self.params(), **self._fitted})

    @classmethod
    def load(cls, directory: str | Path) -> ZeroCostPredictor:
        m = read_manifest(directory)
        p = cls(**m["params"])
        p._fitted = {k: m[k] for k in ("a", "b", "space", "n_train")}
        return p


def _proxy_predictor(proxy: str) -> type[ZeroCostPredictor]:
    cls = type(
        f"ZeroCost{proxy.title().replace('_', '')}Predictor",
        (ZeroCostPredictor,),
        {"name": f"zc_{proxy}", "proxy": proxy, "__doc__": f"The zero-cost proxy '{proxy}' as a predictor."},
    )
    return register("predictor", f"zc_{proxy}")(cls)


PROXY_PREDICTORS = {p: _proxy_predictor(p) for p in PROXIES}
