"""Few-shot latency on a new device: the `fewshot_latency` predictor's contract, the covering design, and the
`--prior` tables of `nasplat predictor fit` (joined when given more than once; bad tables fail in one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nasplat.errors import NasplatError
from nasplat.space import SearchSpace, load_space
from nasplat_estimators.learned import FewShotLatencyModel, covering_design, latency_metrics, space_features

SPACES = Path(__file__).parent / "spaces"
SPACE_FILE = str(SPACES / "cell-digits.yaml")


@pytest.fixture(scope="module")
def digits() -> SearchSpace:
    return load_space(SPACE_FILE)


@pytest.fixture(scope="module")
def devices(digits: SearchSpace) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """Every architecture of the small space, three prior devices (sums of per-layer costs) and a target that
    mixes two of them."""
    archs = list(digits.enumerate())
    x, _ = space_features(digits, archs)
    rng = np.random.default_rng(1)
    base = rng.uniform(0.01, 0.2, x.shape[1])
    prior = {f"dev{i}_ms": 0.2 + x @ (base * rng.uniform(0.7, 1.4, x.shape[1])) for i in range(3)}
    target = 0.3 + 0.5 * prior["dev0_ms"] + 0.8 * prior["dev2_ms"]
    return [digits.to_string(a) for a in archs], prior, target


def write_tables(
    tmp_path: Path, devices: tuple[list[str], dict[str, np.ndarray], np.ndarray], rows: np.ndarray
) -> None:
    strings, prior, target = devices
    pd.DataFrame({"arch": strings, **prior}).to_csv(tmp_path / "prior.csv", index=False)
    pd.DataFrame({"arch": strings, "dev0_ms": prior["dev0_ms"]}).to_csv(tmp_path / "prior_a.csv", index=False)
    pd.DataFrame({"arch": strings, "dev1_ms": prior["dev1_ms"], "dev2_ms": prior["dev2_ms"]}).to_csv(
        tmp_path / "prior_b.csv", index=False
    )
    pd.DataFrame({"arch": [strings[i] for i in rows], "target_ms": target[rows]}).to_csv(
        tmp_path / "few.csv", index=False
    )
    pd.DataFrame({"arch": strings, "target_ms": target}).to_csv(tmp_path / "all.csv", index=False)


def fit_predict(tmp_path: Path, label: str, prior: list[Path], seed: int = 0) -> np.ndarray:
    from nasplat.cli import fit_from_table, predict_from_table

    out = tmp_path / label
    fit_from_table(SPACE_FILE, tmp_path / "few.csv", "arch", "target_ms", "fewshot_latency", out, prior, seed)
    predict_from_table(out, tmp_path / "all.csv", "arch", tmp_path / f"{label}.csv")
    return pd.read_csv(tmp_path / f"{label}.csv")["predicted"].to_numpy()


def test_covering_design_is_seeded_and_reads_only_the_prior(
    devices: tuple[list[str], dict[str, np.ndarray], np.ndarray],
) -> None:
    _, prior, _ = devices
    table = np.stack(list(prior.values()), axis=1)
    a = covering_design(table, 6, seed=3)
    assert np.array_equal(a, covering_design(table, 6, seed=3))  # same seed, same rows
    assert len(set(a.tolist())) == 6
    assert not np.array_equal(np.sort(a), np.sort(covering_design(table, 6, seed=4)))
    with pytest.raises(NasplatError, match="cannot choose"):
        covering_design(table, len(table) + 1, seed=0)


def test_fit_predict_with_joined_priors_matches_one_table_and_is_deterministic(
    digits: SearchSpace, devices: tuple[list[str], dict[str, np.ndarray], np.ndarray], tmp_path: Path
) -> None:
    """Two `--prior` tables joined on the architecture column give the same model as one table holding both;
    the same seed gives the same predictions; the prior-pretrained fit from 6 covering cells is accurate."""
    _, prior, target = devices
    rows = covering_design(np.stack(list(prior.values()), axis=1), 6, seed=0)
    write_tables(tmp_path, devices, rows)
    one = fit_predict(tmp_path, "one", [tmp_path / "prior.csv"])
    again = fit_predict(tmp_path, "again", [tmp_path / "prior.csv"])
    joined = fit_predict(tmp_path, "joined", [tmp_path / "prior_a.csv", tmp_path / "prior_b.csv"])
    assert np.array_equal(one, again)
    assert np.allclose(one, joined)
    assert latency_metrics(target, one)["within_10pct"] > 0.95


def test_model_contract_fit_before_predict_and_bad_measurements() -> None:
    model = FewShotLatencyModel()
    with pytest.raises(NasplatError, match="not fitted"):
        model.predict(np.zeros((2, 3)))
    x = np.eye(4)
    with pytest.raises(NasplatError, match="positive"):
        model.fit(x, np.array([1.0, -1.0, 2.0, 3.0]))
    with pytest.raises(NasplatError, match="at least 2"):
        model.fit(x[:1], np.array([1.0]))


def nasplat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasplat.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["missing_cells", "non_numeric", "same_column_twice"])
def test_bad_prior_tables_fail_in_one_line(
    devices: tuple[list[str], dict[str, np.ndarray], np.ndarray], tmp_path: Path, case: str
) -> None:
    strings, prior, _ = devices
    rows = np.arange(6)
    write_tables(tmp_path, devices, rows)
    extra: list[str] = []
    if case == "missing_cells":  # the prior lacks two of the measured cells
        pd.DataFrame({"arch": strings[2:], "dev0_ms": prior["dev0_ms"][2:]}).to_csv(tmp_path / "bad.csv", index=False)
        expected = "2 of the 6 measured architectures are not in the prior table"
    elif case == "non_numeric":
        bad = pd.DataFrame({"arch": strings, "dev0_ms": prior["dev0_ms"], "device_name": "pixel"})
        bad.to_csv(tmp_path / "bad.csv", index=False)
        expected = "prior column 'device_name' must hold numbers; row 2 holds 'pixel'"
    else:
        pd.DataFrame({"arch": strings, "dev0_ms": prior["dev0_ms"]}).to_csv(tmp_path / "bad.csv", index=False)
        extra = ["--prior", str(tmp_path / "prior_a.csv")]
        expected = "prior column 'dev0_ms' is also in"
    proc = nasplat(
        "predictor", "fit", "--space", SPACE_FILE, "--table", str(tmp_path / "few.csv"), "--target", "target_ms",
        "--model", "fewshot_latency", "--out", str(tmp_path / "out"), "--prior", str(tmp_path / "bad.csv"), *extra,
    )  # fmt: skip
    assert expected in one_line_error(proc)
