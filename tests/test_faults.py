"""Fault injection: kill -9 of the search driver at several seeded points (nasplat.testing.faults)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasplat.testing.faults import kill_and_resume


@pytest.mark.slow
def test_driver_killed_three_times_loses_and_repeats_nothing(tmp_path: Path) -> None:
    kill_at = sorted(np.random.default_rng(17).choice(np.arange(4, 36), size=3, replace=False).tolist())
    report = kill_and_resume(tmp_path, trials=40, kill_at=kill_at)
    assert report.problems == []
    assert report.kills == 3
    assert report.lost == 0  # nothing finished was lost or changed
    assert report.complete == report.budget == 40  # the budget, exactly
    assert report.unretried == 0  # every trial a dead driver held was queued again
    assert report.duplicates <= 1  # resumed drivers do not replay proposals (chance repeats of a random sampler)


@pytest.mark.slow
def test_three_drivers_on_one_study_keep_the_budget(tmp_path: Path) -> None:
    """Three drivers started at once with the same run file (and seed) on one SQLite study."""
    from nasplat.testing.faults import parallel_drivers

    report = parallel_drivers(tmp_path, trials=36, drivers=3)
    assert report.problems == [] and report.failed_drivers == 0
    assert report.complete == report.budget == 36  # reserved by trial number: no overshoot
    assert report.duplicates <= 1  # the drivers do not replay one another's proposals (chance repeats only)
