"""Pareto maths against brute force and against Optuna's own hypervolume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nasplat.errors import NasplatError
from nasplat.pareto import hypervolume, knee_index, non_dominated_mask


def brute_front(v: np.ndarray) -> np.ndarray:
    n = len(v)
    out = np.ones(n, bool)
    for i in range(n):
        for j in range(n):
            if np.all(v[j] <= v[i]) and np.any(v[j] < v[i]):
                out[i] = False
    return out


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 4)), elements=st.integers(0, 6).map(float)))
def test_front_matches_brute_force_with_ties(v: np.ndarray) -> None:
    assert np.array_equal(non_dominated_mask(v, ["minimize"] * v.shape[1]), brute_front(v))


def test_maximize_is_handled_by_sign() -> None:
    acc_macs = np.array([[90.0, 10.0], [80.0, 5.0], [85.0, 20.0], [70.0, 5.0]])
    mask = non_dominated_mask(acc_macs, ["maximize", "minimize"])
    assert mask.tolist() == [True, True, False, False]
    # reference: accuracy 0, macs 30 -> union of [0,90]x[10,30] and [0,80]x[5,30]
    assert hypervolume(acc_macs, [0.0, 30.0], ["maximize", "minimize"]) == pytest.approx(90 * 20 + 80 * 5)


def test_nan_rows_are_never_on_the_front() -> None:
    v = np.array([[1.0, np.nan], [2.0, 2.0]])
    assert non_dominated_mask(v, ["minimize", "minimize"]).tolist() == [False, True]


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 25), st.integers(2, 4)), elements=st.floats(0, 1)))
def test_hypervolume_matches_optuna(v: np.ndarray) -> None:
    from optuna._hypervolume import compute_hypervolume

    ref = np.full(v.shape[1], 1.1)
    front = v[non_dominated_mask(v, ["minimize"] * v.shape[1])]
    expected = compute_hypervolume(front, ref)
    assert hypervolume(v, ref, ["minimize"] * v.shape[1]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_points_outside_reference_add_nothing_and_shapes_are_checked() -> None:
    assert hypervolume(np.array([[5.0, 5.0]]), [1.0, 1.0], ["minimize", "minimize"]) == 0.0
    with pytest.raises(NasplatError, match="expected an"):
        non_dominated_mask(np.zeros((3, 2)), ["minimize"])
    with pytest.raises(NasplatError, match="direction"):
        non_dominated_mask(np.zeros((3, 1)), ["up"])


def test_knee_prefers_balanced_point() -> None:
    v = np.array([[99.0, 100.0], [95.0, 10.0], [50.0, 1.0]])
    assert knee_index(v, ["maximize", "minimize"]) == 1
