"""The estimator suite: declared metrics returned for every architecture, deterministic results, provenance."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._common import Check, expect, is_number, run_checks, sample_archs

if TYPE_CHECKING:
    from nasplat.measure import Estimator
    from nasplat.space import Architecture, SearchSpace

EstimatorFactory = Callable[[], "Estimator"]
DIRECTIONS = ("maximize", "minimize")


def _what(est: Estimator | None, space: SearchSpace) -> str:
    name = getattr(est, "name", None) or type(est).__name__
    return f"estimator '{name}' (space '{space.name}')"


def _same(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]]) -> bool:
    def eq(x: float, y: float) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return len(a) == len(b) and all(set(r) == set(s) and all(eq(r[k], s[k]) for k in r) for r, s in zip(a, b))


def check_metrics_declared(make: EstimatorFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                           options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """``metrics()`` maps at least one metric name to ``"maximize"`` or ``"minimize"``, the same on every call;
    with ``options`` (what the estimator was built with), ``declared_metrics(space, options)`` is None or the
    same mapping."""
    est = make()
    what, check = _what(est, space), "metrics declared"
    metrics = est.metrics()
    expect(isinstance(metrics, dict) and metrics, what, check, f"metrics() must be a non-empty dict, got {metrics!r}")
    for name, direction in metrics.items():
        expect(isinstance(name, str) and name, what, check, f"metric name {name!r} is not a non-empty string")
        expect(direction in DIRECTIONS, what, check, f"metric '{name}': direction {direction!r} not in {DIRECTIONS}")
    expect(est.metrics() == metrics, what, check, "metrics() changes between calls")
    if options is not None:
        told = type(est).declared_metrics(space, options)
        expect(told is None or told == metrics, what, check,
               f"declared_metrics() says {told}, the built estimator returns {metrics}")  # fmt: skip


def check_metrics_returned(make: EstimatorFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                           options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """``evaluate`` returns one dict per architecture, in order, holding every metric of ``metrics()`` as a
    number; an empty batch gives an empty list."""
    est = make()
    what, check = _what(est, space), "metrics returned"
    archs = list(archs) if archs is not None else sample_archs(space, 3)
    declared = est.metrics()
    results = est.evaluate(archs)
    expect(isinstance(results, list) and len(results) == len(archs), what, check,
           f"evaluate() of {len(archs)} architectures must return a list of {len(archs)} dicts")  # fmt: skip
    for arch, res in zip(archs, results):
        expect(isinstance(res, dict), what, check, f"{space.to_string(arch)}: result {res!r} is not a dict")
        missing = [m for m in declared if m not in res]
        expect(not missing, what, check, f"{space.to_string(arch)}: declared metrics missing: {missing}")
        bad = {k: v for k, v in res.items() if not is_number(v)}
        expect(not bad, what, check, f"{space.to_string(arch)}: values that are not numbers: {bad}")
    expect(est.evaluate([]) == [], what, check, "evaluate([]) must return []")


def check_deterministic(make: EstimatorFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                        options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Built twice the same way, the estimator gives the same numbers; evaluating again, one architecture at a
    time or in another order changes nothing (batches can be split between workers)."""
    est = make()
    what, check = _what(est, space), "deterministic"
    archs = list(archs) if archs is not None else sample_archs(space, 3)
    first = est.evaluate(archs)
    expect(_same(est.evaluate(archs), first), what, check, "evaluating the same batch again gives other numbers")
    expect(_same(make().evaluate(archs), first), what, check, "a second instance built the same way disagrees")
    expect(_same(est.evaluate(archs[::-1]), first[::-1]), what, check, "the batch's order changes the numbers")
    expect(_same(est.evaluate(archs[-1:]), first[-1:]), what, check, "an architecture evaluated alone differs")


def check_provenance(make: EstimatorFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                     options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """``provenance()`` maps non-empty strings to strings or numbers (stored with every result, as JSON) and
    names the estimator under ``"estimator"``."""
    est = make()
    what, check = _what(est, space), "provenance"
    prov = est.provenance()
    expect(isinstance(prov, dict), what, check, f"provenance() must be a dict, got {type(prov).__name__}")
    for key, value in prov.items():
        expect(isinstance(key, str) and key, what, check, f"provenance key {key!r} is not a non-empty string")
        expect(isinstance(value, (str, int, float, bool)), what, check,
               f"provenance['{key}'] = {value!r} is not a string or a number")  # fmt: skip
    json.dumps(prov)
    expect(prov.get("estimator") == est.name, what, check,
           f"provenance()['estimator'] is {prov.get('estimator')!r}, not the estimator's {est.name!r}")  # fmt: skip


#: Every estimator check, in the order :func:`check_estimator` runs them.
ESTIMATOR_CHECKS: dict[str, Check] = {
    "metrics_declared": check_metrics_declared,
    "metrics_returned": check_metrics_returned,
    "deterministic": check_deterministic,
    "provenance": check_provenance,
}


def check_estimator(make: EstimatorFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                    options: Mapping[str, Any] | None = None, skip: Sequence[str] = ()) -> None:  # fmt: skip
    """Run every estimator check (:data:`ESTIMATOR_CHECKS`, but those in ``skip``).

    ``make()`` builds the estimator (called several times: build it the same way each time, e.g. from the same
    checkpoint or table); ``archs`` are architectures it can evaluate (default: three seeded samples of
    ``space``; a table must hold them); ``options``: the keyword options ``make`` builds it with, to check
    ``declared_metrics`` against."""
    run_checks(ESTIMATOR_CHECKS, skip, make, space, archs=archs, options=options)
