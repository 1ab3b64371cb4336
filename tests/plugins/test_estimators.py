"""The estimator and cost-model suites over every registered estimator and cost model, on every tiny space."""

from __future__ import annotations

import pytest

from nasplat import registry, testing

from ._setup import COST_MODEL_CASES, CostModelCase, cases, cost_model_options, estimator_options, tiny, tiny_files


@pytest.mark.parametrize(("name", "file", "check"), list(cases("estimator", tiny_files(), testing.ESTIMATOR_CHECKS)))
def test_estimator(name: str, file: str, check: str) -> None:
    space = tiny(file)
    options = estimator_options(name, file)

    def make() -> object:
        return registry.build("estimator", name, space, options=options)

    testing.ESTIMATOR_CHECKS[check](make, space, archs=testing.sample_archs(space, 3), options=options)


@pytest.mark.parametrize(("name", "file", "check"), list(cases("cost_model", tiny_files(), testing.COST_MODEL_CHECKS)))
def test_cost_model(name: str, file: str, check: str) -> None:
    space = tiny(file)
    case = COST_MODEL_CASES.get(name, CostModelCase())
    options = cost_model_options(name, file)

    def make() -> object:
        return registry.build("cost_model", name, options=options)

    devices = None
    if case.first_device_only:
        devices = (make().devices() or [None])[:1]  # type: ignore[attr-defined]
    archs = testing.sample_archs(space, 2 if case.first_device_only else 3)
    testing.COST_MODEL_CHECKS[check](make, space, archs=archs, devices=devices, deterministic=case.deterministic)
