"""Supernet training on Ray Train workers: gradient synchronisation, checkpoints, worker and driver failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nasplat.datasets import DataSpec, load_splits
from nasplat.model import resolve_checkpoint
from nasplat.space import load_space
from nasplat.train import SupernetTrainer, TrainSettings, lr_at, train_supernet_ray

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")
NASPLAT = str(Path(sys.executable).parent / "nasplat")


def test_one_step_on_two_workers_averages_every_gradient(tmp_path: Path) -> None:
    """After one step on 2 workers the replicas are identical, and equal a by-hand step with averaged gradients
    (weights only one worker's path touched get half that worker's gradient)."""
    space = load_space(SPACE)
    data = DataSpec(name="digits", n_val=200, batch_size=32)
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.1, max_steps_per_epoch=1, seed=3)
    result = train_supernet_ray(space, data, settings, tmp_path / "run", workers=2)
    (record,) = result.history
    assert record["workers"] == 2 and record["steps"] == 1
    assert record["worker_paths_differ"], "both workers sampled the same path: the test proves nothing"

    # the same step by hand: both workers' losses on their own batch slices and paths, gradients averaged
    train, _ = load_splits(data)
    net = space.family.build_supernet(space, seed=settings.seed)
    task = space.family.task(space)
    workers = [SupernetTrainer(net, task, train, settings, rank=r, world=2) for r in range(2)]
    total = torch.zeros(())
    paths = []
    for w in workers:
        batch = next(w.epoch_batches(0))
        (arch,) = w.strategy.paths(space, w.path_rng, 0, batch)
        paths.append(arch.key)
        with net.activate(arch):
            total = total + task.loss(net, batch, None) / 2
    assert paths[0] != paths[1]
    opt = workers[0].optimizer
    opt.zero_grad(set_to_none=True)
    total.backward()
    for group in opt.param_groups:
        group["lr"] = lr_at(settings, 0, workers[0].steps_per_epoch) * 2  # linear scaling with 2 workers
    opt.step()

    from safetensors.torch import load_file

    saved = load_file(str(resolve_checkpoint(result.checkpoint) / "model.safetensors"))
    params = dict(net.named_parameters())
    touched = 0
    for name, p in params.items():
        assert torch.allclose(saved[name], p.detach(), atol=1e-6), name
        touched += int(not torch.equal(saved[name], space.family.build_supernet(space, seed=3).state_dict()[name]))
    assert touched > 0


def _run_file(tmp_path: Path, epochs: int) -> Path:
    run = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_val": 200, "batch_size": 32},
        # 10 steps per epoch: epochs stay long enough to kill inside, and the resumed run ends soon after
        "supernet": {
            "train": {"epochs": epochs, "lr": 0.05, "max_steps_per_epoch": 10},
            "workers": 2,
            "max_failures": 2,
        },
        "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        "trials": 4,
        "run_dir": str(tmp_path / "run"),
        "study": "ray-train",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def _start(path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)  # nasplat's Ray defaults: loopback, token authentication
    return subprocess.Popen(
        [NASPLAT, "train-supernet", str(path)],
        cwd=path.parent,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _wait_for(predicate: Any, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _epochs_in(ckpt: Path) -> list[int]:
    state = json.loads((ckpt / "state.json").read_text())
    return [int(h["epoch"]) for h in state["history"]]


def test_killed_worker_and_killed_driver_lose_no_epoch(tmp_path: Path) -> None:
    epochs = 16
    path = _run_file(tmp_path, epochs)
    ckpts = tmp_path / "run" / "supernet" / "checkpoints"
    pid_file = tmp_path / "run" / "supernet" / "workers" / "rank-1.pid"

    # 1. kill worker 1 mid-run: Ray Train restarts the worker group from the last checkpoint
    proc = _start(path, tmp_path / "first.log")
    try:
        _wait_for((ckpts / "epoch-0003").is_dir, proc, 180, "epoch 3's checkpoint")
        victim = int(pid_file.read_text())
        os.kill(victim, signal.SIGKILL)
        # 2. once the restarted group has checkpointed again, kill the driver (and its local Ray cluster)
        _wait_for(
            lambda: pid_file.is_file() and int(pid_file.read_text()) != victim and (ckpts / "epoch-0008").is_dir(),
            proc,
            240,
            "a restarted worker and epoch 8's checkpoint",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first_log = (tmp_path / "first.log").read_text(errors="replace")
    assert "resumed from epoch-000" in first_log, first_log[-3000:]
    done_before = _epochs_in(resolve_checkpoint(tmp_path / "run" / "supernet"))
    assert done_before == list(range(1, len(done_before) + 1)) and len(done_before) < epochs

    # 3. a new driver on the same run folder continues where the checkpoint left off
    proc = _start(path, tmp_path / "second.log")
    assert proc.wait(300) == 0, (tmp_path / "second.log").read_text(errors="replace")[-3000:]
    second_log = (tmp_path / "second.log").read_text(errors="replace")
    # it goes on from the newest intact checkpoint: the one `latest` named, or (when the driver died after Ray
    # persisted a checkpoint but before `latest` was moved to it) a newer complete one
    resumed = re.search(r"resumed from epoch-(\d+)", second_log)
    assert resumed is not None, second_log[-3000:]
    assert int(resumed.group(1)) >= len(done_before), second_log[-3000:]
    final = resolve_checkpoint(tmp_path / "run" / "supernet")
    assert _epochs_in(final) == list(range(1, epochs + 1))  # every epoch exactly once
    assert json.loads((final / "state.json").read_text())["epochs_done"] == epochs

    # the epochs are rows in the run's study, for the dashboard
    import optuna

    from nasplat.study import supernet_frame

    study = optuna.load_study(study_name="ray-train", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    frame = supernet_frame(study)
    assert sorted(frame["epoch"].astype(int)) == list(range(1, epochs + 1))
    assert (frame["workers"] == 2).all() and frame["images_per_s"].gt(0).all()


def test_every_family_trains_on_two_ray_workers(tmp_path: Path) -> None:
    """The hybrid family (elastic widths, sandwich rule) trains through the same Ray Train path: replicas stay
    identical and the checkpoint loads into a fresh supernet. (The quantization-policy family's Ray Train run is
    tests/test_recipes.py::test_quant_space_with_relative_base_on_ray_actors_and_ray_train.)"""
    from nasplat.model import load_checkpoint

    spaces = Path(__file__).parent / "spaces"
    cases = [
        ("hybrid-tiny.yaml", {"strategy": "sandwich", "strategy_options": {"n_random": 1}}),
    ]
    for name, extra in cases:
        space = load_space(spaces / name)
        data = DataSpec(name="digits", n_val=200, batch_size=32)
        settings = TrainSettings(epochs=1, batch_size=32, lr=0.05, max_steps_per_epoch=3, seed=1, **extra)
        result = train_supernet_ray(space, data, settings, tmp_path / name, workers=2)
        (record,) = result.history
        assert record["workers"] == 2 and record["steps"] == 3, name
        fresh = space.family.build_supernet(space, seed=99)
        assert load_checkpoint(fresh, result.checkpoint)["epochs_done"] == 1
