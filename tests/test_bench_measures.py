"""The strict multi-objective benchmark measures (median-reference hypervolume ratio, share of the true front
found) on a hand-made table whose answers are worked out by hand, and as ``nasplat bench tabular`` prints them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nasplat.errors import NasplatError
from nasplat.pareto import front_share, hypervolume, hypervolume_ratio, median_reference
from nasplat.search import BenchObjective, TableFront, mean_sem, score_runs
from nasplat.space import SearchSpace, load_space

# acc up, lat down. Front: A, B, H (B's twin: another cell with the same values), C, D; the rest dominated.
# Medians: acc 80 (55 60 70 75 [80] 85 90 90 95), lat 5 (1 2 4 4 [5] 6 7 8 9). Against the reference (80, 5)
# only B/H (90, 4) and C (85, 2) count: B's box 10 x 1 plus C's 5 x 3 minus their overlap 5 x 1 = 20.
ROWS = {"A": (95, 8), "B": (90, 4), "H": (90, 4), "C": (85, 2), "D": (70, 1),
        "E": (80, 6), "G": (75, 5), "F": (60, 7), "I": (55, 9)}  # fmt: skip
FRONT = {"A", "B", "H", "C", "D"}
OBJS = [BenchObjective("acc", "maximize"), BenchObjective("lat", "minimize")]


@pytest.fixture(scope="module")
def nb201() -> SearchSpace:
    return load_space("nb201")


@pytest.fixture(scope="module")
def cells(nb201: SearchSpace) -> dict[str, str]:
    archs = [nb201.to_string(a) for _, a in zip(ROWS, nb201.enumerate(), strict=False)]
    return dict(zip(ROWS, archs, strict=True))


@pytest.fixture(scope="module")
def table(cells: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"arch": cells[k], "acc": a, "lat": t} for k, (a, t) in ROWS.items()])


def test_pure_measures_on_the_hand_made_table() -> None:
    values = np.array(list(ROWS.values()), dtype=float)
    directions = ["maximize", "minimize"]
    ref = median_reference(values, directions)
    assert ref.tolist() == [80.0, 5.0]
    front = values[[k in FRONT for k in ROWS]]
    assert hypervolume(front, ref, directions) == pytest.approx(20.0)
    found = np.array([ROWS[k] for k in "CEGF"], dtype=float)
    assert hypervolume_ratio(found, front, ref, directions) == pytest.approx(15 / 20)
    assert hypervolume_ratio(found[:0], front, ref, directions) == 0.0
    assert front_share("CEGF", FRONT) == pytest.approx(1 / 5)
    assert front_share(["H", "C", "C"], FRONT) == pytest.approx(2 / 5)  # distinct members, B's twin counts alone
    with np.errstate(all="ignore"):
        assert median_reference(np.vstack([values, [np.nan, 0.0]]), directions).tolist() == [80.0, 5.0]
    with pytest.raises(NasplatError, match="no volume"):
        hypervolume_ratio(found, front[:1], ref, directions)  # A alone does not beat the median latency


def test_table_front_scores_runs(nb201: SearchSpace, cells: dict[str, str], table: pd.DataFrame,
                                 tmp_path: Path) -> None:  # fmt: skip
    tf = TableFront.of_table(nb201, table, "arch", OBJS)
    assert tf.reference == (80.0, 5.0)
    assert tf.front_keys == {nb201.from_string(cells[k]).key for k in FRONT}
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    assert TableFront.of_table(nb201, path, "arch", OBJS).front_keys == tf.front_keys

    def recs(seed: int, names: str) -> list[dict]:
        return [{"seed": seed, "step": i + 1, "arch": cells[k], "acc": ROWS[k][0], "lat": ROWS[k][1]}
                for i, k in enumerate(names)]  # fmt: skip

    assert tf.score(nb201, recs(0, "CEGF")) == pytest.approx({"hv_ratio": 0.75, "front_share": 0.2})
    assert tf.score(nb201, recs(0, "HC")) == pytest.approx({"hv_ratio": 1.0, "front_share": 0.4})
    assert tf.score(nb201, recs(0, "ABHCD")) == pytest.approx({"hv_ratio": 1.0, "front_share": 1.0})
    # per budget: each seed's first B steps (records may come in any order)
    runs = [*reversed(recs(0, "EGCB")), *recs(1, "DIAH")]
    scores = score_runs(tf, nb201, runs, [2, 4])
    assert scores[2]["hv_ratio"] == pytest.approx([0.0, 0.0])
    assert scores[2]["front_share"] == pytest.approx([0.0, 0.2])
    assert scores[4]["hv_ratio"] == pytest.approx([1.0, 10 / 20])
    assert scores[4]["front_share"] == pytest.approx([0.4, 0.6])
    mean, sem = mean_sem([0.4, 0.6])
    assert mean == pytest.approx(0.5) and sem == pytest.approx(0.1)
    with pytest.raises(NasplatError, match="no column 'latency'"):
        TableFront.of_table(nb201, table, "arch", [OBJS[0], BenchObjective("latency", "minimize")])


def test_bench_tabular_cli_prints_both_measures(nb201: SearchSpace, tmp_path: Path) -> None:
    """A small multi-objective run: the printed hypervolume ratio and front share are those of the written
    trajectories, worked out here from the table's construction (every other cell on the front)."""
    rng = np.random.default_rng(0)
    archs = [nb201.to_string(a) for a in nb201.enumerate()]
    on_front = np.arange(len(archs)) % 2 == 0
    # front cells trade acc for lat; each other cell is 0.5 slower than one as accurate (a front cell in
    # [acc, acc + 0.5] dominates it: among 7,800 uniform front cells there always is one)
    acc = np.where(on_front, rng.random(len(archs)), 0.5 * rng.random(len(archs)))
    lat = acc + np.where(on_front, 0.0, 0.5)
    table = tmp_path / "table.csv"
    pd.DataFrame({"cell": archs, "acc": acc, "lat": lat}).to_csv(table, index=False)
    out = tmp_path / "traj.jsonl"
    cmd = [sys.executable, "-m", "nasplat.cli", "bench", "tabular", "--table", str(table), "--arch-column", "cell",
           "--space", "nb201", "--objective", "acc:max", "--objective", "lat:min", "--sampler", "random",
           "--budget", "40", "--seeds", "0-1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 80
    front_cells = {a for a, f in zip(archs, on_front, strict=True) if f}
    ref = [float(np.median(acc)), float(np.median(lat))]
    dirs = ["maximize", "minimize"]
    true_hv = hypervolume(np.c_[acc, lat][on_front], ref, dirs)
    ratios, shares = [], []
    for seed in (0, 1):
        mine = [r for r in recs if r["seed"] == seed]
        ratios.append(hypervolume(np.array([[r["acc"], r["lat"]] for r in mine]), ref, dirs) / true_hv)
        shares.append(len({r["arch"] for r in mine} & front_cells) / len(front_cells))
    text = proc.stdout
    assert f"median reference: acc {ref[0]:g}, lat {ref[1]:g}" in text
    hv = re.search(r"hypervolume ratio .*: ([0-9.]+) ± ([0-9.]+)", text)
    share = re.search(r"share of the true front found \((\d+) cells\): ([0-9.]+) % ± ([0-9.]+) %", text)
    assert hv and share, text
    assert float(hv.group(1)) == pytest.approx(np.mean(ratios), abs=1e-4)
    assert float(hv.group(2)) == pytest.approx(np.std(ratios, ddof=1) / np.sqrt(2), abs=1e-4)
    assert int(share.group(1)) == len(front_cells)
    assert float(share.group(2)) == pytest.approx(100 * np.mean(shares), abs=0.051)
    assert 0 < np.mean(ratios) < 1 and np.mean(shares) > 0
