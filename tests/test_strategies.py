"""Sampling strategies (sandwich, fair, attentive), BN recalibration of extracted subnets, ``nasplat evaluate``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from nasplat import load_space, registry
from nasplat.cli import app
from nasplat.datasets import ArrayDataset, DataSpec, load_splits
from nasplat.errors import NasplatError
from nasplat.model import evaluate_subnet, recalibrate_bn
from nasplat.space import SearchSpace
from nasplat.train import AttentiveStrategy, PathsLoss, TrainSettings, make_strategy, train_supernet

SPACE_FILE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(SPACE_FILE)


@pytest.fixture(scope="module")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_splits(DataSpec(name="digits", n_val=300, seed=0))


def settings(**kw: Any) -> TrainSettings:
    base: dict[str, Any] = {"epochs": 2, "batch_size": 32, "lr": 0.1, "seed": 3, "max_steps_per_epoch": 4}
    return TrainSettings(**{**base, **kw})


def test_sandwich_trains_largest_smallest_and_random_paths_with_distillation(space: SearchSpace) -> None:
    strategy = make_strategy("sandwich", space, {"n_random": 2})
    largest, smallest = space.family.extremes(space)
    paths = strategy.paths(space, np.random.default_rng(0), 0)
    assert paths[:2] == [largest, smallest] and len(paths) == 4
    assert set(largest.as_dict().values()) == {"nor_conv_3x3"}
    assert strategy.distill

    # students learn from the teacher's soft labels: a student that copies the teacher has zero extra loss
    net = space.family.build_supernet(space, seed=0)
    task = space.family.task(space)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    with net.activate(largest):
        ce, teacher = task.loss_and_output(net, (x, y))
        assert teacher is not None
        self_distill = task.distill_loss(net, (x, y), teacher)
    assert float(self_distill.detach()) == pytest.approx(0.0, abs=1e-6)
    loss, per_path = PathsLoss(net, task)((x, y), [largest, smallest], None, True)
    with net.activate(smallest):
        student = task.distill_loss(net, (x, y), teacher)
    assert per_path == pytest.approx([float(ce), float(student)], rel=1e-5)
    assert float(loss) == pytest.approx((float(ce) + float(student)) / 2, rel=1e-5)
    with pytest.raises(NasplatError, match="n_random"):
        make_strategy("sandwich", space, {"n_random": -1})


def test_fair_sampling_uses_every_choice_of_every_edge_once_per_step(space: SearchSpace) -> None:
    strategy = make_strategy("fair", space)
    rng = np.random.default_rng(4)
    for step in range(3):
        paths = strategy.paths(space, rng, step)
        assert len(paths) == 5
        for d in space.dimensions:
            assert Counter(p.as_dict()[d.label] for p in paths) == Counter(d.choices)


def test_attentive_trains_paths_on_the_cost_loss_front(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset]
) -> None:
    net = space.family.build_supernet(space, seed=0)
    task = space.family.task(space)
    strategy = make_strategy("attentive", space, {"candidates": 6, "train_paths": 2})
    assert isinstance(strategy, AttentiveStrategy)
    strategy.setup(net, task)
    batch = next(digits[0].batches(64, seed=0, shuffle=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    picked = strategy.paths(space, np.random.default_rng(2), 0, batch)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # scoring moved no BN statistics
    # recompute the candidates the strategy saw (same generator) and check no picked path is dominated
    rng = np.random.default_rng(2)
    pool = list({a.key: a for a in (space.sample(rng) for _ in range(6))}.values())
    scores = {}
    with torch.no_grad():
        for a in pool:
            with net.activate(a):
                scores[a.key] = (strategy.cost(a), float(task.loss(net, batch)))
    assert 1 <= len(picked) <= 2
    for a in picked:
        c, v = scores[a.key]
        assert not any(c2 <= c and v2 <= v and (c2, v2) != (c, v) for c2, v2 in scores.values())
    with pytest.raises(NasplatError, match="no metric"):
        make_strategy("attentive", space, {"metric": "latency_parsecs"})
    with pytest.raises(NasplatError, match=r"strategy 'attentive' has no option 'candidatez'; allowed: .*candidates"):
        make_strategy("attentive", space, {"candidatez": 3})


def test_adamw_training_resumes_exactly(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    """Every registered strategy trains and resumes exactly in the strategy conformance suite (tests/plugins, with
    SGD); here: the AdamW optimizer's state resumes exactly too."""
    train = digits[0]
    task = space.family.task(space)
    s = settings(strategy="uniform", optimizer="adamw", lr=0.003)
    full = train_supernet(space.family.build_supernet(space, seed=0), task, train, s, tmp_path / "a", progress=False)
    assert full.history[-1]["paths_per_step"] >= 1

    class Stop(Exception):
        pass

    def stop(record: dict[str, Any]) -> None:
        raise Stop

    with pytest.raises(Stop):
        train_supernet(
            space.family.build_supernet(space, seed=0), task, train, s, tmp_path / "b", progress=False, on_epoch=stop
        )
    resumed_net = space.family.build_supernet(space, seed=5)
    train_supernet(resumed_net, task, train, s, tmp_path / "b", progress=False)
    from safetensors.torch import load_file

    straight = load_file(str(full.checkpoint / "model.safetensors"))
    assert all(torch.equal(straight[k], v) for k, v in resumed_net.state_dict().items())


def test_extracted_subnet_with_recalibrated_bn_matches_the_supernet_estimate(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    train, val = digits
    net = space.family.build_supernet(space, seed=0)
    task = space.family.task(space)
    train_supernet(net, task, train, settings(epochs=2, max_steps_per_epoch=15), tmp_path, progress=False)
    rng = np.random.default_rng(11)
    for arch in [space.sample(rng) for _ in range(4)]:
        estimate = evaluate_subnet(net, arch, task, val, train, calib_batches=5, batch_size=128, seed=0)
        # the same recalibration, then the stand-alone module carries the statistics out of the supernet
        gen = torch.Generator().manual_seed(0)
        from nasplat.seeds import derive_seed
        from nasplat.train._trainer import _SEED_TAG_TASK

        gen.manual_seed(derive_seed(0, _SEED_TAG_TASK))
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        recalibrate_bn(
            net,
            train.batches(128, seed=0, shuffle=True),
            5,
            arch=arch,
            forward=lambda m, b, gen=gen: task.loss(m, b, gen),
        )
        module = net.extract(arch)
        net.load_state_dict(saved)
        extracted = task.evaluate(module, val.batches(128, seed=None, shuffle=False))
        assert extracted["accuracy"] == pytest.approx(estimate["accuracy"], abs=1e-9)
        assert extracted["loss"] == pytest.approx(estimate["loss"], rel=1e-5)


def test_evaluate_command_writes_inherited_metrics(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    train = digits[0]
    net = space.family.build_supernet(space, seed=0)
    result = train_supernet(net, space.family.task(space), train, settings(epochs=1), tmp_path / "run", progress=False)
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(3)]
    csv = tmp_path / "archs.csv"
    pd.DataFrame({"arch": [space.to_string(a) for a in archs]}).to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    runner = CliRunner()
    args = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--archs", str(csv), "--out", str(out),
            "--space", str(SPACE_FILE), "--n-val", "300", "--calib-batches", "2"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame["arch"]) == [space.to_string(a) for a in archs]
    expected = registry.get("estimator", "supernet")(
        space, result.checkpoint, DataSpec(name="digits", n_val=300, batch_size=256), calib_batches=2
    ).evaluate(archs)
    assert frame["accuracy"].tolist() == pytest.approx([e["accuracy"] for e in expected])

    # YAML lists work too; a bad row is named, one line, no traceback
    yml = tmp_path / "archs.yaml"
    yml.write_text(yaml.safe_dump([space.to_string(archs[0]), archs[1].as_dict()]))
    res = runner.invoke(app, [*args[:4], str(yml), "--out", str(tmp_path / "out_yaml.csv"), *args[7:]])
    assert res.exit_code == 0, res.output
    pd.DataFrame({"arch": [space.to_string(archs[0]), "|bogus~0|"]}).to_csv(csv, index=False)
    proc = subprocess.run([str(Path(sys.executable).parent / "nasplat"), *args], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "archs.csv: row 3" in line and "bogus" in line
