"""The quant family: policy spaces over a base network, fake quantization, per-precision BN, export, search."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

import nasplat_search_spaces  # noqa: F401 - registers the families
from nasplat.errors import NasplatError, SpecError
from nasplat.space import load_space
from nasplat_estimators.analytical import AnalyticalCostModel
from nasplat_search_spaces.quant.standalone import (
    FORMATS,
    act_scale,
    decode_weight,
    encode_weight,
    quantize_act,
)
from nasplat_search_spaces.quant.supernet import fake_quant_act, fake_quant_weight

SPACES = Path(__file__).parent / "spaces"
RESNET = SPACES / "quant-resnet-digits.yaml"
JOINT = SPACES / "quant-cell-digits.yaml"


def uniform(space, fmt: str, a_fmt: str | None = None, base=None):  # type: ignore[no-untyped-def]
    values = {} if base is None else dict(base)
    for d in space.dimensions:
        if d.label.startswith("q."):
            want = fmt if d.label.endswith(".w") else (a_fmt or fmt)
            values[d.label] = want
        elif d.label not in values:
            values[d.label] = d.choices[-1]
    return space.make(values)


# ------------------------------------------------------------------------------------------------------------
# declarations


def test_spaces_load_and_string_form() -> None:
    """String round trips are the family conformance suite's (tests/plugins); here: what the strings look like."""
    for path in (RESNET, JOINT):
        assert load_space(path).spec.family == "quant"
    joint = load_space(JOINT)
    arch = joint.sample(np.random.default_rng(1))
    assert " :: " in joint.to_string(arch) and joint.to_string(arch).startswith("|")
    shipped = load_space("quant-resnet8-fmnist")
    assert len(shipped.dimensions) == 20
    joint_shipped = load_space("quant-nb201-cpu")  # joint search over the nb201-cpu cells
    assert len(joint_shipped.dimensions) == 6 + 14


def _write(tmp_path: Path, data: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _resnet_data() -> dict:  # type: ignore[type-arg]
    data: dict = yaml.safe_load(RESNET.read_text())  # type: ignore[type-arg]
    return data


def test_bad_declarations_name_file_and_key(tmp_path: Path) -> None:
    data = _resnet_data()
    data["dimensions"][0]["choices"] = ["int2", "int3", "float32"]
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as err:
        load_space(path)
    assert str(path) in str(err.value) and "dimensions[0].choices[1]" in str(err.value) and "int3" in str(err.value)

    data = _resnet_data()
    data["dimensions"][1]["choices"] = ["float32", "int8"]  # high to low
    with pytest.raises(SpecError, match=r"dimensions\[1\].choices.*low to high"):
        load_space(_write(tmp_path, data))

    data = _resnet_data()
    data["dimensions"][0]["labels"][0] = "q.nonexistent.w"
    with pytest.raises(SpecError, match=r"dimensions\[0\].labels\[0\].*unknown dimension 'q.nonexistent.w'"):
        load_space(_write(tmp_path, data))

    data = _resnet_data()
    data["dimensions"][1]["labels"].pop()
    with pytest.raises(SpecError, match=r"missing dimensions: q\.fc\.a"):
        load_space(_write(tmp_path, data))

    data = _resnet_data()
    data["macro"]["slots"] = {"convs": ["*conv*"]}
    with pytest.raises(SpecError, match="layer 'fc' matches no slot"):
        load_space(_write(tmp_path, data))

    data = _resnet_data()
    data["macro"]["bn_groups"] = [["float32", "bfloat16"], ["int8", "int4"]]
    with pytest.raises(SpecError, match=r"is in no macro.bn_groups group"):
        load_space(_write(tmp_path, data))

    joint = yaml.safe_load(JOINT.read_text())
    joint["macro"]["base_space"] = str(SPACES / "cell-digits.yaml")
    joint["dimensions"][0]["choices"] = ["none", "nor_conv_3x3"]
    with pytest.raises(SpecError, match=r"dimensions\[0\].*as in the base space"):
        load_space(_write(tmp_path, joint))
    joint = yaml.safe_load(JOINT.read_text())
    joint["macro"]["base_space"] = str(SPACES / "cell-digits.yaml")
    joint["macro"]["num_classes"] = 7
    with pytest.raises(SpecError, match=r"macro\.num_classes"):
        load_space(_write(tmp_path, joint))


def test_extremes_and_canonical() -> None:
    space = load_space(JOINT)
    big, small = space.family.extremes(space)
    assert all(big[d.label] == "float32" for d in space.dimensions if d.label.startswith("q."))
    assert small["q.stem.w"] == "int2" and small["q.stem.a"] == "int4"
    assert big["cell.edge_1_0"] == "nor_conv_3x3"
    # a cell without convolutions leaves the stage-1/2 slots unused: their policy is normalised away
    values = dict(uniform(space, "int8").as_dict())
    values.update({f"cell.edge_{e}": "skip_connect" for e in ("1_0", "2_0", "2_1", "3_0", "3_1", "3_2")})
    a = space.make({**values, "q.stage1.w": "int4"})
    b = space.make({**values, "q.stage1.w": "float32"})
    assert a != b and space.family.canonical(space, a) == space.family.canonical(space, b)
    assert space.family.canonical(space, a)["q.reduce.w"] == "int8"  # used slots are kept


# ------------------------------------------------------------------------------------------------------------
# numerics


def test_weight_quantization_error_bounds_and_storage() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=gen)
    amax = w.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
    for fmt, levels in (("int8", 127), ("int4", 7), ("int2", 1)):
        stored, scale = encode_weight(w, fmt)
        assert stored.dtype == torch.int8 and int(stored.abs().max()) <= levels
        assert torch.allclose(scale.view(-1, 1, 1, 1), amax / levels)
        err = (decode_weight(stored, scale, fmt) - w).abs()
        assert bool((err <= amax / levels / 2 + 1e-7).all()), fmt
    err8 = (decode_weight(*encode_weight(w, "int8"), "int8") - w).abs().max()
    err4 = (decode_weight(*encode_weight(w, "int4"), "int4") - w).abs().max()
    assert err8 < err4 / 8
    stored, scale = encode_weight(w, "fp8_e4m3")
    assert stored.dtype == torch.float8_e4m3fn and scale is not None
    rel = ((decode_weight(stored, scale, "fp8_e4m3") - w).abs() / w.abs().clamp_min(1e-3)).median()
    assert float(rel) < 0.07  # 3 mantissa bits
    stored, _ = encode_weight(w, "bfloat16")
    assert stored.dtype == torch.bfloat16
    assert torch.equal(decode_weight(*encode_weight(w, "float32"), "float32"), w)
    zero = torch.zeros(2, 3)
    assert torch.equal(decode_weight(*encode_weight(zero, "int4"), "int4"), zero)  # no division by zero


def test_activation_quantization_signed_and_unsigned() -> None:
    x = torch.linspace(-2, 6, 101)
    lo, hi = torch.tensor(-2.0), torch.tensor(6.0)
    s = act_scale(lo, hi, "int4", signed=True)
    y = quantize_act(x, "int4", s, True)
    assert len(torch.unique(y)) <= 15 and float((y - x).abs().max()) <= float(s) / 2 + 1e-6
    relu = x.clamp_min(0)
    s_u = act_scale(torch.tensor(0.0), hi, "int4", signed=False)
    assert float(s_u) == pytest.approx(6.0 / 15)
    y_u = quantize_act(relu, "int4", s_u, False)
    assert len(torch.unique(y_u)) <= 16 and float((y_u - relu).abs().max()) <= float(s_u) / 2 + 1e-6
    # values beyond the calibrated range are clamped
    s8 = act_scale(lo, hi, "int8", signed=True)
    assert float(quantize_act(torch.tensor([100.0]), "int8", s8, True)) == pytest.approx(6.0)
    assert torch.equal(quantize_act(x, "float32", None, True), x)
    assert quantize_act(x, "bfloat16", None, True).dtype == torch.float32


def test_straight_through_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 5, generator=gen, requires_grad=True)
    g = torch.randn(6, 5, generator=gen)
    for fmt in ("int2", "int4", "int8", "fp8_e5m2", "bfloat16"):
        w.grad = None
        wq = fake_quant_weight(w, fmt)
        assert not torch.equal(wq.detach(), w.detach())
        (wq * g).sum().backward()
        assert w.grad is not None and torch.equal(w.grad, g), fmt  # passes straight through
    x = torch.tensor([-3.0, -0.5, 0.2, 0.9, 5.0], requires_grad=True)
    scale = torch.tensor(1.0 / 7)  # int4 signed: range [-1, 1]
    fake_quant_act(x, "int4", scale, True).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clipped outside the range


# ------------------------------------------------------------------------------------------------------------
# the supernet


def test_policies_share_one_set_of_weights() -> None:
    space = load_space(RESNET)
    net = space.family.build_supernet(space, seed=0)
    from nasplat_search_spaces.quant.standalone import ResNet8

    plain = ResNet8({"input_shape": [1, 8, 8], "num_classes": 10, "width": 4})
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net.eval()
    outs = {}
    for fmt in ("float32", "int8", "int2"):
        with torch.no_grad(), net.activate(uniform(space, fmt)):
            outs[fmt] = net(x)
    assert not torch.allclose(outs["float32"], outs["int2"])
    assert (outs["float32"] - outs["int8"]).abs().max() < (outs["float32"] - outs["int2"]).abs().max()
    # a gradient step under one policy changes what every policy computes
    net.train()
    stem = net.base.get_submodule("stem.conv").weight
    before = stem.detach().clone()
    with net.activate(uniform(space, "int4")):
        net(x).square().sum().backward()
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    with torch.no_grad():
        stem -= 0.1 * stem.grad
    net.eval()
    with torch.no_grad(), net.activate(uniform(space, "float32")):
        after = net(x)
    assert not torch.equal(before, stem.detach()) and not torch.allclose(after, outs["float32"])


def test_per_precision_batchnorm_statistics() -> None:
    space = load_space(RESNET)
    net = space.family.build_supernet(space, seed=0)
    bn = net.base.get_submodule("stem.bn")
    assert {"running_mean_int4", "running_mean_int2", "running_mean_int8"} <= set(dict(bn.named_buffers()))
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    net.train()
    with torch.no_grad(), net.activate(uniform(space, "int4")):
        net(x)
    assert float(bn.running_mean_int4.abs().sum()) > 0
    assert float(bn.running_mean.abs().sum()) == 0 and float(bn.running_mean_int2.abs().sum()) == 0
    assert int(bn.num_batches_tracked_int4) == 1 and int(bn.num_batches_tracked) == 0
    with torch.no_grad(), net.activate(uniform(space, "float32")):
        net(x)
    assert float(bn.running_mean.abs().sum()) > 0 and int(bn.num_batches_tracked_int4) == 1
    # int8 and fp8_e4m3 weights share statistics by default
    with torch.no_grad(), net.activate(uniform(space, "fp8_e4m3", "float32")):
        net(x)
    assert int(bn.num_batches_tracked_int8) == 1
    # BN recalibration resets every group
    bn.reset_running_stats()
    assert float(bn.running_mean_int4.abs().sum()) == 0 and int(bn.num_batches_tracked_int4) == 0
    # the extracted network carries the statistics of the group its policy uses
    with torch.no_grad(), net.activate(uniform(space, "int4")):
        net(x)
    model = net.extract(uniform(space, "int4"))
    assert torch.equal(model.base.get_submodule("stem.bn").running_mean, bn.running_mean_int4)


def test_layers_carry_formats_and_costs_drop_with_precision() -> None:
    space = load_space(RESNET)
    model = AnalyticalCostModel()
    costs = {f: model.estimate(space, uniform(space, f)) for f in ("float32", "bfloat16", "int8", "int4", "int2")}
    for f in ("int8", "int4"):
        recs = space.family.layers(space, uniform(space, f))
        convs = [r for r in recs if r.op in ("conv2d", "linear")]
        assert len(convs) == 10 and all(r.weight_format == f and r.act_format == f for r in convs)
        assert all(r.weight_format == "float32" for r in recs if r.op == "batchnorm")
    order = ["float32", "bfloat16", "int8", "int4", "int2"]
    for hi, lo in itertools.pairwise(order):
        assert costs[lo]["bops"] < costs[hi]["bops"] and costs[lo]["model_bytes"] < costs[hi]["model_bytes"]
    assert costs["int8"]["macs"] == costs["float32"]["macs"]
    assert costs["float32"]["bops"] == pytest.approx(16 * costs["int8"]["bops"])
    joint = load_space(JOINT)
    recs = joint.family.layers(joint, uniform(joint, "int4", "int8"))
    assert {r.weight_format for r in recs if r.op == "conv2d"} == {"int4"}


# ------------------------------------------------------------------------------------------------------------
# export


def test_export_bundle_stores_integers_and_loads_without_nasplat(tmp_path: Path) -> None:
    from nasplat.export import export_bundle

    space = load_space(RESNET)
    net = space.family.build_supernet(space, seed=0)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    net.train()
    with net.activate(uniform(space, "int8")):
        net(x)
    values = uniform(space, "int8").as_dict()
    values.update({"q.blocks_0_conv1.w": "int4", "q.blocks_1_conv1.w": "fp8_e4m3", "q.fc.w": "bfloat16"})
    values.update({"q.blocks_2_conv1.w": "int2", "q.blocks_2_conv2.a": "fp8_e5m2", "q.stem_conv.w": "float32"})
    arch = space.make(values)
    out = tmp_path / "bundle"
    result = export_bundle(
        net, arch, out, metrics={"accuracy": 50.0}, provenance={}, example_input=x, onnx=True,
        extras=space.family.bundle_extras(space, arch),
    )  # fmt: skip
    assert result.onnx is not None and result.onnx_dynamic_batch
    with safe_open(str(out / "weights.safetensors"), framework="pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert dtypes["base.blocks.0.conv2.weight"] == torch.int8
    assert dtypes["base.blocks.0.conv1.weight"] == torch.int8  # int4 values, one per byte
    assert dtypes["base.blocks.1.conv1.weight"] == torch.float8_e4m3fn
    assert dtypes["base.fc.weight"] == torch.bfloat16 and dtypes["base.stem.conv.weight"] == torch.float32
    assert dtypes["base.blocks.0.conv2.weight_scale"] == torch.float32
    config = json.loads((out / "config.json").read_text())
    assert config["layers"]["blocks.2.conv1"]["w"] == "int2"
    assert config["layers"]["stem.conv"]["signed"] is True  # the random input goes below zero
    assert config["layers"]["blocks.0.conv1"]["signed"] is False  # after a ReLU: unsigned integers
    run_md = (out / "RUN.md").read_text()
    assert "blocks_2_conv1" in run_md and "int2" in run_md

    net.eval()
    with torch.no_grad(), net.activate(arch):
        expected = net(x)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('l', r'{out / 'load.py'}')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"model = m.load(r'{out}')\n"
        f"y = model(torch.load(r'{tmp_path / 'x.pt'}', weights_only=True))\n"
        f"torch.save(y, r'{tmp_path / 'y.pt'}')\n"
        "assert not [k for k in sys.modules if k.startswith('nasplat')]\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    assert float((got.detach() - expected).abs().max()) <= 1e-5


def test_joint_export_embeds_the_base_source(tmp_path: Path) -> None:
    from nasplat.export import export_bundle

    space = load_space(JOINT)
    net = space.family.build_supernet(space, seed=0)
    arch = space.sample(np.random.default_rng(3))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    export_bundle(net, arch, tmp_path / "b", metrics={}, provenance={}, example_input=x, onnx=False)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["base"]["kind"] == "source" and "def build_model" in config["base"]["source"]
    assert "import nasplat" not in config["base"]["source"]


# ------------------------------------------------------------------------------------------------------------
# training and search


def _digits(n_train: int, n_val: int):  # type: ignore[no-untyped-def]
    from nasplat.datasets import DataSpec, load_splits

    return load_splits(
        DataSpec.model_validate({"name": "digits", "n_train": n_train, "n_val": n_val, "batch_size": 32})
    )


@pytest.mark.parametrize("strategy", ["uniform", "sandwich"])
def test_train_supernet_steps(tmp_path: Path, strategy: str) -> None:
    from nasplat import registry
    from nasplat.model import evaluate_subnet
    from nasplat.train import TrainSettings, train_supernet

    if strategy not in registry.available("strategy"):
        pytest.skip(f"strategy '{strategy}' is not registered in this checkout")
    space = load_space(JOINT)
    net = space.family.build_supernet(space, seed=0)
    train, val = _digits(256, 128)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.05, strategy=strategy, max_steps_per_epoch=6, seed=0)
    result = train_supernet(net, space.family.task(space), train, settings, tmp_path / "run", progress=False)
    assert result.epochs_done == 1 and all(np.isfinite(h["loss"]) for h in result.history)
    after = net.state_dict()
    assert not torch.equal(before["base.stem.conv.weight"], after["base.stem.conv.weight"])
    assert int(after["base.stem.conv.act_seen"]) > 0
    arch = uniform(space, "int8")
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    m1 = evaluate_subnet(net, arch, space.family.task(space), val, train, batch_size=64, calib_batches=2)
    for k, v in net.state_dict().items():  # evaluation leaves the supernet as it was
        assert torch.equal(v, saved[k]), k
    assert 0.0 <= m1["accuracy"] <= 100.0


@pytest.mark.slow
def test_small_search_end_to_end(tmp_path: Path) -> None:
    from nasplat.search import parse_run, run_search
    from nasplat.study import load_study, make_storage

    run = parse_run(
        {
            "space": str(RESNET),
            "dataset": {"name": "digits", "n_train": 384, "n_val": 192, "batch_size": 64},
            "supernet": {"train": {"epochs": 1, "max_steps_per_epoch": 5}},
            "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
            "objectives": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "model_bytes", "direction": "minimize", "cost_model": "analytical"},
            ],
            "sampler": {"name": "nsga2", "options": {"population_size": 6}},
            "trials": 8,
            "batch_size": 4,
            "run_dir": str(tmp_path / "run"),
            "study": "quant",
        }
    )
    result = run_search(run, log=lambda _msg: None, progress=False)
    assert result.completed >= 8
    study = load_study(make_storage(run.storage_url), "quant")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 8
    space = load_space(RESNET)
    sizes = set()
    for t in done:
        arch = space.from_string(t.user_attrs["arch_string"])
        assert 0 <= t.values[0] <= 100
        assert t.values[1] == pytest.approx(AnalyticalCostModel().estimate(space, arch)["model_bytes"])
        sizes.add(t.values[1])
    assert len(sizes) > 1


def test_unknown_policy_string_is_refused() -> None:
    space = load_space(RESNET)
    with pytest.raises(NasplatError, match="unknown slot"):
        space.from_string("nope:i8/i8")
    with pytest.raises(NasplatError, match="slot:w/a"):
        space.from_string("stem_conv:i9/i8")
    assert set(FORMATS) >= {"int2", "int4", "int8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float32"}
