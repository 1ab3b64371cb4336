"""The estimate's trust, as the study records it and every view prints it, and the finalists that measure it."""

from __future__ import annotations

import math

import optuna
import pytest

from nasplat.errors import NasplatError
from nasplat.finetune import off_front_trials, select_trials
from nasplat.study import FINETUNE_SUMMARY, trials_frame, trust_line


def test_trust_line_says_how_to_measure_until_measured() -> None:
    line = trust_line({})
    assert line.startswith("estimate trust: not measured") and "nasplat finetune --trial front+4" in line


def test_trust_line_names_tau_and_sample_size() -> None:
    summary = {"trials": [1, 2, 3, 4], "kendall_tau": 0.6667, "spearman": 0.8, "metric": "accuracy",
               "from_scratch": True, "run": "trust"}  # fmt: skip
    line = trust_line({FINETUNE_SUMMARY: summary})
    assert "Kendall tau 0.67" in line and "Spearman 0.80" in line
    assert "over 4 architectures trained from scratch" in line and "'trust'" in line
    tied = dict(summary, kendall_tau=None, spearman=math.nan)
    assert "undefined over 4 architectures" in trust_line({FINETUNE_SUMMARY: tied})


def _study() -> optuna.Study:
    """Ten architectures on two objectives (accuracy up, macs down); the front is trials 0, 1, 2."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "macs"])
    values = [(90, 10), (80, 5), (70, 1), (60, 8), (50, 9), (40, 7), (30, 12), (20, 11), (10, 6), (5, 20)]
    for i, v in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(values=list(v), user_attrs={"arch_key": f"a{i}", "arch_string": f"a{i}"})
        )
    return study


def test_off_front_trials_spread_over_the_first_objective() -> None:
    study = _study()
    frame = trials_frame(study)
    # off the front: trials 3..9, sorted by accuracy: 9 (5), 8, 7, 6, 5, 4, 3 (60); three evenly spaced ranks
    assert off_front_trials(frame, [0, 1, 2], ["accuracy", "macs"], 3) == [9, 6, 3]
    assert sorted(off_front_trials(frame, [0, 1, 2], ["accuracy", "macs"], 50)) == [3, 4, 5, 6, 7, 8, 9]
    assert off_front_trials(frame, [0, 1, 2], ["accuracy", "macs"], 0) == []


def test_select_front_plus_n() -> None:
    study = _study()
    assert sorted(t.number for t in select_trials(study, "front")) == [0, 1, 2]
    assert sorted(t.number for t in select_trials(study, "front+3")) == [0, 1, 2, 3, 6, 9]
    with pytest.raises(NasplatError, match="front\\+N needs a whole number"):
        select_trials(study, "front+x")
