"""Batched evaluation on Ray actors gives exactly the numbers in-process evaluation gives."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from nasplat.runfile import parse_run
from nasplat.search import run_search
from nasplat.study import load_study, make_storage

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")


@pytest.mark.slow
def test_ray_actor_pool_matches_in_process(tmp_path: Path) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    base = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_train": 600, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 1}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": 8,
        "batch_size": 8,
    }
    local = run_search(
        parse_run({**base, "run_dir": str(tmp_path / "a"), "study": "local"}), log=lambda _: None, progress=False
    )
    assert local.checkpoint is not None
    remote_run = {**base, "run_dir": str(tmp_path / "b"), "study": "ray", "workers": 2,
                  "supernet": {"checkpoint": str(local.checkpoint)}}  # fmt: skip
    try:
        remote = run_search(parse_run(remote_run), log=lambda _: None, progress=False)
    finally:
        import ray

        ray.shutdown()

    def results(url: str, name: str) -> dict[str, tuple[float, ...]]:
        study = load_study(make_storage(url), name)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        return {t.user_attrs["arch_key"]: tuple(t.values) for t in done}

    a, b = results(local.storage_url, "local"), results(remote.storage_url, "ray")
    assert len(a) == len(b) == 8
    assert a == b  # same seed, same proposals, same numbers from the actors
    study = load_study(make_storage(remote.storage_url), "ray")
    assert study.get_trials()[0].user_attrs["provenance"]["workers"] == 2
