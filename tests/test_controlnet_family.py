"""The ControlNet block-gating family: spec checks, zero-initialised control, frozen base, weight sharing,
added costs against the extracted module, extraction, export with its sampling script, training and search."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nasplat.datasets import DataSpec, load_splits
from nasplat.errors import NasplatError, SpecError
from nasplat.export import export_bundle
from nasplat.search import parse_run, run_search
from nasplat.space import Architecture, SearchSpace, load_space, parse_space
from nasplat.study import load_study, make_storage
from nasplat.train import TrainSettings, train_supernet
from nasplat_estimators.analytical import count_costs
from nasplat_search_spaces.controlnet import ControlSupernet, DiffusionControlTask, train_base
from nasplat_search_spaces.controlnet.supernet import SuperControlBlock

TINY = Path(__file__).parent / "spaces" / "controlnet-tiny.yaml"
SCRIPT = Path(__file__).resolve().parent.parent / "search_spaces" / "controlnet" / "sample_script.py"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    """The tiny space, copied next to a briefly trained base UNet (its ``macro.base_weights``)."""
    folder = tmp_path_factory.mktemp("controlnet")
    shutil.copy(TINY, folder / TINY.name)
    sp = load_space(folder / TINY.name)
    train_base(sp, dataset="digits", n_val=300, steps=40, batch_size=64, log=None)
    return sp


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    return load_splits(DataSpec(name="digits", n_val=300, n_train=320))


@pytest.fixture(scope="module")
def batch(data: tuple[Any, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return next(data[1].batches(8, seed=None, shuffle=False))


@pytest.fixture(scope="module")
def trained(space: SearchSpace, data: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> ControlSupernet:
    """A supernet after a few steps of nasplat's generic trainer (so the zero projections are no longer zero)."""
    net = space.family.build_supernet(space, seed=0)
    assert isinstance(net, ControlSupernet)
    base_before = {k: v.clone() for k, v in net.base.state_dict().items()}
    control_before = {k: v.clone() for k, v in net.control.state_dict().items()}
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.05, max_steps_per_epoch=6, seed=0)
    result = train_supernet(net, space.family.task(space), data[0], settings, tmp_path_factory.mktemp("run"),
                            progress=False)  # fmt: skip
    assert result.checkpoint.is_dir() and np.isfinite(result.history[-1]["loss"])
    for k, v in net.base.state_dict().items():
        assert torch.equal(v, base_before[k]), f"frozen base weight {k} changed"
    changed = [k for k, v in net.control.state_dict().items() if not torch.equal(v, control_before[k])]
    assert any(k.endswith("zero.weight") for k in changed), changed
    return net.eval()


def archs(space: SearchSpace, n: int, seed: int = 0) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    fixed = ["full|full|full", "light|light|light", "lora_2|lora_4|lora_2", "off|off|off", "off|full|off"]
    return [space.from_string(s) for s in fixed] + [space.sample(rng) for _ in range(n)]


def tiny_data(**macro: Any) -> dict[str, Any]:
    data = yaml.safe_load(TINY.read_text())
    data["macro"].update(macro)
    return data


# --------------------------------------------------------------------------------------------------------------
# declarations


def test_spaces_load() -> None:
    tiny = load_space(TINY)
    assert tiny.labels == ["control.enc_0", "control.enc_1", "control.mid"]
    assert tiny.size() == 5**3
    fmnist = load_space("controlnet-fmnist")
    assert fmnist.labels == ["control.enc_0", "control.enc_1", "control.enc_2", "control.mid"]
    assert tuple(fmnist.macro.input_shape) == (1, 28, 28)  # type: ignore[attr-defined]
    assert "off" in fmnist.dimension("control.mid").choices


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda d: d["dimensions"][0].update(choices=["off", "medium"]), ["choices[1]", "unknown control block kind"]),
        (lambda d: d["dimensions"][0].update(choices=["off", "lora_64"]), ["choices[1]", "rank 64 exceeds"]),
        (lambda d: d["dimensions"][0].update(choices=["off", "lora_x"]), ["positive integer"]),
        (lambda d: d["dimensions"][0].update(choices=[False, "full"]), ["choices[0]", 'write "off" in quotes']),
        (lambda d: d["dimensions"][0].update(labels=["control.enc_0", "control.enc_1"]), ["missing: control.mid"]),
        (
            lambda d: d["dimensions"][0].update(labels=["control.enc_0", "control.enc_9", "control.mid"]),
            ["labels[1]", "unknown dimension 'control.enc_9'"],
        ),
        (lambda d: d["macro"].update(channels=[6, 16]), ["macro.channels", "norm_groups"]),
        (lambda d: d["macro"].update(pixel_mean=[0.1, 0.2]), ["macro.pixel_mean", "one per image channel"]),
        (lambda d: d["macro"].update(colour="red"), ["macro.colour", "unknown key"]),
        (lambda d: d["macro"].pop("base_weights"), ["macro.base_weights", "missing"]),
    ],
)
def test_bad_declarations_name_the_key(edit: Any, fragments: list[str]) -> None:
    data = copy.deepcopy(yaml.safe_load(TINY.read_text()))
    edit(data)
    with pytest.raises(SpecError) as info:
        parse_space(data, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml"), message
    for fragment in fragments:
        assert fragment in message, message


def test_string_form() -> None:
    """Round trips are the family conformance suite's (tests/plugins); here: the form and its refusals."""
    sp = load_space(TINY)
    assert sp.to_string(sp.from_string("full|light|lora_4")) == "full|light|lora_4"
    with pytest.raises(NasplatError, match="expected 3 choices"):
        sp.from_string("full|light")
    with pytest.raises(NasplatError, match="allowed: off, light"):
        sp.from_string("full|heavy|off")


def test_extremes() -> None:
    sp = load_space(TINY)
    largest, smallest = sp.family.extremes(sp)
    assert sp.to_string(largest) == "full|full|full" and sp.to_string(smallest) == "light|light|light"


def test_missing_base_weights_say_how_to_train(tmp_path: Path) -> None:
    shutil.copy(TINY, tmp_path / TINY.name)
    sp = load_space(tmp_path / TINY.name)
    with pytest.raises(NasplatError) as info:
        sp.family.build_supernet(sp)
    assert str(tmp_path / "controlnet-tiny-base.safetensors") in str(info.value)
    assert "train_base" in str(info.value)


def test_base_file_of_another_unet_is_refused(space: SearchSpace, tmp_path: Path) -> None:
    data = tiny_data(
        channels=[8, 8], base_weights=str(Path(space.path or "").parent / "controlnet-tiny-base.safetensors")
    )
    other = parse_space(data, "other.yaml", tmp_path / "other.yaml")
    with pytest.raises(NasplatError, match="does not fit space"):
        other.family.build_supernet(other)


# --------------------------------------------------------------------------------------------------------------
# the supernet


def test_zero_projections_leave_the_base_unchanged(space: SearchSpace, batch: Any) -> None:
    net = space.family.build_supernet(space, seed=3).eval()
    task = space.family.task(space)
    x_t, t, cond = task.model_inputs(batch)
    with torch.no_grad():
        reference = net.base(x_t, t)
        for arch in archs(space, 6):
            with net.activate(arch):
                out = net(x_t, t, cond)
            assert torch.equal(out, reference), space.to_string(arch)


def test_base_is_frozen_and_control_gets_gradients(space: SearchSpace, batch: Any) -> None:
    net = space.family.build_supernet(space, seed=0).train()
    assert all(not p.requires_grad for p in net.base.parameters())
    assert all(p.requires_grad for p in net.control.parameters())
    task = space.family.task(space)
    with net.activate(space.from_string("full|light|lora_4")):
        task.loss(net, batch, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is None for p in net.base.parameters())
    blocks = net.control.blocks
    for name in ("enc_0", "enc_1", "mid"):
        grad = blocks[name].zero.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert blocks["enc_1"].full.conv1.weight.grad is None  # enc_1 ran `light`, not `full`


def test_full_copy_starts_from_the_base_block(space: SearchSpace) -> None:
    net = space.family.build_supernet(space)
    for name in ("enc_0", "enc_1", "mid"):
        base = net.base.block(name).state_dict()
        for k, v in net.control.blocks[name].full.state_dict().items():
            assert torch.equal(v, base[k]), (name, k)


def test_all_off_configuration_still_steps(space: SearchSpace, batch: Any) -> None:
    net = space.family.build_supernet(space).train()
    with net.activate(space.from_string("off|off|off")):
        loss = space.family.task(space).loss(net, batch, torch.Generator().manual_seed(0))
    loss.backward()  # no error although nothing trainable ran
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in net.control.parameters())


def test_weight_sharing(space: SearchSpace, batch: Any) -> None:
    net = space.family.build_supernet(space).train()
    task = space.family.task(space)
    block = net.control.blocks["enc_0"]
    assert isinstance(block, SuperControlBlock)
    zero = block.zero.weight
    for choice in ("full", "light", "lora_2", "lora_4"):  # one projection behind every kind
        net.zero_grad(set_to_none=True)
        with net.activate(space.from_string(f"{choice}|off|off")):
            task.loss(net, batch, torch.Generator().manual_seed(1)).backward()
        assert zero.grad is not None and float(zero.grad.abs().sum()) > 0, choice
        assert net.control.hint.stages[0][0].weight.grad is not None, choice  # the hint pyramid is shared too
    # LoRA ranks share one pair of factors: rank 2 is the first 2 rows of rank 4's (zero-initialised
    # factors pass no gradient on: give the projection and `b` values first)
    with torch.no_grad():
        block.lora.conv1.b.normal_()
        zero.normal_()
    net.zero_grad(set_to_none=True)
    with net.activate(space.from_string("lora_2|off|off")):
        task.loss(net, batch, torch.Generator().manual_seed(1)).backward()
    grad_a = block.lora.conv1.a.grad
    assert grad_a is not None and float(grad_a[:2].abs().sum()) > 0 and float(grad_a[2:].abs().sum()) == 0
    small = net.extract(space.from_string("lora_2|off|off")).control.blocks["enc_0"].lora.conv1
    big = net.extract(space.from_string("lora_4|off|off")).control.blocks["enc_0"].lora.conv1
    assert torch.equal(small.a, big.a[:2]) and torch.equal(small.b, big.b[:, :2])


# --------------------------------------------------------------------------------------------------------------
# costs


def test_off_blocks_add_nothing(space: SearchSpace) -> None:
    fam = space.family
    assert fam.layers(space, space.from_string("off|off|off")) == []
    assert count_costs(fam.layers(space, space.from_string("off|off|off")))["macs"] == 0
    full = count_costs(fam.layers(space, space.from_string("full|full|full")))
    for i in range(3):
        parts = ["full"] * 3
        parts[i] = "off"
        arch = space.from_string("|".join(parts))
        names = {r.name for r in fam.layers(space, arch)}
        block = ["enc_0", "enc_1", "mid"][i]
        assert not any(n.startswith(f"control.blocks.{block}.") for n in names)
        assert count_costs(fam.layers(space, arch))["macs"] < full["macs"]


def _flops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return int(counter.get_total_flops())


def test_added_costs_match_the_extracted_module(space: SearchSpace) -> None:
    """layers() params == the extracted control module's parameters; layers() MACs == measured added MACs."""
    net = space.family.build_supernet(space)
    inputs = (torch.randn(1, 1, 8, 8), torch.tensor([7.0]), torch.rand(1, 1, 8, 8))
    base_flops = _flops(net.extract(space.from_string("off|off|off")), inputs)
    for arch in archs(space, 12, seed=4):
        model = net.extract(arch)
        costs = count_costs(space.family.layers(space, arch))
        assert costs["params_count"] == sum(p.numel() for p in model.control.parameters()), space.to_string(arch)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == costs["params_count"]
        assert costs["macs"] == (_flops(model, inputs) - base_flops) / 2, space.to_string(arch)


def test_lora_costs_macs_but_few_parameters(space: SearchSpace) -> None:
    fam = space.family
    full = count_costs(fam.layers(space, space.from_string("full|full|full")))
    lora = count_costs(fam.layers(space, space.from_string("lora_2|lora_2|lora_2")))
    light = count_costs(fam.layers(space, space.from_string("light|light|light")))
    assert lora["params_count"] < full["params_count"] and lora["macs"] > full["macs"]
    assert light["macs"] < full["macs"] and light["params_count"] < full["params_count"]


# --------------------------------------------------------------------------------------------------------------
# extraction, evaluation, export


def test_extracted_config_and_trained_control(space: SearchSpace, trained: ControlSupernet, batch: Any) -> None:
    """Extracted module == supernet is the family conformance suite's (tests/plugins); here: the module's config
    names the blocks, and after training a network with any block on computes something else than the base."""
    task = space.family.task(space)
    x_t, t, cond = task.model_inputs(batch)
    with torch.no_grad():
        base = trained.base(x_t, t)
        for arch in archs(space, 8, seed=2):
            with trained.activate(arch):
                expected = trained(x_t, t, cond)
            model = trained.extract(arch).eval()
            assert model.nasplat_config["blocks"] == {k[len("control.") :]: v for k, v in arch.as_dict().items()}
            if space.to_string(arch) != "off|off|off":  # trained control changes the output
                assert float((expected - base).abs().max()) > 0, space.to_string(arch)


def test_evaluate_is_deterministic(space: SearchSpace, trained: ControlSupernet, data: tuple[Any, Any]) -> None:
    task = space.family.task(space)
    assert isinstance(task, DiffusionControlTask)
    assert task.primary in task.metrics
    arch = space.from_string("full|lora_2|light")
    with trained.activate(arch):
        first = task.evaluate(trained, data[1].batches(64, seed=None, shuffle=False))
        second = task.evaluate(trained, data[1].batches(100, seed=None, shuffle=False))
    assert set(first) == set(task.metrics)
    assert first["fidelity_error"] == second["fidelity_error"]
    assert first["denoise_loss"] == pytest.approx(second["denoise_loss"], rel=1e-5)
    assert 0 < first["fidelity_error"] < 1 and 0 < first["denoise_loss"] < 2


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_bundle_and_sampling_script_without_nasplat(
    space: SearchSpace, trained: ControlSupernet, batch: Any, tmp_path: Path
) -> None:
    arch = space.from_string("full|lora_4|light")
    task = space.family.task(space)
    result = export_bundle(
        trained, arch, tmp_path / "bundle", metrics={"fidelity_error": 0.1}, provenance={"test": True},
        example_input=task.model_inputs(batch), extras=space.family.bundle_extras(space, arch),
    )  # fmt: skip
    bundle = result.bundle_dir
    assert (bundle / "sample.py").is_file() and result.onnx is not None
    assert json.loads(result.config.read_text())["blocks"] == {"enc_0": "full", "enc_1": "lora_4", "mid": "light"}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("NASPLAT")}
    check = (
        "import runpy, sys\n"
        "sys.argv = ['sample.py', *sys.argv[1:]]\n"
        f"runpy.run_path({str(bundle / 'sample.py')!r}, run_name='__main__')\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('nasplat'))\n"
        "assert not leaked, leaked\n"
        "print('clean')\n"
    )
    out = tmp_path / "samples"
    proc = subprocess.run([sys.executable, "-I", "-c", check, "--demo", "3", "--steps", "4", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("clean")
    script = _module(SCRIPT, "controlnet_sample_script")
    for i in range(3):
        assert script.read_png(out / f"demo_{i}_sample.png").shape == (8, 8)
    assert script.read_png(out / "grid.png").shape == (16, 24)

    # condition files in, samples out; they match the bundle's model run in this process
    conds = [tmp_path / f"c{i}.png" for i in range(2)]
    cond_tensor = task.prepare(batch)[1][:2]
    for path, c in zip(conds, cond_tensor):
        script.write_png(path, c[0])
    out2 = tmp_path / "samples2"
    proc = subprocess.run([sys.executable, "-I", str(bundle / "sample.py"), *map(str, conds), "--steps", "4",
                           "--seed", "5", "--out", str(out2)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    model = _module(bundle / "load.py", "controlnet_bundle_load").load(bundle)
    read_back = torch.stack([script.read_png(p)[None] for p in conds])
    expected = model.generate(read_back, steps=4, seed=5)
    for i in range(2):
        got = script.read_png(out2 / f"c{i}_sample.png")
        assert float((got - expected[i, 0]).abs().max()) <= 1 / 255 + 1e-6


# --------------------------------------------------------------------------------------------------------------
# search end to end


@pytest.mark.slow
def test_search_end_to_end(space: SearchSpace, tmp_path: Path) -> None:
    run = parse_run(
        {
            "space": str(space.path),
            "dataset": {"name": "digits", "n_train": 256, "n_val": 64, "batch_size": 32},
            "supernet": {"train": {"epochs": 1, "lr": 0.05, "max_steps_per_epoch": 4}},
            "estimator": {"name": "supernet", "options": {"calib_batches": 1, "eval_batch_size": 64}},
            "objectives": [
                {"metric": "fidelity_error", "direction": "minimize"},
                {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
            ],
            "sampler": {"name": "random"},
            "trials": 6,
            "batch_size": 3,
            "run_dir": str(tmp_path / "run"),
            "study": "controlnet",
        }
    )
    result = run_search(run, log=lambda _m: None, progress=False)
    assert result.completed == 6 or result.evaluated_now >= 1
    study = load_study(make_storage(run.storage_url), "controlnet")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6
    for t in complete:
        fidelity, macs = t.values
        arch = space.from_key(str(t.user_attrs["arch_key"]))
        assert 0 < fidelity < 1
        assert macs == count_costs(space.family.layers(space, arch))["macs"]
