"""The analytical cost model against real modules: parameters, hook-counted MACs, BOPs, formats."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.measure import LayerRecord
from nasplat.space import SearchSpace, load_space
from nasplat_estimators.analytical import METRICS, AnalyticalCostModel, count_costs

SPACES = Path(__file__).parent / "spaces"


@pytest.fixture(scope="module", params=["cell-digits", "nb201-cpu"])
def space(request: pytest.FixtureRequest) -> SearchSpace:
    if request.param == "cell-digits":
        return load_space(SPACES / "cell-digits.yaml")
    return load_space(request.param)


def hook_macs(module: nn.Module, x: torch.Tensor) -> int:
    """MACs of every Conv2d and Linear over one real forward pass (batch 1)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features * (out.numel() // m.out_features)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


def random_archs(space: SearchSpace, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_registered() -> None:
    assert registry.get("cost_model", "analytical") is AnalyticalCostModel
    model = AnalyticalCostModel()
    assert model.devices() is None
    model.check_device(None)
    with pytest.raises(NasplatError, match="has no devices"):  # a device would mean nothing: said, not ignored
        model.check_device("anything")


def test_params_and_macs_match_real_modules(space: SearchSpace) -> None:
    supernet = space.family.build_supernet(space)
    model = AnalyticalCostModel()
    c, h, w = space.macro.input_shape  # type: ignore[attr-defined]
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    archs = random_archs(space, 12, seed=1)
    archs.append(space.make({label: "none" for label in space.labels}))
    archs.append(space.make({label: "nor_conv_3x3" for label in space.labels}))
    for arch in archs:
        costs = model.estimate(space, arch)
        assert set(costs) == set(METRICS)
        module = supernet.extract(arch)
        assert costs["params_count"] == sum(p.numel() for p in module.parameters()), space.to_string(arch)
        assert costs["macs"] == hook_macs(module, x), space.to_string(arch)
        assert costs["bops"] == 32 * 32 * costs["macs"]
        assert costs["model_bytes"] == 4 * costs["params_count"]
        assert costs["peak_activation_bytes"] <= costs["activation_bytes"] + 4 * c * h * w


def test_cached_results_are_copies(space: SearchSpace) -> None:
    model = AnalyticalCostModel()
    arch = random_archs(space, 1, seed=3)[0]
    first = model.estimate(space, arch)
    first["macs"] = -1.0
    assert model.estimate(space, arch)["macs"] >= 0
    assert model.estimate(space, arch) == count_costs(space.family.layers(space, arch))


def test_more_edges_cost_more(space: SearchSpace) -> None:
    model = AnalyticalCostModel()
    empty = model.estimate(space, space.make({label: "none" for label in space.labels}))
    full = model.estimate(space, space.make({label: "nor_conv_3x3" for label in space.labels}))
    for metric in ("macs", "params_count", "bops", "activation_bytes"):
        assert full[metric] > empty[metric] > 0


def test_count_costs_closed_forms() -> None:
    conv = LayerRecord("c", "conv2d", 8, 16, (10, 10), (5, 5), kernel=3, stride=2, groups=2, bias=True)
    lin = LayerRecord("l", "linear", 16, 10, (1, 1), (1, 1), bias=True, weight_format="int8", act_format="int4")
    bn = LayerRecord("b", "batchnorm", 16, 16, (5, 5), (5, 5))
    bn_plain = LayerRecord("b2", "batchnorm", 16, 16, (5, 5), (5, 5), extra=(("affine", 0),))
    attn = LayerRecord("a", "attention", 32, 32, (2, 3), (2, 3), heads=4)
    skip = LayerRecord("s", "identity", 16, 16, (5, 5), (5, 5))
    costs = count_costs([conv, lin, bn, bn_plain, attn, skip])
    conv_macs = 5 * 5 * 16 * 4 * 9
    attn_macs = 4 * 6 * 32 * 32 + 2 * 36 * 32
    assert costs["macs"] == conv_macs + 160 + attn_macs
    assert costs["params_count"] == (16 * 4 * 9 + 16) + (160 + 10) + 32 + (4 * 32 * 32)
    assert costs["bops"] == 32 * 32 * conv_macs + 8 * 4 * 160 + 32 * 32 * attn_macs
    assert costs["model_bytes"] == 4 * (16 * 4 * 9 + 16) + (160 + 10) + 4 * 32 + 4 * (4 * 32 * 32)
    out_bytes = 4 * 16 * 25 + 10 * 4 / 8 + 4 * 16 * 25 * 2 + 4 * 32 * 6
    assert costs["activation_bytes"] == out_bytes
    assert costs["peak_activation_bytes"] == 4 * (8 * 100 + 16 * 25)
    assert count_costs([]) == dict.fromkeys(METRICS, 0.0)


def test_extra_overrides() -> None:
    rec = LayerRecord("m", "matmul", 4, 4, (1, 1), (1, 1), extra=(("macs", 7.0), ("params_count", 3.0)))
    costs = count_costs([rec])
    assert costs["macs"] == 7 and costs["params_count"] == 3


def test_unknown_format_rejected() -> None:
    with pytest.raises(NasplatError, match="unknown number format 'int3'"):
        LayerRecord("c", "conv2d", 3, 3, (4, 4), (4, 4), weight_format="int3")
    # a record forged past its own validation is still refused when counted
    rec = LayerRecord("c", "conv2d", 3, 3, (4, 4), (4, 4))
    object.__setattr__(rec, "act_format", "float7")
    with pytest.raises(NasplatError, match="unknown number format 'float7'"):
        count_costs([rec])
    object.__setattr__(rec, "act_format", "float32")
    object.__setattr__(rec, "op", "warp")
    with pytest.raises(NasplatError, match="unknown op 'warp'"):
        count_costs([rec])


def test_throughput_nb201() -> None:
    """Fresh architectures are bounded by the family's ``layers``; repeated ones are a cache look-up.

    The thresholds are loose (a shared 2-core CI machine); benchmarks measure the real numbers.
    """
    space = load_space("nb201")
    archs = list(space.enumerate())[:1000]
    model = AnalyticalCostModel()
    start = time.perf_counter()
    cold = [model.estimate(space, arch) for arch in archs]
    cold_rate = len(archs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(10):
        warm = [model.estimate(space, arch) for arch in archs]
    warm_rate = 10 * len(archs) / (time.perf_counter() - start)
    assert warm == cold
    assert cold_rate > 200, f"{cold_rate:.0f} fresh architectures/s"
    assert warm_rate > 10_000, f"{warm_rate:.0f} cached architectures/s"
