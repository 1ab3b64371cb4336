"""The family suite over every registered family (its tiny test spaces) and every shipped space, and the
exporter suite over every family."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nasplat import registry, testing
from nasplat.space import list_spaces, load_space

from ._setup import family_of, tiny, tiny_files


def _family_cases(checks: Any) -> Iterator[Any]:
    for fam in registry.available("family"):
        files = [f for f in tiny_files() if family_of(f) == fam] or [None]
        for file in files:
            for check in checks:
                yield pytest.param(fam, file, check, id=f"{fam}-{file}-{check}")


@pytest.mark.parametrize(("family", "file", "check"), list(_family_cases(testing.FAMILY_CHECKS)))
def test_family(family: str, file: str | None, check: str) -> None:
    assert file is not None, f"family '{family}' has no tiny space in tests/spaces: add one (8x8 inputs, few channels)"
    space = tiny(file)
    assert space.spec.family == family
    testing.FAMILY_CHECKS[check](space)


@pytest.mark.parametrize("check", list(testing.FAMILY_SPACE_CHECKS))
@pytest.mark.parametrize("name", sorted(list_spaces()))
def test_shipped_space(name: str, check: str) -> None:
    """Text forms, canonical forms and extremes of every registered space, however large (no network built)."""
    space = load_space(name)
    assert space.spec.family in registry.available("family")
    testing.FAMILY_SPACE_CHECKS[check](space)


@pytest.mark.parametrize(("family", "file", "check"), list(_family_cases(testing.EXPORTER_CHECKS)))
def test_exporter(family: str, file: str | None, check: str) -> None:
    assert file is not None, f"family '{family}' has no tiny space in tests/spaces"
    testing.EXPORTER_CHECKS[check](tiny(file))
