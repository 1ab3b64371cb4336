"""The zero-cost proxies added for issue 14, each against a value worked out from its paper's definition on a
tiny network, the AZ-NAS rank combination on a synthetic population, and the ``zero_cost`` estimator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.model import ClassificationTask
from nasplat.space import load_space
from nasplat_predictors import zero_cost as zc

DIGITS = Path(__file__).resolve().parent / "spaces" / "cell-digits.yaml"


def _linear_batch(b: int = 6, d: int = 5, k: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(d, k, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.randn(k, d, generator=g))
    return net, torch.randn(b, d, generator=g), torch.randint(0, k, (b,), generator=g)


def test_jacov_of_uncorrelated_and_of_identical_jacobians() -> None:
    k = 1e-5
    # zero-mean, mutually orthogonal rows: the correlation matrix is the identity, every eigenvalue 1
    rows = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    assert zc._jacov(rows) == pytest.approx(-3 * (math.log(1 + k) + 1 / (1 + k)), rel=1e-12)
    # a linear network has the same Jacobian for every input: correlation all ones, eigenvalues b, 0, ..., 0
    net, x, y = _linear_batch()
    b = x.shape[0]
    got = zc._main_pass(net, ClassificationTask(), x, y, {"jacov"}, 0)["jacov"]
    want = -((math.log(b + k) + 1 / (b + k)) + (b - 1) * (math.log(k) + 1 / k))
    assert got == pytest.approx(want, rel=1e-6)


def test_fisher_grasp_l2_norm_of_a_linear_classifier_match_their_definitions() -> None:
    net, x, y = _linear_batch()
    got = zc._main_pass(net, ClassificationTask(), x, y, {"fisher", "grasp", "l2_norm", "grad_norm", "snip"}, 0)
    w = net.weight.detach().clone()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(x @ flat.reshape(w.shape).T, y)

    # fisher (Turner et al.): 0.5 * sum over units of the batch mean of (activation * dL/dactivation)^2
    a = (x @ w.T).detach().requires_grad_(True)
    (ga,) = torch.autograd.grad(nn.functional.cross_entropy(a, y), a)
    assert got["fisher"] == pytest.approx(float(0.5 * (a.detach() * ga).pow(2).mean(0).sum()), rel=1e-5)
    # GraSP (Wang et al.): -θ ⊙ (H g), H the Hessian of the loss in the weights, g its gradient
    flat = w.flatten()
    g = torch.func.grad(loss_of)(flat)
    h = torch.func.hessian(loss_of)(flat)
    assert got["grasp"] == pytest.approx(float(-(flat * (h @ g)).sum()), rel=1e-4)
    assert got["l2_norm"] == pytest.approx(float(w.norm()), rel=1e-6)
    assert got["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
    assert got["snip"] == pytest.approx(float((g * flat).abs().sum()), rel=1e-5)


def test_zen_of_a_linear_network_is_the_log_of_its_perturbation_response() -> None:
    """No BatchNorm, a linear feature map f = W x: f(x1) - f(x1 + 0.01 x2) = -0.01 W x2, so Zen is
    log(0.01 * mean_b ||W x2_b||_1), with W and the two Gaussian batches drawn as ``_zen`` draws them."""
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    x = torch.zeros(5, 2, 4, 4)
    got = zc._zen(net, ClassificationTask(), x, torch.zeros(5, dtype=torch.long), seed=7)
    g = torch.Generator().manual_seed(8)
    wc = torch.randn(3, 2, 1, 1, generator=g)
    torch.randn(4, 3, generator=g)  # the linear layer's weights
    torch.randn(x.shape, generator=g)  # x1
    x2 = torch.randn(x.shape, generator=g)
    resp = nn.functional.conv2d(0.01 * x2, wc)
    assert got == pytest.approx(math.log(float(resp.abs().flatten(1).sum(1).mean())), rel=1e-5)


def test_meco_term_is_the_smallest_eigenvalue_of_the_channel_correlation() -> None:
    x = torch.tensor([1.0, -1, 1, -1])
    y = torch.tensor([1.0, -1, -1, 1])
    assert zc._min_corr_eig(torch.stack([x, y]).reshape(2, 2, 2)) == pytest.approx(1.0)  # uncorrelated
    assert zc._min_corr_eig(torch.stack([x, -x]).reshape(2, 2, 2)) == pytest.approx(0.0, abs=1e-12)
    rho = 1 / math.sqrt(2)  # corr(x, x + y): eigenvalues 1 ± rho
    assert zc._min_corr_eig(torch.stack([x, x + y]).reshape(2, 2, 2)) == pytest.approx(1 - rho)


def test_az_expressivity_and_trainability_on_closed_forms() -> None:
    # four pixels whose 2-channel vectors have covariance I: equal eigenvalues, entropy log 2
    pixels = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]])
    iso = pixels.T.reshape(1, 2, 2, 2)
    assert zc._entropy_of_spectrum(iso) == pytest.approx(math.log(2), abs=1e-6)
    rank1 = torch.stack([pixels[:, 0], 2 * pixels[:, 0]]).reshape(1, 2, 2, 2)
    assert zc._entropy_of_spectrum(rank1) == pytest.approx(0.0, abs=1e-6)
    # trainability: a block y = 2x on one channel has σ = 2 exactly: 2 - σ - 1/σ = -0.5; an identity block -inf
    f0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    f1 = 2 * f0
    assert zc._trainability([f0, f1], seed=0) == pytest.approx(2 - 2 - 1 / (2 + 1e-6), rel=1e-9)
    f2 = f1.view_as(f1)
    assert zc._trainability([f1, f2], seed=0) == -math.inf


def test_rank_combination_on_a_synthetic_population() -> None:
    scores = {
        "a": np.array([1.0, 2.0, 3.0, 4.0]),
        "b": np.array([40.0, 30.0, 20.0, 10.0]),
        "c": np.array([0.1, 0.4, 0.3, 0.2]),
    }
    n = 4
    ranks = {"a": [1, 2, 3, 4], "b": [4, 3, 2, 1], "c": [1, 4, 3, 2]}  # 1 = lowest score
    want = [sum(math.log(ranks[c][i] / (n + 1)) for c in scores) for i in range(n)]
    got = zc.combine(scores, components=list(scores))
    assert np.allclose(got, want)
    # against a fixed reference one architecture's score needs only its own values; ties count half
    ref = {"a": np.array([0.0, 2.0, 5.0]), "b": np.array([5.0, 15.0, 35.0])}
    one = zc.combine({"a": np.array([2.0]), "b": np.array([-math.inf])}, ref, components=["a", "b"])
    assert one[0] == pytest.approx(math.log((1 + 0.5 + 0.5) / 4) + math.log(0.5 / 4))
    assert zc.rank_percentiles(np.array([np.nan]), np.array([0.0]))[0] == pytest.approx(0.25)


def test_zero_cost_estimator_is_deterministic_and_rejects_unknown_options() -> None:
    space = load_space(DIGITS)
    opts = {"batch_size": 8, "reference": 4, "proxies": ["jacov", "naswot", "flops"]}
    archs = [space.sample(np.random.default_rng(i)) for i in range(3)]
    est = registry.build("estimator", "zero_cost", space, options=opts)
    assert est.metrics() == {"zc_jacov": "maximize", "zc_naswot": "maximize", "zc_flops": "maximize",
                             "zero_cost": "maximize"}  # fmt: skip
    first = est.evaluate(archs)
    zc._SCORE_CACHE.clear()
    again = registry.build("estimator", "zero_cost", space, options=opts).evaluate(archs[::-1])[::-1]
    assert first == again
    assert est.evaluate(archs[1:2]) == first[1:2]
    assert est.provenance()["dataset"] == "noise"  # 1x8x8 images: cifar10 does not fit, the default falls back
    with pytest.raises(NasplatError, match="batch_sz"):
        registry.build("estimator", "zero_cost", space, options={"batch_sz": 8})
    with pytest.raises(NasplatError, match="unknown proxy 'nope'"):
        registry.build("estimator", "zero_cost", space, options={"proxies": ["nope"]})
