"""The NNI comparison on NAS-Bench-201: cell strings, scoring of trajectories, and (where NNI is set up) a short run.

NNI is not part of nasplat's install: the run test uses the interpreter of ``.venv-nni`` (made by
``benchmarks/nni_env.sh``) or the current one when it has NNI, and is skipped otherwise. Nothing is installed here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nni_samples_are_the_tables_cells(shared_data: Path) -> None:
    nni_bench = _load("search_nb201_nni")
    val_of = nni_bench.load_table(shared_data / "nb201" / "cifar10-12epoch.csv")
    nni_bench.check_table(val_of)  # all 5**6 samples map one-to-one onto the table's rows
    sample = {"cell/0_1": "conv_3x3", "cell/0_2": "conv_3x3", "cell/1_2": "avg_pool_3x3",
              "cell/0_3": "skip_connect", "cell/1_3": "conv_3x3", "cell/2_3": "skip_connect"}  # fmt: skip
    arch = nni_bench.arch_string(sample)
    assert arch == "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert val_of[arch] == pytest.approx(82.834)  # the table's second row


def test_trajectories_are_scored_like_the_samplers(shared_data: Path, tmp_path: Path) -> None:
    import pandas as pd

    search = _load("search_nb201")
    table = pd.read_csv(shared_data / "nb201" / "cifar10-12epoch.csv")
    best = table.loc[table["val_acc"].idxmax()]
    worst = table.loc[table["val_acc"].idxmin()]
    path = tmp_path / "t.jsonl"
    with path.open("w") as f:
        for seed, cells in ((0, [worst, best]), (1, [worst, worst]), (2, [best])):
            for step, row in enumerate(cells, 1):
                rec = {"sampler": "x", "seed": seed, "step": step, "arch": row["arch"], "val_acc": row["val_acc"]}
                f.write(json.dumps(rec) + "\n")
    runs = search.load_trajectories(path, [0, 1])  # seed 2 is not asked for
    assert sorted(runs["x"]) == [0, 1]
    test_of = dict(zip(table["arch"], table["test_acc"], strict=True))
    best_test, best_val = float(table["test_acc"].max()), float(table["val_acc"].max())
    row = search._so_row("x", [runs["x"][0], runs["x"][1]], 0.0, test_of, best_test, best_val, [1, 2])
    gap_worst = best_test - float(worst["test_acc"])
    gap_best = best_test - float(best["test_acc"])
    assert row["regret@1"] == pytest.approx(gap_worst)
    assert row["regret@2"] == pytest.approx((gap_best + gap_worst) / 2)
    assert row["val_regret@2"] == pytest.approx((best_val - float(worst["val_acc"])) / 2)


def _nni_python() -> str | None:
    if importlib.util.find_spec("nni") is not None:
        return sys.executable
    venv = REPO / ".venv-nni" / "bin" / "python"
    return str(venv) if venv.exists() else None


@pytest.mark.slow
def test_nni_strategies_search_the_table(shared_data: Path, tmp_path: Path) -> None:
    python = _nni_python()
    if python is None:
        pytest.skip("NNI is not set up (bash benchmarks/nni_env.sh makes .venv-nni)")
    out = tmp_path / "nni.jsonl"
    env = {**os.environ, "NASPLAT_DATA_DIR": str(shared_data)}
    cmd = [python, str(REPO / "benchmarks" / "search_nb201_nni.py"), "--out", str(out), "--seeds", "0,1",
           "--budget", "12", "--strategies", "random,evolution-p20,tpe,rl"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    by_run: dict[tuple[str, int], list[dict]] = {}
    for r in recs:
        by_run.setdefault((r["sampler"], r["seed"]), []).append(r)
    names = ("nni-random", "nni-evolution-p20", "nni-tpe", "nni-rl")
    assert set(by_run) == {(n, s) for n in names for s in (0, 1)}
    val_of = _load("search_nb201_nni").load_table(shared_data / "nb201" / "cifar10-12epoch.csv")
    for run in by_run.values():
        assert [r["step"] for r in run] == list(range(1, 13))
        assert len({r["arch"] for r in run}) == 12  # distinct cells only
        assert all(val_of[r["arch"]] == r["val_acc"] for r in run)
    # seeds matter: the two random runs differ
    assert [r["arch"] for r in by_run[("nni-random", 0)]] != [r["arch"] for r in by_run[("nni-random", 1)]]
