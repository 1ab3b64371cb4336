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
