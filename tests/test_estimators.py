"""Accuracy estimators: tabular look-up (real NAS-Bench-201 table and small tables) and supernet inheritance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nasplat import registry
from nasplat.datasets import DataSpec, default_data_dir, load_splits
from nasplat.errors import NasplatError
from nasplat.space import SearchSpace, load_space
from nasplat.train import TrainSettings, train_supernet
from nasplat_estimators.accuracy import SupernetEstimator, TabularEstimator

SPACES = Path(__file__).parent / "spaces"
NB201_TABLE = default_data_dir() / "nb201" / "cifar10-12epoch.csv"

# the benchmark table's second row
KNOWN_ROW = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(scope="module")
def nb201() -> SearchSpace:
    return load_space("nb201")


@pytest.fixture(scope="module")
def digits_space() -> SearchSpace:
    return load_space(SPACES / "cell-digits.yaml")


def test_registered() -> None:
    assert registry.get("estimator", "tabular") is TabularEstimator
    assert registry.get("estimator", "supernet") is SupernetEstimator


# ------------------------------------------------------------------------------------------------------------
# tabular


@pytest.mark.skipif(not NB201_TABLE.is_file(), reason=f"NAS-Bench-201 table not found at {NB201_TABLE}")
def test_tabular_real_nb201_table(nb201: SearchSpace) -> None:
    est = TabularEstimator(nb201, NB201_TABLE)
    assert len(est) == 15_625
    assert est.metrics() == {"val_acc": "maximize", "test_acc": "maximize"}
    arch = nb201.from_string(KNOWN_ROW)
    (row,) = est.evaluate([arch])
    assert row == {"val_acc": pytest.approx(82.834), "test_acc": pytest.approx(88.22)}
    # every member of the space is answered, in order
    rng = np.random.default_rng(0)
    archs = [nb201.sample(rng) for _ in range(50)]
    rows = est.evaluate(archs)
    assert len(rows) == 50 and all(0 <= r["test_acc"] <= 100 for r in rows)
    assert max(r["test_acc"] for r in est.evaluate(list(nb201.enumerate()))) == pytest.approx(89.16)
    prov = est.provenance()
    assert prov["estimator"] == "tabular" and prov["space_hash"] == nb201.hash and len(prov["table_sha256"]) == 12

    latency = NB201_TABLE.with_name("latency.csv")
    if latency.is_file():
        lat = TabularEstimator(nb201, latency, columns={"pixel3_ms": "minimize"})
        assert lat.metrics() == {"pixel3_ms": "minimize"}
        assert lat.evaluate([arch])[0]["pixel3_ms"] == pytest.approx(17.2381)


def _cell(space: SearchSpace, **edges: str) -> str:
    ops = {f"cell.edge_{e}": "none" for e in ("1_0", "2_0", "2_1", "3_0", "3_1", "3_2")}
    ops.update({f"cell.edge_{k.removeprefix('e')}": v for k, v in edges.items()})
    return space.to_string(space.make(ops))


def test_tabular_small_table(tmp_path: Path, nb201: SearchSpace) -> None:
    a = _cell(nb201, e1_0="nor_conv_3x3", e3_1="skip_connect")
    b = _cell(nb201, e3_0="nor_conv_1x1")
    table = tmp_path / "table.csv"
    table.write_text(f"arch,top1_acc,latency_ms,note\n{a},91.5,3.25,x\n{b},60.0,1.0,y\n")
    est = TabularEstimator(nb201, table)
    # inferred: numeric columns only; 'acc' in the name -> maximize, else minimize
    assert est.metrics() == {"top1_acc": "maximize", "latency_ms": "minimize"}
    rows = est.evaluate([nb201.from_string(b), nb201.from_string(a)])
    assert rows == [{"top1_acc": 60.0, "latency_ms": 1.0}, {"top1_acc": 91.5, "latency_ms": 3.25}]

    # canonical look-up: node 1 and node 2 swapped (edge_2_1 is none) computes the same network
    swapped = nb201.from_string(_cell(nb201, e2_0="nor_conv_3x3", e3_2="skip_connect"))
    assert est.evaluate([swapped]) == [{"top1_acc": 91.5, "latency_ms": 3.25}]
    # ... and so does a cell with an extra dead edge (into node 1, which then feeds nothing)
    dead = nb201.from_string(_cell(nb201, e3_0="nor_conv_1x1", e1_0="avg_pool_3x3"))
    assert est.evaluate([dead])[0]["top1_acc"] == 60.0

    explicit = TabularEstimator(nb201, table, columns={"latency_ms": "minimize"})
    assert explicit.evaluate([nb201.from_string(a)]) == [{"latency_ms": 3.25}]

    unknown = nb201.from_string(_cell(nb201, e3_0="avg_pool_3x3"))
    with pytest.raises(NasplatError, match=r"\|avg_pool_3x3~0\|.* is not in benchmark table"):
        est.evaluate([unknown])


def test_tabular_key_and_json_forms(tmp_path: Path, digits_space: SearchSpace) -> None:
    import pandas as pd

    a = digits_space.make({label: "nor_conv_3x3" for label in digits_space.labels})
    b = digits_space.make({label: "skip_connect" for label in digits_space.labels})
    table = tmp_path / "t.csv"
    pd.DataFrame({"cell": [a.key, b.to_json()], "err": [1.5, 2.5]}).to_csv(table, index=False)
    est = TabularEstimator(digits_space, table, arch_column="cell", columns={"err": "minimize"})
    assert est.evaluate([b, a]) == [{"err": 2.5}, {"err": 1.5}]


def test_tabular_errors(tmp_path: Path, nb201: SearchSpace) -> None:
    with pytest.raises(NasplatError, match="file not found"):
        TabularEstimator(nb201, tmp_path / "missing.csv")
    a = _cell(nb201, e1_0="nor_conv_3x3")
    table = tmp_path / "t.csv"
    table.write_text(f"cell,acc,name\n{a},50.0,x\n")
    with pytest.raises(NasplatError, match="no column 'arch'; columns present: cell, acc, name"):
        TabularEstimator(nb201, table)
    with pytest.raises(NasplatError, match="no column 'top1'; columns present: cell, acc, name"):
        TabularEstimator(nb201, table, arch_column="cell", columns={"top1": "maximize"})
    with pytest.raises(NasplatError, match="'name' is not numeric"):
        TabularEstimator(nb201, table, arch_column="cell", columns={"name": "maximize"})
    with pytest.raises(NasplatError, match="unknown direction 'up'; allowed: maximize, minimize"):
        TabularEstimator(nb201, table, arch_column="cell", columns={"acc": "up"})
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,acc\n|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.0\n")
    with pytest.raises(NasplatError, match=r"row 2: .*unknown op 'nor_conv_9x9'"):
        TabularEstimator(nb201, bad)
    dup = tmp_path / "dup.csv"
    dup.write_text(f"arch,acc\n{a},1.0\n{a},2.0\n")
    with pytest.raises(NasplatError, match="rows 2 and 3 with different values"):
        TabularEstimator(nb201, dup)
    other = load_space(SPACES / "cell-digits.yaml")
    est = TabularEstimator(nb201, table, arch_column="cell")
    with pytest.raises(NasplatError, match="belongs to space 'cell-digits'"):
        est.evaluate([other.sample(np.random.default_rng(0))])


# ------------------------------------------------------------------------------------------------------------
# supernet


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, digits_space: SearchSpace) -> tuple[Path, DataSpec]:
    data = DataSpec(name="digits", n_val=200, batch_size=64, seed=0)
    train, _ = load_splits(data)
    supernet = digits_space.family.build_supernet(digits_space)
    run_dir = tmp_path_factory.mktemp("digits-run")
    settings = TrainSettings(epochs=1, batch_size=64, lr=0.05, seed=0, max_steps_per_epoch=8)
    train_supernet(supernet, digits_space.family.task(digits_space), train, settings, run_dir, progress=False)
    return run_dir, data


@pytest.mark.slow
def test_supernet_estimator(digits_run: tuple[Path, DataSpec], digits_space: SearchSpace) -> None:
    run_dir, data = digits_run
    est = SupernetEstimator(digits_space, run_dir, data, eval_batch_size=128, calib_batches=3, seed=0)
    assert est.metrics() == {"accuracy": "maximize", "loss": "minimize"}
    rng = np.random.default_rng(5)
    archs = [digits_space.sample(rng) for _ in range(3)]
    first = est.evaluate(archs)
    second = est.evaluate(list(reversed(archs)))[::-1]
    assert first == second  # deterministic and independent of evaluation order
    for row in first:
        assert set(row) == {"accuracy", "loss"}
        assert 0.0 <= row["accuracy"] <= 100.0 and math.isfinite(row["loss"])
    prov = est.provenance()
    assert prov["estimator"] == "supernet"
    assert prov["checkpoint_space_hash"] == digits_space.hash
    assert prov["dataset"] == "digits" and prov["n_val"] == "200" and prov["seed"] == "0"
    assert Path(prov["checkpoint"]).parent.name == "checkpoints"

    # a fresh estimator on the same checkpoint gives the same numbers
    again = SupernetEstimator(digits_space, run_dir, data, eval_batch_size=128, calib_batches=3, seed=0)
    assert again.evaluate(archs) == first


def test_supernet_estimator_wrong_space(digits_run: tuple[Path, DataSpec]) -> None:
    run_dir, data = digits_run
    with pytest.raises(NasplatError, match="hash"):
        SupernetEstimator(load_space("nb201-cpu"), run_dir, data)
