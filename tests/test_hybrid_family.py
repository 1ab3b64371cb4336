"""The hybrid CNN-transformer family: spaces, string form, canonical form, elastic ops, supernet == extracted,
layer records against the real modules, export to ONNX, sandwich training and a search end to end."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nasplat.datasets import ArrayDataset, DataSpec, load_splits
from nasplat.errors import NasplatError, SpecError
from nasplat.export import check_standalone_source, export_bundle
from nasplat.model import ClassificationTask, evaluate_subnet, recalibrate_bn
from nasplat.space import Architecture, SearchSpace, list_spaces, load_space, parse_space
from nasplat.train import TrainSettings, make_strategy, train_supernet
from nasplat_search_spaces.hybrid import HybridFamily, HybridSupernet, config_records
from nasplat_search_spaces.hybrid import standalone as standalone_module
from nasplat_search_spaces.hybrid.supernet import ElasticBatchNorm2d, ElasticLayerNorm

TINY = Path(__file__).parent / "spaces" / "hybrid-tiny.yaml"
HYBRID_DIR = Path(__file__).resolve().parent.parent / "search_spaces" / "hybrid"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread (two threads spin and crawl when the cores are busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return load_space(TINY)


@pytest.fixture(scope="module")
def cpu() -> SearchSpace:
    return load_space("hybrid-cpu")


@pytest.fixture(scope="module")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_splits(DataSpec(name="digits", n_train=512, n_val=256, seed=0))


def randomize_norms(module: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics for every BatchNorm and LayerNorm (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def random_archs(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def with_kind(space: SearchSpace, kind: str, seed: int = 0) -> Architecture:
    """A random architecture whose blocks are all of ``kind``."""
    values = random_archs(space, 1, seed)[0].as_dict()
    for label in space.labels:
        if label.endswith(".type"):
            values[label] = kind
    return space.make(values)


# spaces ----------------------------------------------------------------------------------------------------------


def test_spaces_load(tiny: SearchSpace, cpu: SearchSpace) -> None:
    assert {"hybrid-cpu", "hybrid-cifar"} <= set(list_spaces())
    cifar = load_space("hybrid-cifar")
    assert load_space(HYBRID_DIR / "hybrid-cpu.yaml").hash == cpu.hash
    for space, blocks, downs in ((tiny, 3, 1), (cpu, 5, 2), (cifar, 8, 3)):
        assert isinstance(space.family, HybridFamily)
        assert isinstance(space.family.task(space), ClassificationTask)
        assert not space.constraints  # every combination is a network (Optuna samplers ignore constraints)
        assert sum(1 for label in space.labels if label.endswith(".type")) == blocks
        assert sum(1 for label in space.labels if label.startswith("downsample.")) == downs
    assert cifar.macro.input_shape == (3, 32, 32)  # type: ignore[attr-defined]
    assert cpu.macro.input_shape == (1, 28, 28)  # type: ignore[attr-defined]
    # the largest CIFAR network: 32 -> 16 -> 8 -> 4 pixels, widths up to 128
    largest, _ = cifar.family.extremes(cifar)
    cfg = HybridSupernet.config(cifar.family.build_supernet(cifar), largest)
    assert [b["width"] for b in cfg["blocks"]][-1] == 128
    assert [b["stride"] for b in cfg["blocks"]] == [1, 1, 2, 1, 2, 1, 2, 1]


GOOD: dict[str, Any] = yaml.safe_load(TINY.read_text())


def _changed(edit: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    edit(data)
    return data


def _dims(data: dict[str, Any]) -> list[dict[str, Any]]:
    return data["dimensions"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            _changed(lambda d: _dims(d)[1]["labels"].append("block_3.depth")),
            "dimensions[1].labels[3]",
            "unknown dimension 'block_3.depth'",
        ),
        (
            _changed(lambda d: _dims(d)[1].update(labels=["block_1.width", "block_2.width"])),
            "dimensions",
            "missing dimension 'block_3.width'",
        ),
        (
            _changed(lambda d: _dims(d)[2].update(choices=[3, 4])),
            "dimensions[2].labels[0]",
            "4 is even",
        ),
        (
            _changed(lambda d: _dims(d)[0].update(choices=["conv", "mbconv"])),
            "dimensions[0].labels[0]",
            "unknown block type 'mbconv'",
        ),
        (
            _changed(lambda d: _dims(d)[1].update(type="categorical")),
            "dimensions[1].labels[0]",
            "must be ordinal or integer",
        ),
        (
            _changed(lambda d: _dims(d).append({"type": "ordinal", "label": "downsample.at_2", "choices": [3]})),
            "dimensions[6]",
            "every choice must come after every choice of 'downsample.at_1'",
        ),
        (
            _changed(lambda d: _dims(d)[5].update(choices=[2, 7])),
            "dimensions[5]",
            "block numbers 1..3",
        ),
        (
            _changed(lambda d: _dims(d)[0].update(choices=["conv"])),
            "dimensions[3].labels[0]",
            "'block_1.heads' has no effect",
        ),
        (
            _changed(lambda d: _dims(d)[4].update(choices=[1, -2])),
            "dimensions[4].labels[0]",
            "positive numbers",
        ),
        (_changed(lambda d: d["macro"].update(stem_stride=3)), "macro.stem_stride", ""),
        (_changed(lambda d: d["macro"].update(heads=2)), "macro", "unknown key"),
    ],
)
def test_bad_spaces_name_the_key(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_space(data, "bad.yaml")
    assert info.value.file == "bad.yaml"
    assert info.value.key.startswith(key), str(info.value)
    assert message in str(info.value)


def test_conv_only_blocks_need_no_attention_dimensions() -> None:
    def conv_only(d: dict[str, Any]) -> None:
        _dims(d)[0]["choices"] = ["conv"]
        del _dims(d)[4], _dims(d)[3]

    space = parse_space(_changed(conv_only), "conv.yaml")
    arch = random_archs(space, 1, 0)[0]
    assert all(tok.lstrip("/").startswith("c") for tok in space.to_string(arch).split())


# strings and canonical form --------------------------------------------------------------------------------------


def test_string_form(tiny: SearchSpace, cpu: SearchSpace) -> None:
    """Round trips of every hybrid space are the family conformance suite's (tests/plugins); here: what the
    string of a round trip is (the canonical form), and how the tokens read."""
    for space in (tiny, cpu):
        for arch in random_archs(space, 20, 1):
            assert space.from_string(space.to_string(arch)) == space.family.canonical(space, arch)
    arch = tiny.from_string("c8k5 /a4h2r1.5 a8h1r2")
    assert arch["block_1.type"] == "conv" and arch["block_1.kernel"] == 5
    assert arch["block_2.mlp_ratio"] == 1.5 and arch["downsample.at_1"] == 2
    assert arch["block_1.heads"] == 1 and arch["block_1.mlp_ratio"] == 1  # unused: first choice


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("c8k5 /a4h2r1.5", "has 3 blocks, the string 2"),
        ("c8k5 a4h2r1.5 a8h1r2", "halves the resolution 1 times, the string 0"),
        ("c8k5 /a4h2r1.5 /a8h1r2", "halves the resolution 1 times, the string 2"),
        ("c8k7 /a4h2r1.5 a8h1r2", "block_1.kernel = 7 is not in space"),
        ("c8k5 /m4 a8h1r2", "neither"),
        ("/c8k5 a4h2r1.5 a8h1r2", "downsample.at_1"),
    ],
)
def test_malformed_strings_are_rejected(tiny: SearchSpace, text: str, match: str) -> None:
    with pytest.raises(NasplatError, match=match):
        tiny.from_string(text)


def test_canonical_ignores_unused_settings(tiny: SearchSpace) -> None:
    net = tiny.family.build_supernet(tiny, seed=0).eval()
    randomize_norms(net, 0)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    base = tiny.from_string("c8k5 /a4h2r1.5 a8h1r2").as_dict()
    other = dict(base, **{"block_1.heads": 2, "block_1.mlp_ratio": 2, "block_2.kernel": 5})
    a, b = tiny.make(base), tiny.make(other)
    assert a != b
    assert tiny.family.canonical(tiny, b) == a == tiny.family.canonical(tiny, a)
    with torch.no_grad(), net.activate(a):
        ya = net(x)
    with torch.no_grad(), net.activate(b):
        yb = net(x)
    assert torch.equal(ya, yb)
    assert tiny.family.layers(tiny, a) == tiny.family.layers(tiny, b)


def test_describe_lists_blocks(tiny: SearchSpace) -> None:
    from nasplat_dashboards.figures import graph_figure

    arch = tiny.from_string("c8k5 /a4h2r1.5 a8h1r2")
    d = tiny.family.describe(tiny, arch)
    assert json.loads(json.dumps(d)) == d
    blocks = d["blocks"]
    assert isinstance(blocks, list)
    assert [b["kind"] for b in blocks] == ["conv", "attn", "attn"]
    assert [b["downsample"] for b in blocks] == [False, True, False]
    assert [b["input_hw"] for b in blocks] == [[8, 8], [8, 8], [4, 4]]
    assert blocks[1]["mlp_hidden"] == 6 and blocks[1]["heads"] == 2
    assert d["string"] == "c8k5 /a4h2r1.5 a8h1r2"
    assert graph_figure(d) is not None  # the dashboard draws it as a strip of blocks


# elastic ops -----------------------------------------------------------------------------------------------------


def test_sliced_batchnorm_matches_a_small_one() -> None:
    big, small = ElasticBatchNorm2d(8), nn.BatchNorm2d(3)
    randomize_norms(big, 1)
    small.load_state_dict({k: (v[:3] if v.ndim else v) for k, v in big.state_dict().items()})
    before = {k: v.clone() for k, v in big.state_dict().items()}
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    for m in (big, small):
        m.train()
    torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    # training updates the running statistics of the active channels only, like the small BN
    assert big.running_mean is not None and small.running_mean is not None
    assert big.running_var is not None and small.running_var is not None
    torch.testing.assert_close(big.running_mean[:3], small.running_mean)
    torch.testing.assert_close(big.running_var[:3], small.running_var)
    assert not torch.equal(big.running_mean[:3], before["running_mean"][:3])
    assert torch.equal(big.running_mean[3:], before["running_mean"][3:])
    assert torch.equal(big.running_var[3:], before["running_var"][3:])
    # momentum None (what BN recalibration uses): a cumulative average, as nn.BatchNorm2d does
    for m in (big, small):
        m.reset_running_stats()
        m.momentum = None
    for seed in range(3):
        xb = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(seed + 10)) * (seed + 1)
        big(xb), small(xb)
    torch.testing.assert_close(big.running_var[:3], small.running_var)
    big.eval(), small.eval()
    torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)


def test_sliced_layernorm_normalises_the_active_channels() -> None:
    big, small = ElasticLayerNorm(8), nn.LayerNorm(5)
    randomize_norms(big, 2)
    small.load_state_dict({k: v[:5] for k, v in big.state_dict().items()})
    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    y = big(x)
    torch.testing.assert_close(((y - big.bias[:5]) / big.weight[:5]).mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)


# supernet and extraction -----------------------------------------------------------------------------------------


def test_supernet_matches_extracted_model_in_train_mode(tiny: SearchSpace) -> None:
    """Eval mode is the family conformance suite's (tests/plugins); here: train mode, every kind of block."""
    net = tiny.family.build_supernet(tiny, seed=0)
    randomize_norms(net, 3)
    net.train()
    archs = [*random_archs(tiny, 24, 2), *tiny.family.extremes(tiny), with_kind(tiny, "attn"), with_kind(tiny, "conv")]
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    kinds: set[str] = set()
    for arch in archs:
        model = net.extract(arch)
        assert model.training
        with torch.no_grad(), net.activate(arch):
            expected = net(x)
            got = model(x)
        assert (got - expected).abs().max() <= 1e-5, tiny.to_string(arch)
        kinds.update(tok.lstrip("/")[0] for tok in tiny.to_string(arch).split())
    assert kinds == {"a", "c"}


def test_cpu_space_matches_extracted_model(cpu: SearchSpace) -> None:
    net = cpu.family.build_supernet(cpu, seed=1).eval()
    randomize_norms(net, 4)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for arch in [*random_archs(cpu, 6, 3), *cpu.family.extremes(cpu)]:
        with torch.no_grad(), net.activate(arch):
            torch.testing.assert_close(net.extract(arch)(x), net(x), atol=1e-5, rtol=0)


def test_extracted_model_is_plain(tiny: SearchSpace, tmp_path: Path) -> None:
    net = tiny.family.build_supernet(tiny, seed=0)
    plain = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.GELU, nn.AdaptiveAvgPool2d, nn.ModuleList)
    containers = (standalone_module.HybridNetwork, standalone_module.Stem, standalone_module.ConvBlock)
    for arch in random_archs(tiny, 10, 5):
        model: Any = net.extract(arch)
        for name, m in model.named_modules():
            assert type(m) in plain or type(m) in (*containers, standalone_module.AttnBlock), (name, type(m))
        cfg = model.nasplat_config
        assert json.loads(json.dumps(cfg)) == cfg
        rebuilt = standalone_module.build_model(cfg)
        assert rebuilt.state_dict().keys() == model.state_dict().keys()
        # the sizes are the chosen ones: q/k/v width heads * head_dim, MLP hidden units, kernels
        for b, block in zip(cfg["blocks"], model.blocks, strict=True):
            if b["type"] == "attn":
                assert block.q.out_features == b["heads"] * 4 and block.fc1.out_features == b["mlp_hidden"]
            else:
                assert block.conv_a.kernel_size == (b["kernel"], b["kernel"])
    # the stand-alone file imports only torch and the standard library
    check_standalone_source(Path(standalone_module.__file__))


def test_path_modules_hold_exactly_the_batchnorms_a_path_updates(tiny: SearchSpace) -> None:
    net = tiny.family.build_supernet(tiny, seed=0).train()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for arch in random_archs(tiny, 12, 6):
        bns = {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
        before = {n: int(m.num_batches_tracked) for n, m in bns.items()}  # type: ignore[arg-type]
        with torch.no_grad(), net.activate(arch):
            net(x)
        updated = {id(m) for n, m in bns.items() if int(m.num_batches_tracked) != before[n]}  # type: ignore[arg-type]
        listed = {id(m) for m in net.path_modules(arch) if isinstance(m, nn.BatchNorm2d)}
        assert updated == listed, tiny.to_string(arch)


def test_recalibration_through_the_supernet_equals_recalibrating_the_extracted_model(
    tiny: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset]
) -> None:
    train, val = digits
    net = tiny.family.build_supernet(tiny, seed=0)
    randomize_norms(net, 5)
    x = next(iter(val.batches(16, seed=None, shuffle=False)))[0]
    for arch in random_archs(tiny, 4, 7):
        model = net.extract(arch)
        recalibrate_bn(net, train.batches(64, seed=0, shuffle=True), 3, arch=arch)
        recalibrate_bn(model, train.batches(64, seed=0, shuffle=True), 3)
        with torch.no_grad(), net.activate(arch):
            torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=0)
            # and the supernet's extraction after recalibration is the recalibrated model
            torch.testing.assert_close(net.extract(arch).eval()(x), net(x), atol=1e-5, rtol=0)


# layer records ---------------------------------------------------------------------------------------------------


def test_layer_records_count_parameters_and_macs_exactly(tiny: SearchSpace, cpu: SearchSpace) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from nasplat_estimators.analytical import count_costs

    for space, n in ((tiny, 20), (cpu, 6)):
        net = space.family.build_supernet(space, seed=0).eval()
        shape = tuple(int(s) for s in space.macro.input_shape)  # type: ignore[attr-defined]
        for arch in [*random_archs(space, n, 8), *space.family.extremes(space)]:
            records = space.family.layers(space, arch)
            model = net.extract(arch).eval()
            costs = count_costs(records)
            assert costs["params_count"] == sum(p.numel() for p in model.parameters()), space.to_string(arch)
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(torch.zeros(1, *shape))
            assert costs["macs"] == counter.get_total_flops() / 2, space.to_string(arch)


def test_layer_records_are_the_configs_records(tiny: SearchSpace) -> None:
    """That records match the modules (names, shapes, weights) is the family conformance suite's (tests/plugins);
    here: the records are those the extracted module's config describes."""
    net = tiny.family.build_supernet(tiny, seed=0).eval()
    for arch in random_archs(tiny, 8, 9):
        model = net.extract(arch).eval()
        assert tiny.family.layers(tiny, arch) == config_records(model.nasplat_config)  # type: ignore[arg-type]


# sandwich rule, training, export, search -------------------------------------------------------------------------


def test_extremes(tiny: SearchSpace, cpu: SearchSpace) -> None:
    largest, smallest = tiny.family.extremes(tiny)
    assert tiny.to_string(largest) == "c8k5 c8k5 /c8k5"  # the conv block has more weights at width 8
    assert tiny.to_string(smallest) == "a4h1r1 /a4h1r1 a4h1r1"
    for space in (tiny, cpu):
        big, small = space.family.extremes(space)
        for a in (big, small):
            space.validate(a)
            assert space.family.canonical(space, a) == a
        from nasplat_estimators.analytical import count_costs

        p_big = count_costs(space.family.layers(space, big))["params_count"]
        p_small = count_costs(space.family.layers(space, small))["params_count"]
        for arch in random_archs(space, 30, 10):
            p = count_costs(space.family.layers(space, arch))["params_count"]
            assert p_small <= p <= p_big
    strategy = make_strategy("sandwich", tiny)
    paths = strategy.paths(tiny, np.random.default_rng(0), 0)
    assert paths[:2] == [largest, smallest]


def test_sandwich_training_and_inherited_evaluation(
    tiny: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    train, val = digits
    net = tiny.family.build_supernet(tiny, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    task = tiny.family.task(tiny)
    settings = TrainSettings(epochs=3, batch_size=32, lr=0.1, seed=1, strategy="sandwich", max_steps_per_epoch=16)
    result = train_supernet(net, task, train, settings, tmp_path / "run", progress=False)
    assert result.epochs_done == 3 and (result.checkpoint / "model.safetensors").is_file()
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    # the largest (teacher) and smallest paths touched both kinds of block
    assert any(".conv." in k for k in changed) and any(".attn." in k for k in changed)
    largest, smallest = tiny.family.extremes(tiny)
    for arch in (largest, smallest, with_kind(tiny, "attn", 3)):
        metrics = evaluate_subnet(net, arch, task, val, train, batch_size=128, calib_batches=2)
        assert 0 <= metrics["accuracy"] <= 100 and np.isfinite(metrics["loss"])
    # the largest path learnt something in 48 steps (chance is 10 %)
    assert evaluate_subnet(net, largest, task, val, train, batch_size=128, calib_batches=2)["accuracy"] > 30


def test_export_bundle_with_onnx(tiny: SearchSpace, tmp_path: Path) -> None:
    import onnxruntime as ort

    net = tiny.family.build_supernet(tiny, seed=0).eval()
    randomize_norms(net, 6)
    arch = tiny.from_string("c8k5 /a8h2r1.5 a4h1r2")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    result = export_bundle(
        net, arch, tmp_path / "bundle", metrics={"accuracy": 50.0}, provenance={"seed": 0}, example_input=x
    )
    assert result.onnx is not None and result.onnx.is_file()
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    x2 = torch.randn(3 if result.onnx_dynamic_batch else 4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), net.activate(arch):
        expected = net(x2).numpy()
    (got,) = session.run(None, {session.get_inputs()[0].name: x2.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_measured_latency(tiny: SearchSpace) -> None:
    from nasplat_estimators.measured import MeasuredCostModel

    model = MeasuredCostModel(warmup=1, repeats=3)
    out = model.estimate(tiny, tiny.from_string("c8k5 /a8h2r1.5 a4h1r2"), "local-cpu")
    assert out["latency_ms"] > 0


def test_search_end_to_end(tmp_path: Path) -> None:
    from nasplat.search import parse_run, run_search
    from nasplat.study import load_study, make_storage, pareto_frame

    run = parse_run(
        {
            "space": str(TINY),
            "dataset": {"name": "digits", "n_train": 512, "n_val": 256, "batch_size": 64},
            "supernet": {"train": {"epochs": 1, "strategy": "sandwich", "max_steps_per_epoch": 6}},
            "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
            "objectives": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
            ],
            "sampler": {"name": "nsga2", "options": {"population_size": 6}},
            "trials": 12,
            "batch_size": 6,
            "run_dir": str(tmp_path / "run"),
            "study": "hybrid",
        }
    )
    result = run_search(run, log=lambda _msg: None, progress=False)
    assert result.completed >= 12
    study = load_study(make_storage(run.storage_url), "hybrid")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 12
    space = load_space(TINY)
    for t in done:
        arch = space.from_string(t.user_attrs["arch_string"])
        assert t.values[1] > 0 and 0 <= t.values[0] <= 100
        assert arch == space.family.canonical(space, space.from_key(t.user_attrs["arch_key"]))
    front, _ = pareto_frame(study)
    assert len(front) >= 1
