"""Pareto maths: non-dominated sets and hypervolume, on arrays and on studies (as pandas DataFrames)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from nasplat.errors import NasplatError


def _as_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise NasplatError(f"expected an (n, {len(directions)}) array of objective values, got shape {values.shape}")
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if bad:
        raise NasplatError(f"direction must be 'maximize' or 'minimize', got {bad[0]!r}")
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return values * signs


def non_dominated_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """True for each row no other row dominates (at least as good everywhere, better somewhere).

    Rows with NaN are never on the front. Duplicated points are all kept.
    """
    v = _as_minimization(values, directions)
    n = len(v)
    finite = np.all(np.isfinite(v), axis=1)
    mask = finite.copy()
    order = np.lexsort(v.T[::-1])  # sort by first objective, then the next ones
    kept: list[int] = []
    for i in order:
        if not finite[i]:
            continue
        p = v[i]
        if kept:
            k = v[kept]
            dominated = np.any(np.all(k <= p, axis=1) & np.any(k < p, axis=1))
            if dominated:
                mask[i] = False
                continue
        kept.append(int(i))
    assert len(mask) == n
    return mask


def hypervolume(values: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """Volume dominated by the points and bounded by ``reference`` (exact; 2-D sweep, n-D slicing).

    ``reference`` is in the objectives' own units and directions (e.g. accuracy 0 for a maximised accuracy).
    Points that do not strictly improve on the reference in every objective add nothing.
    """
    v = _as_minimization(values, directions)
    ref = _as_minimization(np.asarray([reference], dtype=float), directions)[0]
    v = v[np.all(np.isfinite(v), axis=1)]
    v = v[np.all(v < ref, axis=1)]
    if len(v) == 0:
        return 0.0
    v = v[non_dominated_mask(v, ["minimize"] * v.shape[1])]
    return float(_hv(v, ref))


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    d = points.shape[1]
    if d == 1:
        return float(ref[0] - points[:, 0].min())
    if d == 2:
        p = points[np.argsort(points[:, 0])]
        total, best_y = 0.0, ref[1]
        for x, y in p:
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    # slice along the last objective: between consecutive levels the dominated set is a (d-1)-D union
    p = points[np.argsort(points[:, -1])]
    total = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth <= 0:
            continue
        sub = p[: i + 1, :-1]
        sub = sub[non_dominated_mask(sub, ["minimize"] * (d - 1))]
        total += depth * _hv(sub, ref[:-1])
    return total


def knee_index(values: np.ndarray, directions: Sequence[str]) -> int:
    """Index of the front point closest to the ideal point after scaling each objective to [0, 1]."""
    v = _as_minimization(values, directions)
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (v - lo) / span
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


def median_reference(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """The median of each objective over ``values`` (NaN ignored): a strict reference point for hypervolume.

    The worst point of a whole table flatters any search (most of the volume it bounds is dominated by
    mediocre points that random sampling finds at once); against the median only points better than half the
    table in every objective count.
    """
    v = np.asarray(values, dtype=float)
    _as_minimization(v, directions)  # shape and direction checks
    finite = v[np.all(np.isfinite(v), axis=1)]
    if len(finite) == 0:
        raise NasplatError("no row with a value for every objective: no median reference")
    return np.median(finite, axis=0)


def hypervolume_ratio(
    found: np.ndarray, front: np.ndarray, reference: Sequence[float], directions: Sequence[str]
) -> float:
    """Hypervolume of ``found`` over that of ``front`` (the true front), both bounded by ``reference``."""
    whole = hypervolume(front, reference, directions)
    if whole <= 0:
        raise NasplatError("the true front dominates no volume beyond the reference point")
    if len(found) == 0:
        return 0.0
    return hypervolume(found, reference, directions) / whole


def front_share(found: Iterable[Hashable], front: Iterable[Hashable]) -> float:
    """Share of the true front's members (distinct identities, e.g. architecture keys) among ``found``."""
    members = set(front)
    if not members:
        raise NasplatError("the true front is empty")
    return len(members & set(found)) / len(members)
