"""Regression tests for the drifted copies issue 15 names: each shared recipe now has one home.

- a bundle's BatchNorm statistics are the ones behind its trial's stored accuracy (one calibration recipe for
  the estimator, export and fine-tune);
- a space rebuilt from its stored record keeps what it needs (a quant space's relative base file), in every
  stage that rebuilds one, Ray actors and Ray Train workers included;
- a space's hash covers the spaces it references.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from nasplat.search import parse_run
from nasplat.space import load_space, space_from_record

SPACES = Path(__file__).parent / "spaces"


def _copy_quant_space(folder: Path) -> Path:
    """quant-cell-digits.yaml and its relative base file, copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("quant-cell-digits.yaml", "cell-digits.yaml"):
        shutil.copy(SPACES / name, folder / name)
    return folder / "quant-cell-digits.yaml"


def test_hash_covers_the_base_space(tmp_path: Path) -> None:
    quant = _copy_quant_space(tmp_path / "a")
    before = load_space(quant)
    base = tmp_path / "a" / "cell-digits.yaml"
    data = yaml.safe_load(base.read_text())
    data["description"] = "edited: the same dimensions, another declaration"
    base.write_text(yaml.safe_dump(data))
    after = load_space(quant)
    assert after.spec_hash == before.spec_hash  # the quant file itself did not change ...
    assert after.hash != before.hash  # ... but the space did


def test_record_rebuilds_without_the_files(tmp_path: Path) -> None:
    quant = _copy_quant_space(tmp_path / "b")
    space = load_space(quant)
    record = space.to_record()
    assert set(record["bases"]) == {"cell-digits.yaml"}
    shutil.rmtree(tmp_path / "b")  # a study handed to a colleague: the space files are not there
    again = space_from_record(record)
    assert again.hash == space.hash and again.labels == space.labels
    arch = space.sample(__import__("numpy").random.default_rng(0))
    assert again.to_string(again.make(arch.as_dict())) == space.to_string(arch)


def test_record_with_a_wrong_hash_is_refused() -> None:
    from nasplat.errors import NasplatError

    record = load_space(SPACES / "cell-digits.yaml").to_record()
    record["hash"] = "000000000000"
    with pytest.raises(NasplatError, match="does not match its hash"):
        space_from_record(record, "study 'x' space")


def _run(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "space": str(SPACES / "cell-digits.yaml"),
        # dataset batch size, data seed and run seed all differ from the estimator's calibration, which must win
        "dataset": {"name": "digits", "n_train": 600, "n_val": 300, "batch_size": 32, "seed": 1},
        "supernet": {"train": {"epochs": 1, "lr": 0.05}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 3, "eval_batch_size": 100}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "params_count", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": 4,
        "batch_size": 4,
        "run_dir": str(tmp_path / "run"),
        "study": "recipes",
        "seed": 3,
    }
    run.update(extra)
    return run


def _bundle_module(bundle_dir: Path) -> Any:
    spec = importlib.util.spec_from_file_location("bundle_loader", bundle_dir / "load.py")
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.load(str(bundle_dir))


def test_bundle_and_finalist_reproduce_the_trials_accuracy(tmp_path: Path) -> None:
    from nasplat.datasets import DataSpec, load_splits
    from nasplat.export import export_trial, study_space
    from nasplat.finetune import FinetuneSettings, load_module, prepare_finalists
    from nasplat.model import Calibration, load_supernet, recalibrate_path
    from nasplat.search import run_search
    from nasplat.study import load_study, make_storage

    run = parse_run(_run(tmp_path))
    result = run_search(run, log=lambda _m: None, progress=False)
    study = load_study(make_storage(result.storage_url), result.study_name)
    trials = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    space = study_space(study)
    task = space.family.task(space)
    _, val = load_splits(DataSpec.model_validate(study.user_attrs["run_spec"]["dataset"]))
    finalists = prepare_finalists(study, space, trials[:2], FinetuneSettings(), tmp_path / "inits", log=lambda _m: None)
    train, _ = load_splits(DataSpec.model_validate(study.user_attrs["run_spec"]["dataset"]))
    for trial in trials[:2]:
        stored = {k: trial.user_attrs[f"metric:{k}"] for k in ("accuracy", "loss")}
        bundle = export_trial(study, trial, tmp_path / f"bundle-{trial.number}")
        module = _bundle_module(bundle.bundle_dir)
        got = task.evaluate(module, val.batches(100, seed=None, shuffle=False))
        assert got["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-9), f"trial {trial.number}: bundle"
        assert got["loss"] == pytest.approx(stored["loss"], rel=1e-5), f"trial {trial.number}: bundle"
        init = load_module(Path(finalists[str(trial.number)]["init"])).eval()
        got = task.evaluate(init, val.batches(100, seed=None, shuffle=False))
        assert got["loss"] == pytest.approx(stored["loss"], rel=1e-5), f"trial {trial.number}: finalist"
        # the recipe export and fine-tune used before (the dataset's batch size and data seed) gives other
        # statistics: the comparison above can tell them apart
        supernet, _ = load_supernet(space, study.user_attrs["checkpoint"])
        arch = space.from_key(trial.user_attrs["arch_key"])
        recalibrate_path(supernet, arch, task, train, Calibration(batches=3, batch_size=32, seed=1))
        with supernet.activate(arch):
            old = task.evaluate(supernet, val.batches(100, seed=None, shuffle=False))
        assert old["loss"] != pytest.approx(stored["loss"], rel=1e-5)


@pytest.mark.slow
def test_quant_space_with_relative_base_on_ray_actors_and_ray_train(tmp_path: Path) -> None:
    """Supernet-epoch recording, Ray Train workers and Ray evaluation actors all rebuild the space."""
    from nasplat.search import run_search
    from nasplat.study import load_study, make_storage

    quant = _copy_quant_space(tmp_path / "spaces")
    run = _run(tmp_path, space=os.path.relpath(quant, Path.cwd()), workers=2)
    # two Ray Train workers: the quantization-policy family's DDP path (tests/test_distributed_train.py runs hybrid's)
    run["supernet"] = {"train": {"epochs": 1, "lr": 0.05, "max_steps_per_epoch": 4}, "workers": 2}
    run["trials"] = 4
    result = run_search(parse_run(run), log=lambda _m: None, progress=False)
    study = load_study(make_storage(result.storage_url), result.study_name)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    assert all(0.0 < t.user_attrs["metric:accuracy"] <= 100.0 for t in done)  # percent
    assert "supernet:epoch:0001" in study.user_attrs  # recorded by the Ray Train driver/worker
    assert study.user_attrs["supernet:epoch:0001"]["workers"] == 2
    assert study.user_attrs["space_hash"] == load_space(quant).hash
