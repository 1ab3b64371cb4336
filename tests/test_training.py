"""Supernet training: loss goes down, exact resume, space checks, BN recalibration, order-free evaluation.

Uses the real ``cell`` family on the tiny ``tests/spaces/cell-digits.yaml`` space and sklearn's digits.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nasplat import load_space
from nasplat.datasets import ArrayDataset, DataSpec, load_splits
from nasplat.errors import NasplatError, UnknownNameError
from nasplat.model import Supernet, evaluate_subnet, load_checkpoint, recalibrate_bn
from nasplat.space import SearchSpace, parse_space, read_yaml_mapping
from nasplat.train import SamplingStrategy, TrainSettings, lr_at, make_strategy, train_supernet

SPACE_FILE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and far faster than two on a busy 2-core machine."""
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


def build(space: SearchSpace, seed: int = 0) -> Supernet:
    """A supernet with seeded initial weights (the global RNG is forked and restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.family.build_supernet(space)


def settings(**kw: Any) -> TrainSettings:
    base: dict[str, Any] = {"epochs": 2, "batch_size": 32, "lr": 0.1, "seed": 3, "max_steps_per_epoch": 8}
    return TrainSettings(**{**base, **kw})


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:5]}"


class Stop(Exception):
    pass


def test_training_reduces_loss(space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path) -> None:
    train, val = digits
    net = build(space)
    task = space.family.task(space)
    arch = space.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    before = evaluate_subnet(net, arch, task, val, train, calib_batches=2)
    records: list[dict[str, Any]] = []
    result = train_supernet(
        net, task, train, settings(epochs=8, max_steps_per_epoch=None, warmup_epochs=0.5), tmp_path, progress=True,
        on_epoch=records.append,
    )  # fmt: skip
    after = evaluate_subnet(net, arch, task, val, train, calib_batches=2)
    assert result.epochs_done == 8 and len(result.history) == 8
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert {"epoch", "loss", "seconds", "images_per_s"} <= records[0].keys()
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]
    assert after["loss"] < 0.6 * before["loss"]
    assert after["accuracy"] > 60.0  # 10 classes: chance is 10 %


def test_checkpoint_layout_and_load(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    net = build(space)
    task = space.family.task(space)
    result = train_supernet(net, task, digits[0], settings(), tmp_path, progress=False)
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "epoch-0002"
    assert result.checkpoint == ckpts / "epoch-0002"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-0001", "epoch-0002", "latest"]  # no temp leftovers
    for name in ("model.safetensors", "optimizer.pt", "state.json"):
        assert (result.checkpoint / name).is_file()
    state = json.loads((result.checkpoint / "state.json").read_text())
    assert state["epochs_done"] == 2 and state["steps"] == 16
    assert state["space_name"] == space.name and state["space_hash"] == space.hash
    assert state["settings"]["seed"] == 3 and len(state["history"]) == 2
    torch.load(result.checkpoint / "optimizer.pt", weights_only=True)

    fresh = build(space, seed=1)
    loaded = load_checkpoint(fresh, tmp_path)  # a run folder resolves to its latest checkpoint
    assert loaded["epochs_done"] == 2
    assert_same(weights(fresh), weights(net))
    assert load_checkpoint(build(space, seed=2), ckpts / "epoch-0001")["epochs_done"] == 1

    # training again with everything done is a no-op that returns the same checkpoint
    again = train_supernet(fresh, task, digits[0], settings(), tmp_path, progress=False)
    assert again.checkpoint == result.checkpoint and again.history == result.history
    assert_same(weights(fresh), weights(net))


def test_resume_gives_same_weights_as_uninterrupted(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    train = digits[0]
    task = space.family.task(space)
    s = settings(epochs=3, max_steps_per_epoch=6, weight_decay=1e-3, grad_clip_norm=5.0, warmup_epochs=1)

    straight = build(space)
    full = train_supernet(straight, task, train, s, tmp_path / "straight", progress=False)

    def stop_after_first(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_supernet(build(space), task, train, s, tmp_path / "resumed", progress=False, on_epoch=stop_after_first)
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text().strip() == "epoch-0001"

    # a crash in the middle of epoch 2 (here: the task fails on the 3rd step of the epoch) loses nothing
    class Crashing:
        def __init__(self, n_ok: int) -> None:
            self.n_ok = n_ok

        def loss(self, model: nn.Module, batch: Any, generator: torch.Generator | None = None) -> torch.Tensor:
            if self.n_ok == 0:
                raise Stop
            self.n_ok -= 1
            return task.loss(model, batch, generator)

    with pytest.raises(Stop):
        train_supernet(build(space), Crashing(2), train, s, tmp_path / "resumed", progress=False)  # type: ignore[arg-type]

    resumed_net = build(space, seed=7)  # different initial weights: everything must come from the checkpoint
    resumed = train_supernet(resumed_net, task, train, s, tmp_path / "resumed", progress=False)
    assert resumed.epochs_done == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert_same(weights(resumed_net), weights(straight))
    opt_a = torch.load(full.checkpoint / "optimizer.pt", weights_only=True)
    opt_b = torch.load(resumed.checkpoint / "optimizer.pt", weights_only=True)
    for i, st in opt_a["state"].items():
        assert torch.equal(st["momentum_buffer"], opt_b["state"][i]["momentum_buffer"])


def test_resume_refuses_other_space_or_settings(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    task = space.family.task(space)
    train_supernet(build(space), task, digits[0], settings(epochs=1), tmp_path, progress=False)

    data = read_yaml_mapping(SPACE_FILE)
    other = parse_space({**data, "name": "cell-digits-other"}, "other.yaml")
    assert other.hash != space.hash
    with pytest.raises(NasplatError, match="hash"):
        train_supernet(build(other), task, digits[0], settings(epochs=1), tmp_path, progress=False)
    with pytest.raises(NasplatError, match="cell-digits-other"):
        load_checkpoint(build(other), tmp_path)
    with pytest.raises(NasplatError, match="lr"):
        train_supernet(build(space), task, digits[0], settings(epochs=1, lr=0.2), tmp_path, progress=False)
    with pytest.raises(NasplatError, match="n_images"):
        train_supernet(build(space), task, digits[0].subset(range(200)), settings(epochs=1), tmp_path, progress=False)
    with pytest.raises(NasplatError, match="no checkpoint"):
        load_checkpoint(build(space), tmp_path / "nowhere")


def test_schedule_and_settings() -> None:
    s = TrainSettings(epochs=10, lr=1.0, warmup_epochs=1)
    lrs = [lr_at(s, step, 10) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] < 0.001
    with pytest.raises(ValueError, match="extra"):
        TrainSettings(epochs=1, lerning_rate=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="warmup"):
        TrainSettings(epochs=1, warmup_epochs=2)


def test_strategies(space: SearchSpace) -> None:
    uniform = make_strategy("uniform", space)
    assert isinstance(uniform, SamplingStrategy)
    a = [uniform.paths(space, np.random.default_rng(5), i) for i in range(3)]
    b = [uniform.paths(space, np.random.default_rng(5), i) for i in range(3)]
    assert a == b and all(len(p) == 1 for p in a)
    with pytest.raises(UnknownNameError, match="uniform"):
        make_strategy("no-such-strategy", space)


def test_recalibrate_bn_uses_batch_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, momentum=0.3)
    model = nn.Sequential(conv, bn)
    xs = [torch.randn(16, 2, 4, 4, generator=gen) * 3 + 1 for _ in range(2)]
    feats = [conv(x).detach() for x in xs]

    used = recalibrate_bn(model, [(x,) for x in xs], n_batches=1)
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    assert used == 1
    assert torch.allclose(bn.running_mean, feats[0].mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, feats[0].var((0, 2, 3), unbiased=True), atol=1e-4)
    assert bn.momentum == 0.3 and not model.training

    recalibrate_bn(model, iter([(x,) for x in xs]), n_batches=5)  # only 2 available: a cumulative average
    assert torch.allclose(bn.running_mean, (feats[0].mean((0, 2, 3)) + feats[1].mean((0, 2, 3))) / 2, atol=1e-5)
    assert int(bn.num_batches_tracked) == 2


def test_recalibrate_only_the_path(space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    net = build(space)
    ops = ["none", "none", "none", "none", "none", "nor_conv_1x1"]
    arch = space.make(dict(zip(space.labels, ops)))
    before = weights(net)
    recalibrate_bn(net, digits[0].batches(64, seed=0, shuffle=True), 2, arch=arch)
    changed = {k for k in before if not torch.equal(before[k], net.state_dict()[k])}
    assert changed, "recalibration changed nothing"
    assert all("running" in k or "num_batches_tracked" in k for k in changed)  # no weights
    assert not any("nor_conv_3x3" in k for k in changed)  # BNs off the path are untouched


def test_evaluate_subnet_is_order_independent(
    space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    train, val = digits
    net = build(space)
    task = space.family.task(space)
    train_supernet(net, task, train, settings(epochs=1), tmp_path, progress=False)
    net.train()
    state = weights(net)
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    while b == a:
        b = space.sample(rng)
    first = evaluate_subnet(net, a, task, val, train, calib_batches=3, batch_size=128)
    evaluate_subnet(net, b, task, val, train, calib_batches=3, batch_size=128)
    again = evaluate_subnet(net, a, task, val, train, calib_batches=3, batch_size=128)
    assert first == again
    assert set(first) == set(task.metrics)
    assert_same(weights(net), state)  # weights and BN statistics restored
    assert net.training  # mode restored
    other_seed = evaluate_subnet(net, a, task, val, train, calib_batches=3, batch_size=128, seed=1)
    no_calib = evaluate_subnet(net, a, task, val, train, calib_batches=0)
    assert other_seed != first or no_calib != first
