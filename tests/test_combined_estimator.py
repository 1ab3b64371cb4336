"""The ``combined`` estimator: normal scores, the calibration model on synthetic data, stand-alone anchors, the
cache shared between processes, bad options, and a search that optimises its estimate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasplat import registry
from nasplat.datasets import DataSpec, load_splits
from nasplat.errors import NasplatError
from nasplat.space import SearchSpace, load_space
from nasplat.train import StandaloneBudget, TrainSettings, train_standalone, train_supernet
from nasplat_estimators.combined import CombinedEstimator, LinearCalibration, normal_scores

SPACE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(SPACE)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, space: SearchSpace) -> tuple[Path, DataSpec]:
    data = DataSpec(name="digits", n_val=200, batch_size=64, seed=0)
    train, _ = load_splits(data)
    run_dir = tmp_path_factory.mktemp("combined-run")
    settings = TrainSettings(epochs=1, batch_size=64, lr=0.05, seed=0, max_steps_per_epoch=8)
    train_supernet(
        space.family.build_supernet(space), space.family.task(space), train, settings, run_dir, progress=False
    )
    return run_dir, data


def test_normal_scores_are_monotone_finite_and_centred() -> None:
    ref = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    q = normal_scores(ref, ref)
    assert np.all(np.isfinite(q)) and q.sum() == pytest.approx(0.0, abs=1e-12)  # symmetric around the median
    assert list(np.argsort(q)) == list(np.argsort(ref))
    outside = normal_scores(np.array([-100.0, 100.0, np.nan]), ref)
    assert outside[0] == outside[2] < q.min() and outside[1] > q.max()  # NaN ranks lowest


def test_calibration_recovers_a_linear_truth_and_its_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = 70.0 + 4.0 * x[:, 0] + 1.0 * x[:, 1] + rng.normal(scale=2.0, size=400)
    cal = LinearCalibration(x, y, prior=np.array([0.5, 0.5]))
    test_x = rng.normal(size=(2000, 2))
    test_y = 70.0 + 4.0 * test_x[:, 0] + 1.0 * test_x[:, 1] + rng.normal(scale=2.0, size=2000)
    mean, std = cal.predict(test_x)
    assert cal.coef[1:] * cal.scale_y == pytest.approx([4.0, 1.0], abs=0.3)  # slopes, in the target's units
    assert np.corrcoef(mean, test_y)[0, 1] > 0.88  # the most the noise allows: sqrt(17 / 21) = 0.90
    assert np.median(std) == pytest.approx(2.0, rel=0.15)  # the noise, plus a little weight uncertainty
    inside = np.mean(np.abs(test_y - mean) <= std)
    assert 0.6 < inside < 0.76  # one predictive deviation covers about 68 %: calibrated


def test_calibration_on_few_anchors_stays_near_its_prior() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2))
    y = 10.0 * x[:, 1] + 50.0  # three anchors that favour the second signal only
    near = LinearCalibration(x, y, prior=np.array([1.0, 0.0]))
    many_x = rng.normal(size=(300, 2))
    many = LinearCalibration(many_x, 10.0 * many_x[:, 1] + 50.0, prior=np.array([1.0, 0.0]))
    assert 0.0 < near.coef[2] < many.coef[2]  # the second slope moved towards the data, less than many anchors move it
    _, std_few = near.predict(np.zeros((1, 2)))
    _, std_many = many.predict(np.zeros((1, 2)))
    assert std_few[0] > std_many[0]  # fewer anchors: less certain


def test_train_standalone_is_seeded_and_learns(space: SearchSpace) -> None:
    data = DataSpec(name="digits", n_val=300, batch_size=64, seed=0)
    train, val = load_splits(data)
    arch = space.sample(np.random.default_rng(3))
    task = space.family.task(space)
    budget = StandaloneBudget(steps=60, batch_size=32, lr=0.05)

    def run(seed: int) -> dict[str, float]:
        model = space.family.build_supernet(space, seed=0).extract(arch)
        return train_standalone(model, task, train, val, budget, seed=seed)

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert first["accuracy"] > 30.0  # ten classes: chance is 10 %
    with pytest.raises(NasplatError, match="steps >= 1"):
        StandaloneBudget(steps=0)


@pytest.mark.slow
def test_combined_estimator_end_to_end(tmp_path: Path, digits_run: tuple[Path, DataSpec], space: SearchSpace) -> None:
    run_dir, data = digits_run
    options = {
        "checkpoint": run_dir,
        "data": data,
        "reference": 8,
        "anchors": 3,
        "anchor_steps": 20,
        "anchor_batch_size": 32,
        "calib_batches": 2,
        "eval_batch_size": 100,
        "zero_cost": {"batch_size": 8, "reference": 8},
        "cache_dir": tmp_path / "cache",
    }
    est = registry.build("estimator", "combined", space, options=options)
    assert isinstance(est, CombinedEstimator)
    metrics = est.metrics()
    assert metrics["accuracy"] == "maximize" and metrics["accuracy_std"] == "minimize"
    assert {"inherited_accuracy", "inherited_loss", "loss", "zero_cost"} <= set(metrics)
    assert CombinedEstimator.declared_metrics(space, options) == metrics
    archs = [space.sample(np.random.default_rng(s)) for s in (11, 12, 13)]
    rows = est.evaluate(archs)
    assert [set(r) for r in rows] == [set(metrics)] * 3
    for r in rows:
        assert math.isfinite(r["accuracy"]) and r["accuracy_std"] > 0.0
    assert est.evaluate(list(reversed(archs)))[::-1] == rows  # one architecture's estimate depends only on it

    summary = est.summary()
    assert summary["anchors"] == 3 and summary["reference"] == 8
    assert {"inherited_tau", "zero_cost_tau", "prior_tau", "coefficients", "noise_std"} <= set(summary)
    prov = est.provenance()
    assert prov["estimator"] == "combined" and prov["calibrated"] == "yes" and prov["anchors"] == "3"

    # the reference and the anchors are kept: a second estimator (another Ray actor, a resumed run) reads them
    files = list((tmp_path / "cache").glob("combined-*.json"))
    assert len(files) == 1
    kept = json.loads(files[0].read_text())
    assert len(kept["keys"]) == 8 and len(kept["anchors"]) == 3
    again = CombinedEstimator(space, **options)  # type: ignore[arg-type]

    def measure_again() -> dict[str, object]:
        raise AssertionError("the cached reference was measured again")

    again._measure = measure_again  # type: ignore[method-assign]
    assert again.evaluate(archs) == rows

    # a damaged cache file is measured again and replaced whole
    files[0].write_text("{not json")
    fresh = CombinedEstimator(space, **options)  # type: ignore[arg-type]
    assert fresh.evaluate(archs) == rows
    assert json.loads(files[0].read_text())["keys"] == kept["keys"]

    # without anchors: a ranking in the inherited metric's units, not calibrated
    plain = CombinedEstimator(space, **{**options, "anchors": 0, "cache_dir": None})  # type: ignore[arg-type]
    assert plain.provenance()["calibrated"] == "no"
    assert all(math.isfinite(r["accuracy"]) and r["accuracy_std"] >= 0.0 for r in plain.evaluate(archs))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("weight", 1.5, "weight must be within"),
        ("anchors", 40, "anchors must be within"),
        ("reference", 2, "reference must be >= 4"),
        ("zero_cost", {"proxies": ["nope"]}, "unknown proxy 'nope'"),
        ("zero_cost", {"colour": 1}, "colour"),
    ],
)
def test_bad_options_are_one_clear_line(
    digits_run: tuple[Path, DataSpec], space: SearchSpace, option: str, value: object, message: str
) -> None:
    run_dir, data = digits_run
    with pytest.raises(NasplatError, match=message):
        CombinedEstimator(space, run_dir, data, **{option: value})  # type: ignore[arg-type]


@pytest.mark.slow
def test_search_optimises_the_combined_estimate(tmp_path: Path) -> None:
    from nasplat.search import load_run, run_search
    from nasplat.study import load_study, make_storage

    run = {
        "space": str(SPACE),
        "dataset": {"name": "digits", "n_train": 400, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 1, "max_steps_per_epoch": 3}},
        "estimator": {
            "name": "combined",
            "options": {
                "reference": 6,
                "anchors": 2,
                "anchor_steps": 5,
                "calib_batches": 1,
                "zero_cost": {"batch_size": 8, "reference": 6},
            },
        },
        "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        "sampler": {"name": "random"},
        "trials": 4,
        "batch_size": 2,
        "run_dir": str(tmp_path / "run"),
        "study": "combined",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    run_search(load_run(path), run_file=path, log=lambda _line: None, progress=False)
    study = load_study(make_storage(f"sqlite:///{tmp_path / 'run' / 'study.db'}"), "combined")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    for t in done:
        metrics = {k[len("metric:") :]: v for k, v in t.user_attrs.items() if k.startswith("metric:")}
        assert metrics["accuracy"] == t.values[0]
        assert "accuracy_std" in metrics and "inherited_accuracy" in metrics
    assert list((tmp_path / "run" / "estimator").glob("combined-*.json"))  # measured once, kept with the run
