"""The suites themselves: small components written as a third party would write them pass, and each broken
variant is caught by the check that names its bug (so a green run over the registry means something)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import pytest
import torch

from nasplat import registry, testing
from nasplat.errors import NasplatError
from nasplat.measure import (
    CostModel,
    Encoder,
    Estimator,
    LayerRecord,
    Predictor,
    check_extra,
    check_training_data,
    read_manifest,
    write_manifest,
)
from nasplat.space import Architecture, SearchSpace, load_space
from nasplat.train import SamplingStrategy
from nasplat_search_spaces.cell import CellFamily

SPACE_FILE = Path(__file__).resolve().parent.parent / "spaces" / "cell-digits.yaml"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(SPACE_FILE)


def with_family(space: SearchSpace, family: CellFamily) -> SearchSpace:
    return SearchSpace(space.spec, family, space.macro, space.path, space.file)


def caught(check: Any, *args: Any, match: str, **kwargs: Any) -> None:
    with pytest.raises(testing.ConformanceError, match=match):
        check(*args, **kwargs)


# --------------------------------------------------------------------------------------------------- families


class WrongRecord(CellFamily):
    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        recs = super().layers(space, arch)
        return [dataclasses.replace(recs[0], out_channels=recs[0].out_channels + 1), *recs[1:]]


class MissingRecord(CellFamily):
    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        return [r for r in super().layers(space, arch) if r.name != "stem.bn"]


class LossyString(CellFamily):
    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        return super().to_string(space, space.make({**arch.as_dict(), "cell.edge_3_0": "nor_conv_3x3"}))


class DriftingExtract(CellFamily):
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> Any:
        net = super().build_supernet(space, seed=seed)
        inner = net.extract

        def extract(arch: Architecture) -> torch.nn.Module:
            module = inner(arch)
            with torch.no_grad():
                module.classifier.bias.add_(0.01)  # type: ignore[operator]
            return module

        net.extract = extract  # type: ignore[method-assign]
        return net


class SharedWeights(CellFamily):
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> Any:
        net = super().build_supernet(space, seed=seed)
        inner = net.extract

        def extract(arch: Architecture) -> torch.nn.Module:
            module = inner(arch)
            module.classifier.weight = net.classifier.weight  # type: ignore[union-attr]
            return module

        net.extract = extract  # type: ignore[method-assign]
        return net


class GlobalRng(CellFamily):
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> Any:
        torch.rand(1)  # draws from torch's global generator
        return super().build_supernet(space, seed=seed)


class NotIdempotent(CellFamily):
    def canonical(self, space: SearchSpace, arch: Architecture) -> Architecture:
        values = arch.as_dict()
        values["cell.edge_1_0"] = "skip_connect" if values["cell.edge_1_0"] != "skip_connect" else "none"
        return space.make(values)


class BadExtremes(CellFamily):
    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        largest, smallest = super().extremes(space)
        return largest, Architecture(space.name, smallest.choices[:-1])


def test_the_cell_family_passes(space: SearchSpace) -> None:
    testing.check_family(space)


@pytest.mark.parametrize(
    ("family", "check", "match", "only"),
    [
        (WrongRecord, "layer_records", r"layer 'stem.conv' \(conv2d\): weight \(4, 1, 3, 3\), record says \(5,", True),
        (MissingRecord, "layer_records", "module 'stem.bn' .* has no layer record", True),
        (LossyString, "string_round_trip", "parses to", True),
        (DriftingExtract, "supernet_matches_extracted", "extracted module differs by", True),
        (SharedWeights, "extract_copies", "changed the supernet's", True),
        (GlobalRng, "supernet_seeded", "global RNG", True),
        (NotIdempotent, "canonical", "not idempotent", False),  # the string check compares canonical forms too
        (BadExtremes, "extremes", "smallest architecture .* is not an architecture of the space", False),
    ],
)
def test_broken_families_are_caught(
    space: SearchSpace, family: type[CellFamily], check: str, match: str, only: bool
) -> None:
    broken = with_family(space, family())
    with torch.random.fork_rng(devices=[]):
        caught(testing.FAMILY_CHECKS[check], broken, match=match)
    for other, fn in testing.FAMILY_CHECKS.items():  # the bug is the named check's, not every check's
        if only and other != check:
            with torch.random.fork_rng(devices=[]):
                fn(broken)


def test_exporter_passes_and_checks_arguments(space: SearchSpace) -> None:
    testing.check_exporter(space)
    with pytest.raises(NasplatError, match="no such check 'bundel'"):
        testing.check_exporter(space, skip=("bundel",))


# ----------------------------------------------------------------------------------------------- cost models


class LayerCount(CostModel):
    """A device-free cost model a plugin author might write: one number per architecture."""

    name: ClassVar[str] = "layer_count"
    metrics: ClassVar[tuple[str, ...]] = ("layers", "weighted_layers")

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        self.check_device(device)
        recs = space.family.layers(space, arch)
        return {"layers": float(len(recs)), "weighted_layers": float(sum(r.op == "conv2d" for r in recs))}


class Negative(LayerCount):
    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        return {**super().estimate(space, arch, device), "layers": -1.0}


class Missing(LayerCount):
    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        return {"layers": super().estimate(space, arch, device)["layers"]}


class Drifting(LayerCount):
    calls = 0

    def estimate(self, space: SearchSpace, arch: Architecture, device: str | None = None) -> dict[str, float]:
        Drifting.calls += 1
        return {k: v + Drifting.calls for k, v in super().estimate(space, arch, device).items()}


class AnyDevice(LayerCount):
    def devices(self) -> list[str] | None:
        return ["box"]

    def check_device(self, device: str | None) -> None:
        pass


class FormatBlind(LayerCount):
    """Says it costs int8 only, but costs anything."""

    def formats(self, device: str | None = None) -> list[str] | None:
        return ["int8"]


def test_a_plugin_cost_model_passes(space: SearchSpace) -> None:
    testing.check_cost_model(LayerCount, space)


@pytest.mark.parametrize(
    ("model", "check", "match"),
    [
        (Negative, "estimates", "finite numbers >= 0"),
        (Missing, "estimates", r"declared metrics missing: \['weighted_layers'\]"),
        (Drifting, "deterministic", "other numbers"),
        (AnyDevice, "devices", "accepts the unknown device"),
        (FormatBlind, "estimates", "check_formats refuses its number formats but estimate"),
    ],
)
def test_broken_cost_models_are_caught(space: SearchSpace, model: type[CostModel], check: str, match: str) -> None:
    caught(testing.COST_MODEL_CHECKS[check], model, space, match=match)


# ------------------------------------------------------------------------------------------------ estimators


class ParamsEstimator(Estimator):
    """An estimator a plugin author might write: a score from the layer records."""

    name: ClassVar[str] = "params_score"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def metrics(self) -> dict[str, str]:
        return {"score": "maximize"}

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        return [{"score": float(len(self.space.family.layers(self.space, a)))} for a in archs]


class OrderDependent(ParamsEstimator):
    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        return [{"score": r["score"] + i} for i, r in enumerate(super().evaluate(archs))]


class Undeclared(ParamsEstimator):
    def metrics(self) -> dict[str, str]:
        return {"score": "maximize", "loss": "minimize"}


class NestedProvenance(ParamsEstimator):
    def provenance(self) -> dict[str, str]:
        return {"estimator": self.name, "settings": {"a": 1}}  # type: ignore[dict-item]


def test_a_plugin_estimator_passes(space: SearchSpace) -> None:
    testing.check_estimator(lambda: ParamsEstimator(space), space)


@pytest.mark.parametrize(
    ("estimator", "check", "match"),
    [
        (OrderDependent, "deterministic", "order"),
        (Undeclared, "metrics_returned", r"declared metrics missing: \['loss'\]"),
        (NestedProvenance, "provenance", "is not a string or a number"),
    ],
)
def test_broken_estimators_are_caught(space: SearchSpace, estimator: type[Estimator], check: str, match: str) -> None:
    caught(testing.ESTIMATOR_CHECKS[check], lambda: estimator(space), space, match=match)  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------- predictors, encoders


class RidgePredictor(Predictor):
    """A predictor a plugin author might write: ridge regression on the one-hot encoding."""

    name: ClassVar[str] = "ridge_test"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = alpha
        self.w: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def _x(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        return np.stack([space.encode(a) for a in archs]).astype(np.float64)

    def fit(self, space: SearchSpace, archs: Sequence[Architecture], y: Any, *, seed: int = 0,
            extra: np.ndarray | None = None) -> RidgePredictor:  # fmt: skip
        yv, _ = check_training_data(archs, y, extra)
        x = self._x(space, archs)
        self.w = np.linalg.solve(x.T @ x + self.alpha * np.eye(x.shape[1]), x.T @ yv)
        return self

    def predict(self, space: SearchSpace, archs: Sequence[Architecture], *,
                extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        if self.w is None:
            raise NasplatError("not fitted")
        check_extra(archs, extra)
        return self._x(space, archs) @ self.w, None

    def save(self, directory: str | Path) -> None:
        assert self.w is not None
        write_manifest(directory, {"model": self.name, "params": self.params(), "w": self.w.tolist()})

    @classmethod
    def load(cls, directory: str | Path) -> RidgePredictor:
        m = read_manifest(directory)
        p = cls(**m["params"])
        p.w = np.asarray(m["w"])
        return p


class Unseeded(RidgePredictor):
    draws = 0

    def predict(self, space: SearchSpace, archs: Sequence[Architecture], *,
                extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        Unseeded.draws += 1
        mean, _ = super().predict(space, archs, extra=extra)
        return mean + 1e-3 * Unseeded.draws, None


class Lenient(RidgePredictor):
    def fit(self, space: SearchSpace, archs: Sequence[Architecture], y: Any, *, seed: int = 0,
            extra: np.ndarray | None = None) -> RidgePredictor:  # fmt: skip
        n = min(len(archs), len(y))
        return super().fit(space, archs[:n], np.asarray(y)[:n], seed=seed)


class BadShape(RidgePredictor):
    def predict(self, space: SearchSpace, archs: Sequence[Architecture], *,
                extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        mean, _ = super().predict(space, archs, extra=extra)
        return mean[:, None], None


class Forgetful(RidgePredictor):
    def save(self, directory: str | Path) -> None:
        write_manifest(
            directory,
            {"model": self.name, "params": self.params(), "w": [0.0] * (0 if self.w is None else len(self.w))},
        )


def test_a_plugin_predictor_passes(space: SearchSpace) -> None:
    testing.check_predictor(RidgePredictor, space)


@pytest.mark.parametrize(
    ("predictor", "check", "match"),
    [
        (Unseeded, "seeded", "means differ"),
        (Lenient, "bad_input", "with 19 targets is not a NasplatError"),
        (BadShape, "fit_predict", "mean must be an array of shape"),
        (Forgetful, "save_load", "other means"),
    ],
)
def test_broken_predictors_are_caught(space: SearchSpace, predictor: type[Predictor], check: str, match: str) -> None:
    caught(testing.PREDICTOR_CHECKS[check], predictor, space, match=match)


class CountsEncoder(Encoder):
    """An encoder a plugin author might write: how often each choice occurs."""

    name: ClassVar[str] = "counts_test"

    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        choices = sorted({str(c) for d in space.dimensions for c in d.choices})
        rows = [[sum(str(v) == c for _, v in a) for c in choices] for a in self.prepare(space, archs)]
        return np.asarray(rows, dtype=np.float32).reshape(len(archs), len(choices))


class Ragged(CountsEncoder):
    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        x = super().encode(space, archs)
        return x[:, : max(1, len(archs))]


class Constant(CountsEncoder):
    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        return np.zeros((len(archs), 3), dtype=np.float32)

    def feature_names(self, space: SearchSpace) -> list[str]:
        return ["a", "b", "c"]


class NotCanonical(CountsEncoder):
    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        return np.stack([space.encode(a) for a in archs]) if archs else np.zeros((0, space.encoding_width), np.float32)

    def feature_names(self, space: SearchSpace) -> list[str]:
        return [str(i) for i in range(space.encoding_width)]


def test_a_plugin_encoder_passes(space: SearchSpace) -> None:
    testing.check_encoder(CountsEncoder, space)


@pytest.mark.parametrize(
    ("encoder", "check", "match"),
    [
        (Ragged, "fixed_width", "encodes to shape"),
        (Constant, "distinct", "encode to only 1 different rows"),
        (NotCanonical, "deterministic", "its canonical form encode differently"),
    ],
)
def test_broken_encoders_are_caught(space: SearchSpace, encoder: type[Encoder], check: str, match: str) -> None:
    caught(testing.ENCODER_CHECKS[check], encoder, space, match=match)


# ------------------------------------------------------------------------------------------ samplers, strategies


def test_samplers_seeded_or_not(space: SearchSpace) -> None:
    testing.check_sampler(lambda seed: optuna.samplers.RandomSampler(seed=seed), space, n_trials=6)
    counter = iter(range(1000))

    def unseeded(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=next(counter))

    caught(testing.SAMPLER_CHECKS["seeded"], unseeded, space, n_trials=6, match="proposed other architectures")


class RoundRobin(SamplingStrategy):
    """A strategy with state: walks the space's architectures in order, one per step."""

    name: ClassVar[str] = "round_robin_test"
    keeps_state: ClassVar[bool] = True

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.done = 0

    def paths(self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Any = None) -> list[Architecture]:
        it = space.enumerate()
        for _ in range(self.done % 50):
            next(it)
        self.done += 1
        return [next(it)]

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done} if self.keeps_state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = int(state.get("done", 0))


class ForgetfulRoundRobin(RoundRobin):
    keeps_state: ClassVar[bool] = False


@pytest.fixture
def strategies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    registry.available("strategy")  # the core strategies are registered before the test's are added
    table = registry._components["strategy"]
    monkeypatch.setitem(table, "round_robin_test", RoundRobin)
    monkeypatch.setitem(table, "forgetful_test", ForgetfulRoundRobin)
    yield


@pytest.mark.usefixtures("strategies")
def test_strategy_state_must_resume(space: SearchSpace) -> None:
    testing.check_strategy("round_robin_test", space, skip=("training_resume",))
    caught(testing.STRATEGY_CHECKS["state_resume"], "forgetful_test", space, match="picks other paths")
