"""Zero-cost proxies: scores of an architecture's real stand-alone network at initialisation, no training.

The network is ``space.family.build_supernet(space, seed=seed).extract(arch)`` (the supernet is built once
per :class:`ZeroCostProxies`; every architecture's network starts from the same seeded initial weights).
Proxies (larger means "predicted better" for all of them); :data:`PROXIES` are the six classic ones (the
default set, what the ``zc`` encoder and the ``zc_<proxy>`` predictors use), :data:`ALL_PROXIES` adds the rest:

``params``     analytical parameter count (the family's layer records, ``analytical`` cost model)
``macs``       analytical multiply-accumulates (batch 1)
``synflow``    SynFlow (Tanaka et al., 2020): ``sum |θ ⊙ ∂R/∂θ|`` with ``R`` the summed output of the network
               with all weights made positive, on an all-ones input, BatchNorm in eval mode (the identity
               at initialisation), in float64; reported as ``log`` of the sum
``grad_norm``  ``sum over weight tensors of ||∂L/∂W||₂`` for the task's loss on one batch (train mode)
``snip``       SNIP saliency ``sum |θ ⊙ ∂L/∂θ|`` from the same backward pass
``naswot``     NASWOT (Mellor et al., 2021): ``log|K|`` of the Hamming-similarity kernel of the ReLU
               activation patterns of the batch
``flops``      ``2 * macs`` (a baseline; ranks as ``macs`` does)
``l2_norm``    ``sum over conv/linear weight tensors of ||W||₂`` at initialisation (NASLib's ``l2_norm``)
``jacov``      Jacobian covariance (Mellor et al., 2020, arXiv v1): ``J`` the gradient of the summed output with
               respect to each input of the batch (train mode), ``λ`` the eigenvalues of the correlation matrix
               of ``J``'s rows; ``-sum(log(λ + k) + 1/(λ + k))``, ``k = 1e-5`` (``-inf`` for a constant ``J``)
``fisher``     Fisher (Turner et al., 2020, as in Abdelfattah et al., 2021): for every conv/linear output ``a``
               with loss gradient ``g``, ``0.5 * sum over channels of mean over the batch of
               (sum over positions of a ⊙ g)²``, summed over layers
``grasp``      GraSP (Wang et al., 2020): ``sum -θ ⊙ (H g)``, ``g = ∂L/∂θ`` and ``H`` the loss's Hessian in the
               conv/linear weights (one Hessian-vector product, same batch)
``zen``        Zen-score (Lin et al., 2021): weights re-drawn from N(0, 1), train-mode BatchNorm, two seeded
               Gaussian batches; ``log E||f(x1) - f(x1 + 0.01 x2)||₁ + sum over BatchNorm2d of
               log sqrt(mean channel batch variance)``, ``f`` the map entering the last global average pool
``meco``       MeCo (Jiang et al., NeurIPS 2023): ``sum over modules with a ≥3-D output of the smallest
               eigenvalue of the Pearson correlation matrix of the first sample's feature map reshaped to
               (channels, -1)`` (as the authors' code: every module, NaN correlations set to 0)
``az_expressivity``, ``az_progressivity``, ``az_trainability``
               AZ-NAS (Lee & Ham, CVPR 2024) on the network's primary blocks (top-level children, the entries
               of a top-level ``ModuleList`` one by one; for cells: stem, each cell and reduction block,
               lastact): expressivity = sum over blocks of the entropy of the normalised eigenvalues of the
               feature (per-pixel channel vector) covariance; progressivity = the smallest increase of that
               entropy from one block to the next; trainability = mean over consecutive blocks of
               ``2 - σ - 1/σ``, ``σ`` the block Jacobian's spectral norm estimated by backpropagating one seeded
               Rademacher vector (an exact identity block scores ``-inf``, as the authors' code). The fourth
               component, complexity, is ``flops``.

:func:`combine` is AZ-NAS's rank aggregation, ``sum over components of log(percentile)``. Ranks need a
population: the percentile of a value is taken in a reference population (:func:`rank_percentiles`: mid-rank,
``(#below + #equal/2 + 1/2) / (n + 1)``, monotone in the value), by default the scored population itself (as
the paper ranks its candidates); the ``zero_cost`` estimator (:mod:`.zc_estimator`) passes a fixed seeded
reference sample of the space, scored once, so one architecture's combined score is computable on its own.

Every network proxy but synflow and zen comes from one forward pass on the batch in train mode (plus the
backward passes each needs); zen and synflow each run a fresh copy. The batch is ``batch_size`` inputs of the
space's ``macro.input_shape``: seeded Gaussian noise with random labels (``data="noise"``, the default: needs
no dataset), or images of a registered dataset (``data="cifar10"``...), drawn with the seed. Scores are cached
per (space, settings, architecture).

:class:`ZeroCostEncoder` (encoder ``zc``) makes the classic proxies extra features; :class:`ZeroCostPredictor`
(predictors ``zc_<proxy>``) uses one proxy as a predictor: the sign is taken from the training data (a proxy
that anti-correlates is flipped) and a linear map to the target's units is fitted.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    rank_percentiles,
    read_manifest,
    space_record,
    write_manifest,
)
from nasplat.registry import register

if TYPE_CHECKING:
    import torch

    from nasplat.space import Architecture, SearchSpace

#: Every proxy, in the order features and reports use.
ALL_PROXIES: tuple[str, ...] = (
    "params", "macs", "synflow", "grad_norm", "snip", "naswot",
    "flops", "l2_norm", "jacov", "fisher", "grasp", "zen", "meco",
    "az_expressivity", "az_progressivity", "az_trainability",
)  # fmt: skip
#: The first six, the default set: what the ``zc`` encoder and the ``zc_<proxy>`` predictors offer.
PROXIES: tuple[str, ...] = ALL_PROXIES[:6]
#: AZ-NAS's four components, in the order :func:`combine` adds them (complexity = FLOPs).
AZ_COMPONENTS: tuple[str, ...] = ("az_expressivity", "az_progressivity", "az_trainability", "flops")
_COST_PROXIES = ("params", "macs", "flops")
_NETWORK_PROXIES = tuple(p for p in ALL_PROXIES if p not in _COST_PROXIES)
_PASS_PROXIES = tuple(p for p in _NETWORK_PROXIES if p not in ("synflow", "zen"))


@dataclass(frozen=True)
class ZeroCostSettings:
    """How proxies are computed: the initialisation seed, the batch size and where the batch comes from."""

    seed: int = 0
    batch_size: int = 16
    data: str = "noise"
    device: str = "cpu"  # where each network is scored ("cuda" on a GPU machine)
    #: a network that cannot run in float64 (quant layers decode to float32) gets synflow in float32 instead
    synflow_fallback: bool = False

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
        unknown = [p for p in proxies if p not in ALL_PROXIES]
        if unknown:
            raise NasplatError(f"unknown zero-cost proxy '{unknown[0]}'; allowed: {', '.join(ALL_PROXIES)}")
        key = (self.space.name, self.space.hash, self.settings, arch)
        cached = _SCORE_CACHE.setdefault(key, {}) if len(_SCORE_CACHE) < _SCORE_CACHE_MAX else {}
        todo = [p for p in proxies if p not in cached]
        if any(p in _COST_PROXIES for p in todo):
            costs = self._costs(arch)
            cached["params"] = float(costs["params_count"])
            cached["macs"] = float(costs["macs"])
            cached["flops"] = 2.0 * float(costs["macs"])
        net_todo = [p for p in todo if p in _NETWORK_PROXIES]
        if net_todo:
            t0 = time.perf_counter()
            cached.update(self._network_scores(arch, net_todo))
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

    def _network_scores(self, arch: Architecture, proxies: Sequence[str]) -> dict[str, float]:
        import torch

        dev = torch.device(self.settings.device)
        x, y = (t.to(dev) for t in self.batch())
        task = self.space.family.task(self.space)
        out: dict[str, float] = {}
        want = set(proxies)
        if want & set(_PASS_PROXIES):
            net = self.supernet().extract(arch).to(dev)
            out.update(_main_pass(net, task, x, y, want, self.settings.seed))
        if "zen" in want:
            net = self.supernet().extract(arch).to(dev)
            out["zen"] = _zen(net, task, x, y, self.settings.seed)
        if "synflow" in want:
            net = self.supernet().extract(arch).to(dev)
            out["synflow"] = _synflow(
                net, task.model_inputs((torch.ones_like(x[:1]), y[:1])), fallback=self.settings.synflow_fallback
            )
        return out


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


def _synflow(net: Any, inputs: tuple[torch.Tensor, ...], *, fallback: bool = False) -> float:
    """SynFlow of ``net`` on ``inputs``: the network's inputs built (by the family's task) from one all-ones
    image, in float64 (in float32 with ``fallback`` when the network cannot run in float64)."""
    import torch
    from torch import nn

    net.eval()  # BatchNorm with initial running statistics: the identity (up to eps)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    try:
        out = torch.sum(net.double()(*(t.double() if t.is_floating_point() else t for t in inputs)))
    except RuntimeError:
        if not fallback:
            raise
        net.zero_grad(set_to_none=True)
        out = torch.sum(net.float()(*(t.float() if t.is_floating_point() else t for t in inputs)))
    if not out.requires_grad:  # no trainable weight reaches the output
        return -math.inf
    out.backward()
    total = 0.0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())
    return math.log(total) if total > 0 else -math.inf


def _is_weighted(m: Any) -> bool:
    from torch import nn

    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def _weighted(net: Any) -> list[Any]:
    """The conv and linear modules of ``net`` whose weight is trainable (the layers the gradient proxies sum)."""
    return [
        m for m in net.modules() if _is_weighted(m) and getattr(m, "weight", None) is not None
        and m.weight.requires_grad
    ]  # fmt: skip


def _blocks(net: Any) -> list[Any]:
    """AZ-NAS's primary blocks: the network's top-level children in order, the entries of a top-level
    ``ModuleList``/``Sequential`` taken one by one (for a cell network: stem, every cell and reduction block,
    lastact; the pooling and the classifier give no feature map and drop out later)."""
    from torch import nn

    out: list[Any] = []
    for child in net.children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            out.extend(child.children())
        elif not isinstance(child, nn.ModuleDict):
            out.append(child)
    return out


def _min_corr_eig(feature: Any) -> float:
    """MeCo's term of one layer: the smallest eigenvalue of the Pearson correlation matrix between the rows of
    one sample's feature map reshaped to ``(channels, -1)`` (NaN entries of a constant row set to 0)."""
    import torch

    m = feature.reshape(feature.shape[0], -1).double()
    if m.shape[0] < 2 or m.shape[1] < 2:  # a single row or column: every correlation undefined (0)
        return 0.0
    corr = torch.nan_to_num(torch.corrcoef(m), nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


def _entropy_of_spectrum(feature: Any) -> float:
    """AZ-NAS expressivity of one block: entropy of the normalised eigenvalues of the covariance of the
    feature vectors (every pixel of every sample a ``channels``-vector); 0 for an all-constant map."""
    import torch

    b, c, h, w = feature.shape
    f = feature.permute(0, 2, 3, 1).reshape(b * h * w, c).double()
    f = f - f.mean(0, keepdim=True)
    s = torch.linalg.eigvalsh(f.T @ f / f.shape[0]).clamp_min(0.0)
    total = float(s.sum())
    if not total > 0:
        return 0.0
    p = s / total
    return float(-(p * torch.log(p + 1e-8)).sum())


def _trainability(feats: list[Any], seed: int) -> float:
    """AZ-NAS trainability: the mean over consecutive blocks of ``2 - σ - 1/σ``, ``σ`` the largest singular value
    of the block's Jacobian estimated with one Rademacher vector backpropagated from its output (input pixels
    folded to the output's resolution, as AZ-NAS's code does); an exact identity block scores ``-inf``."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    terms: list[float] = []
    for f_in, f_out in itertools.pairwise(feats):
        if not (f_out.requires_grad and f_in.requires_grad):  # a constant block (a cell cut off from its input)
            continue
        v = (torch.randint(0, 2, f_out.shape, generator=g).to(f_out) - 0.5) * 2
        (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=v, retain_graph=True, allow_unused=True)
        if g_in is None:  # not a chain (a UNet's skip): no Jacobian between the two
            continue
        if g_in.shape == v.shape and torch.equal(g_in, v):
            terms.append(-math.inf)
            continue
        if g_in.shape[2] != v.shape[2] and g_in.shape[2] % v.shape[2] == 0:
            g_in = nn.functional.pixel_unshuffle(g_in, g_in.shape[2] // v.shape[2])
        if g_in.shape[2:] != v.shape[2:]:
            continue
        n = v.shape[0] * v.shape[2] * v.shape[3]
        gi = g_in.permute(0, 2, 3, 1).reshape(n, -1).double()
        go = v.permute(0, 2, 3, 1).reshape(n, -1).double()
        sigma = float(torch.linalg.svdvals(gi.T @ go / n).max())
        terms.append(-sigma - 1.0 / (sigma + 1e-6) + 2.0)
    return float(np.mean(terms)) if terms else 0.0


def _jacov(jac: Any) -> float:
    """Mellor et al. (2020, v1): ``-sum_i [log(λ_i + k) + 1/(λ_i + k)]``, ``λ`` the eigenvalues of the correlation
    matrix of the per-input Jacobians, ``k = 1e-5``; ``-inf`` where the Jacobian is constant (no correlation)."""
    j = jac.reshape(jac.shape[0], -1).double().cpu().numpy()
    with np.errstate(all="ignore"):
        corr = np.corrcoef(j)
    if not np.all(np.isfinite(corr)):
        return -math.inf
    v = np.linalg.eigvalsh(corr)
    k = 1e-5
    with np.errstate(all="ignore"):
        score = -float(np.sum(np.log(v + k) + 1.0 / (v + k)))
    return score if math.isfinite(score) else -math.inf


def _main_pass(net: Any, task: Any, x: Any, y: Any, want: set[str], seed: int) -> dict[str, float]:
    """Every proxy that needs the network on the data batch in train mode, from one forward pass (two for a task
    that is not plain classification: its loss builds its own inputs, jacov gets a forward of its own)."""
    import torch
    from torch import nn

    from nasplat.model import ClassificationTask

    net.train()
    layers = _weighted(net)
    weights = [m.weight for m in layers]
    out: dict[str, float] = {}
    if "l2_norm" in want:
        out["l2_norm"] = float(sum(float(w.detach().norm()) for w in weights))
    patterns = _PatternKernel()
    acts: list[Any] = []
    meco: list[float] = []
    block_list = _blocks(net)
    block_out: dict[int, Any] = {}
    hooks: list[Any] = []

    def relu_hook(_m: Any, inputs: tuple[Any, ...], _o: Any) -> None:
        patterns.add(inputs[0].detach() > 0)

    def act_hook(_m: Any, _i: Any, o: Any) -> None:
        if isinstance(o, torch.Tensor) and o.requires_grad:
            acts.append(o)

    def meco_hook(_m: Any, _i: Any, o: Any) -> None:
        if isinstance(o, torch.Tensor) and o.dim() >= 3 and o.is_floating_point():
            meco.append(_min_corr_eig(o[0].detach()))

    def block_hook(m: Any, _i: Any, o: Any) -> None:
        if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[2] * o.shape[3] > 1:
            block_out[id(m)] = o

    if "naswot" in want:
        hooks += [
            m.register_forward_hook(relu_hook) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.GELU))
        ]
    if "fisher" in want:
        hooks += [m.register_forward_hook(act_hook) for m in layers]
    if "meco" in want:
        hooks += [m.register_forward_hook(meco_hook) for m in net.modules()]
    if want & {"az_expressivity", "az_progressivity", "az_trainability"}:
        hooks += [m.register_forward_hook(block_hook) for m in block_list]
    classification = isinstance(task, ClassificationTask)
    xin = x.clone().requires_grad_("jacov" in want and classification)
    net.zero_grad(set_to_none=True)
    try:
        if classification:
            logits = net(xin)
            loss = torch.nn.functional.cross_entropy(logits, y)
        else:
            loss = task.loss(net, (x, y))
    finally:
        for h in hooks:
            h.remove()
    if "naswot" in want:
        out["naswot"] = patterns.log_det()
    if "meco" in want:
        out["meco"] = float(sum(meco))
    feats = [block_out[id(m)] for m in block_list if id(m) in block_out]
    if want & {"az_expressivity", "az_progressivity"}:
        ent = [_entropy_of_spectrum(f.detach()) for f in feats]
        out["az_expressivity"] = float(sum(ent))
        diffs = [b - a for a, b in itertools.pairwise(ent)]
        out["az_progressivity"] = float(min(diffs)) if diffs else 0.0
    if "az_trainability" in want:
        out["az_trainability"] = _trainability(feats, seed)
    if "jacov" in want:
        if classification:
            jac = torch.autograd.grad(logits.sum(), xin, retain_graph=True, allow_unused=True)[0]
        else:
            inputs = [t.clone().requires_grad_(t.is_floating_point()) for t in task.model_inputs((x, y))]
            o = net(*inputs)
            jac = torch.autograd.grad(o.sum(), inputs[0], allow_unused=True)[0] if o.requires_grad else None
        out["jacov"] = _jacov(jac) if jac is not None else -math.inf
    grad_proxies = want & {"grad_norm", "snip", "fisher", "grasp"}
    if grad_proxies:
        for p in grad_proxies:
            out[p] = 0.0
        if loss.requires_grad and weights + acts:  # else no trainable weight reaches the loss
            grasp = "grasp" in want
            grads = torch.autograd.grad(loss, weights + acts, create_graph=grasp, allow_unused=True)
            gw, ga = grads[: len(weights)], grads[len(weights) :]
            with torch.no_grad():
                for w, g in zip(weights, gw):
                    if g is not None:
                        out["grad_norm"] = out.get("grad_norm", 0.0) + float(g.norm())
                        out["snip"] = out.get("snip", 0.0) + float((g * w).abs().sum())
                if "fisher" in want:
                    fisher = 0.0
                    for a, g in zip(acts, ga):
                        if g is not None:
                            prod = a * g
                            g_nk = prod.sum(tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
                            fisher += float(0.5 * g_nk.pow(2).mean(0).sum())
                    out["fisher"] = fisher
            if grasp:
                pairs = [(w, g) for w, g in zip(weights, gw) if g is not None and g.requires_grad]
                value = 0.0
                if pairs:
                    z = torch.stack([(g.detach() * g).sum() for _, g in pairs]).sum()
                    hg = torch.autograd.grad(z, [w for w, _ in pairs], allow_unused=True)
                    value = float(sum(float(-(w.detach() * h).sum()) for (w, _), h in zip(pairs, hg) if h is not None))
                out["grasp"] = value
        for p in list(out):
            if p not in want:
                del out[p]
    return out


def _zen(net: Any, task: Any, x: Any, y: Any, seed: int) -> float:
    """Zen-score (Lin et al., 2021) of ``net``'s structure: weights re-drawn from N(0, 1) (biases 0, BatchNorm
    affine 1/0), train-mode BatchNorm, two seeded Gaussian batches ``x1``, ``x2``; ``log E_b ||f(x1) - f(x1 + 0.01
    x2)||_1 + sum over BatchNorm2d layers of log sqrt(mean over channels of the batch variance)`` (measured in the
    forward of ``x1``), ``f`` the feature map entering the last global average pooling (the output otherwise)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if _is_weighted(m):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    net.train()
    x1 = torch.randn(x.shape, generator=g).to(x)
    x2 = torch.randn(x.shape, generator=g).to(x)
    pools = [m for m in net.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d))]
    captured: list[Any] = []
    bn_logs: list[float] = []
    record_bn = [True]

    def pool_hook(_m: Any, inputs: tuple[Any, ...], _o: Any) -> None:
        captured.append(inputs[0])

    def bn_hook(_m: Any, inputs: tuple[Any, ...], _o: Any) -> None:
        if record_bn[0]:
            v = inputs[0].double().var(dim=(0, 2, 3), unbiased=False).mean()
            bn_logs.append(float(0.5 * torch.log(v)) if float(v) > 0 else -math.inf)

    hooks = [m.register_forward_hook(bn_hook) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if pools:
        hooks.append(pools[-1].register_forward_hook(pool_hook))

    def features(images: Any) -> Any:
        captured.clear()
        with torch.no_grad():
            o = net(*task.model_inputs((images, y)))
        return captured[-1] if captured else o

    try:
        f1 = features(x1)
        record_bn[0] = False
        f2 = features(x1 + 0.01 * x2)
    finally:
        for h in hooks:
            h.remove()
    delta = float((f1 - f2).abs().flatten(1).sum(1).mean())
    if not delta > 0:
        return -math.inf
    return math.log(delta) + float(sum(bn_logs))


def combine(
    scores: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None = None,
    components: Sequence[str] = AZ_COMPONENTS,
) -> np.ndarray:
    """AZ-NAS's non-linear rank aggregation: ``sum over components of log(percentile)``, each percentile taken
    in ``reference`` (default: the scored population itself, as the paper ranks its candidates). Higher is better."""
    n = len(next(iter(scores.values()))) if scores else 0
    total = np.zeros(n, dtype=np.float64)
    for c in components:
        ref = scores[c] if reference is None else reference[c]
        total += np.log(rank_percentiles(scores[c], ref))
    return total


def proxy_features(values: dict[str, np.ndarray]) -> np.ndarray:
    """Proxies as features, one column per proxy in ``values`` (in :data:`PROXIES` order): ``log1p`` of params,
    MACs, grad_norm and snip; synflow (already a log) and naswot as they are; non-finite values (a cell cut
    off from its input) replaced by the column's finite minimum minus one."""
    cols = []
    for p in (p for p in ALL_PROXIES if p in values):
        v = np.asarray(values[p], dtype=np.float64)
        if p in ("params", "macs", "flops", "grad_norm", "snip", "l2_norm", "fisher"):
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
        values = zp.compute(self.prepare(space, archs), PROXIES)
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
        s = self.settings
        return {"seed": s.seed, "batch_size": s.batch_size, "data": s.data, "device": s.device}

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
