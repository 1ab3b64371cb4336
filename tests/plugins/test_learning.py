"""The predictor, encoder, sampler and strategy suites over every registered one."""

from __future__ import annotations

import pytest

from nasplat import registry, testing
from nasplat.search import make_sampler

from ._setup import PREDICTOR_OPTIONS, SAMPLER_OPTIONS, cases, one_per_family, tiny, tiny_files

#: Predictors and samplers learn from the flat choices: a categorical cell space and an ordinal macro space.
LEARNING_SPACES = ("cell-digits.yaml", "hybrid-tiny.yaml")


@pytest.mark.parametrize(("name", "file", "check"), list(cases("predictor", LEARNING_SPACES, testing.PREDICTOR_CHECKS)))
def test_predictor(name: str, file: str, check: str) -> None:
    space = tiny(file)
    options = PREDICTOR_OPTIONS.get(name, {})
    testing.PREDICTOR_CHECKS[check](lambda: registry.build("predictor", name, options=options), space)


@pytest.mark.parametrize(("name", "file", "check"), list(cases("encoder", tiny_files(), testing.ENCODER_CHECKS)))
def test_encoder(name: str, file: str, check: str) -> None:
    testing.ENCODER_CHECKS[check](registry.get("encoder", name), tiny(file))


@pytest.mark.parametrize(
    ("name", "file", "objectives", "check"),
    list(cases("sampler", LEARNING_SPACES, testing.SAMPLER_CHECKS, extra=(1, 2))),
)
def test_sampler(name: str, file: str, objectives: int, check: str) -> None:
    space = tiny(file)
    options = SAMPLER_OPTIONS.get(name, {})

    def make(seed: int) -> object:
        return make_sampler(name, seed=seed, n_objectives=objectives, space=space, options=options)

    testing.SAMPLER_CHECKS[check](make, space, n_trials=8, n_objectives=objectives)


@pytest.mark.parametrize(("name", "file", "check"), list(cases("strategy", one_per_family(), testing.STRATEGY_CHECKS)))
def test_strategy(name: str, file: str, check: str) -> None:
    testing.STRATEGY_CHECKS[check](name, tiny(file))
