"""Conformance suites: the contract of every role, as checks a plugin author runs on their own component.

nasplat runs these suites over every registered implementation (``tests/plugins/``, through
``nasplat.registry.available(role)``), on tiny test spaces; a third party runs the same on theirs.

Writing a plugin
----------------

A component is one class plus one registration. Register it in a module that the ``nasplat.plugins``
entry-point group names (``pyproject.toml`` of your package)::

    [project.entry-points."nasplat.plugins"]
    my_plugin = "my_plugin"

    # my_plugin/__init__.py
    from nasplat.measure import CostModel
    from nasplat.registry import register

    @register("cost_model", "my_latency")
    class MyLatencyCostModel(CostModel):
        name = "my_latency"
        metrics = ("latency_ms",)
        def estimate(self, space, arch, device=None):
            ...

Then test it with the suite of its role, in a small space of your own (a few channels, 8x8 inputs: each
check builds and runs networks several times)::

    # tests/test_conformance.py
    import pytest
    from nasplat import testing
    from nasplat.space import load_space

    SPACE = load_space("tests/my-tiny-space.yaml")

    def test_my_cost_model():                       # everything at once
        testing.check_cost_model(MyLatencyCostModel, SPACE)

    @pytest.mark.parametrize("check", testing.COST_MODEL_CHECKS)
    def test_my_cost_model_check(check):            # or one test per check
        testing.COST_MODEL_CHECKS[check](MyLatencyCostModel, SPACE)

A broken contract raises :class:`ConformanceError` (an ``AssertionError``, so pytest reports a failure) whose
message names the component, the check and what was seen. Each ``check_<role>`` takes ``skip=(...)``, names
from its table, for a check that cannot apply to your component (say why in your test).

The suites (each table maps a check's name to a function taking the same arguments as ``check_<role>``):

``check_family(space)`` / :data:`FAMILY_CHECKS`
    string round trip, canonical form idempotent, extremes valid (:data:`FAMILY_SPACE_CHECKS`: these build no
    network, so they suit any space); supernets seeded without touching the global RNG; supernet output ==
    extracted module's (eval mode, warmed-up numbers); extracted weights are copies; layer records match the
    modules (names, weight shapes, input/output shapes). For a family, register it as ``"family"`` and name
    it in your space file.
``check_exporter(space)`` / :data:`EXPORTER_CHECKS`
    a bundle of a sampled architecture loads through its own ``load.py`` and matches the supernet
    (``isolated=True``: also in a fresh interpreter without nasplat; ``onnx=True``: with its ONNX graph).
``check_estimator(make, space, archs=..., options=...)`` / :data:`ESTIMATOR_CHECKS`
    ``make()`` builds the estimator (from your checkpoint or table); declared metrics returned for every
    architecture as numbers, deterministic (again, a second instance, another order, one at a time),
    provenance of strings and numbers naming the estimator.
``check_cost_model(make, space, devices=..., deterministic=...)`` / :data:`COST_MODEL_CHECKS`
    declared metrics returned, finite and >= 0, on every listed device; deterministic (``False`` for models
    that measure); listed devices accepted, an unknown one refused with a NasplatError; architectures in
    number formats the model refuses are refused with a NasplatError.
``check_predictor(make, space)`` / :data:`PREDICTOR_CHECKS`
    fit/predict shapes and spreads, seeded determinism, bad input (mismatched lengths, NaN targets, wrong
    ``extra`` rows, predicting unfitted) refused with a NasplatError, save and load predict the same.
``check_encoder(make, space)`` / :data:`ENCODER_CHECKS`
    one width for every batch, deterministic (also one at a time, and for canonical forms), distinct networks
    mostly encoded apart.
``check_sampler(make, space, n_objectives=...)`` / :data:`SAMPLER_CHECKS`
    ``make(seed)`` returns an Optuna sampler; ask/tell over :func:`nasplat.study.suggest_architecture` proposes
    valid architectures; the same seed proposes the same ones.
``check_strategy(name, space, options=...)`` / :data:`STRATEGY_CHECKS`
    for a strategy registered as ``name``: its paths are valid architectures; a strategy rebuilt from
    ``state_dict`` picks the same next paths; training resumed after a stop ends with the same weights.

Helpers for preparing what a suite needs: :func:`sample_archs` (the seeded architectures the suites check by
default: build a table or a lookup table for these), :func:`example_batch`, :func:`model_inputs`,
:func:`warmed_supernet`, :func:`synthetic_target`, :func:`noise_dataset`.

Also here: :mod:`nasplat.testing.faults`, fault injection for whole searches (kill -9 a driver at seeded
points, resume, check what was promised).
"""

from __future__ import annotations

from ._common import ConformanceError, example_batch, model_inputs, sample_archs, warmed_supernet
from ._costs import COST_MODEL_CHECKS, check_cost_model
from ._estimator import ESTIMATOR_CHECKS, check_estimator
from ._export import EXPORTER_CHECKS, check_exporter
from ._family import FAMILY_CHECKS, FAMILY_SPACE_CHECKS, check_family
from ._predictor import ENCODER_CHECKS, PREDICTOR_CHECKS, check_encoder, check_predictor, synthetic_target
from ._sampler import SAMPLER_CHECKS, check_sampler
from ._strategy import STRATEGY_CHECKS, check_strategy, noise_dataset

__all__ = [
    "COST_MODEL_CHECKS",
    "ENCODER_CHECKS",
    "ESTIMATOR_CHECKS",
    "EXPORTER_CHECKS",
    "FAMILY_CHECKS",
    "FAMILY_SPACE_CHECKS",
    "PREDICTOR_CHECKS",
    "SAMPLER_CHECKS",
    "STRATEGY_CHECKS",
    "ConformanceError",
    "check_cost_model",
    "check_encoder",
    "check_estimator",
    "check_exporter",
    "check_family",
    "check_predictor",
    "check_sampler",
    "check_strategy",
    "example_batch",
    "model_inputs",
    "noise_dataset",
    "sample_archs",
    "synthetic_target",
    "warmed_supernet",
]
