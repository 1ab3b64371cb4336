"""Every registered component answers to its registered name (the name its results and manifests carry)."""

from __future__ import annotations

import pytest

from nasplat import registry

#: Roles whose components are classes with a ``name`` (samplers, datasets and dashboards are factories).
NAMED_ROLES = ("family", "cost_model", "estimator", "predictor", "encoder", "strategy")


@pytest.mark.parametrize(("role", "name"), [(r, n) for r in NAMED_ROLES for n in registry.available(r)])
def test_registered_name_is_the_class_name(role: str, name: str) -> None:
    component = registry.get(role, name)
    assert getattr(component, "name", None) == name, (
        f"{role} '{name}' is a {component.__name__} named {component.name!r}"
    )
