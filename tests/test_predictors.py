"""Predictors: encoders (canonical equivalence, shapes, capability dispatch), every model on a NAS-Bench-201
subset, zero-cost proxies, save/load round trips, extra (prior) features and the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from nasplat import registry
from nasplat.errors import NasplatError
from nasplat.measure import (
    PriorTable,
    encode,
    load_predictor,
    make_encoder,
    make_predictor,
    prediction_quality,
    read_manifest,
    space_from_manifest,
    supported_encoders,
)
from nasplat.model import Family
from nasplat.space import Architecture, SearchSpace, load_space, parse_space

HERE = Path(__file__).parent
DIGITS = HERE / "spaces" / "cell-digits.yaml"
ENCODERS = ("onehot", "costs", "path", "pathstats", "graph")
# the same function three ways: conv(x) read through a skip on either side, and with dead edges added
CONV_THEN_SKIP = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
SKIP_THEN_CONV = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"
WITH_DEAD_EDGES = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"  # node 1 leads nowhere
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def nb201() -> SearchSpace:
    return load_space("nb201")


@pytest.fixture(scope="module")
def table(shared_data: Path, nb201: SearchSpace) -> tuple[list[Architecture], np.ndarray]:
    """1,200 seeded rows of the NAS-Bench-201 12-epoch table: the first 200 train, the rest test."""
    frame = pd.read_csv(shared_data / "nb201" / "cifar10-12epoch.csv").sample(1200, random_state=0)
    return [nb201.from_string(s) for s in frame["arch"]], frame["val_acc"].to_numpy()


# ------------------------------------------------------------------------------------------------- encoders
def test_equivalent_cells_encode_identically(nb201: SearchSpace) -> None:
    a, b, c = (nb201.from_string(s) for s in (CONV_THEN_SKIP, SKIP_THEN_CONV, WITH_DEAD_EDGES))
    assert len({nb201.family.canonical(nb201, x) for x in (a, b, c)}) == 1
    other = nb201.from_string(BEST)
    for name in ENCODERS:
        x = encode(nb201, [a, b, c, other], name)
        assert x.dtype == np.float32
        assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2]), name
        assert not np.array_equal(x[0], x[3]), name
    raw = encode(nb201, [a, c], "onehot", canonical=False)  # without canonicalisation they differ
    assert not np.array_equal(raw[0], raw[1])


def test_encoder_shapes_and_names(nb201: SearchSpace) -> None:
    archs = [nb201.sample(np.random.default_rng(i)) for i in range(7)]
    for name in ENCODERS:
        (enc,) = make_encoder(nb201, name)
        x = enc.encode(nb201, archs)
        assert x.shape == (7, len(enc.feature_names(nb201))), name
        assert np.all(np.isfinite(x))
    assert encode(nb201, archs, "path+onehot").shape == (7, 155 + 30)


def test_path_encoding_counts_live_paths(nb201: SearchSpace) -> None:
    (enc,) = make_encoder(nb201, "path", canonical=False)
    names = enc.feature_names(nb201)
    row = enc.encode(nb201, [nb201.from_string(BEST)])[0]
    found = {names[i]: float(row[i]) for i in np.flatnonzero(row)}
    assert found == {
        "path:skip_connect": 1.0,  # 0 -> 3
        "path:nor_conv_3x3>nor_conv_3x3": 2.0,  # 0 -> 1 -> 3 and 0 -> 2 -> 3
        "path:nor_conv_3x3>nor_conv_3x3>nor_conv_3x3": 1.0,  # 0 -> 1 -> 2 -> 3
    }
    empty = enc.encode(nb201, [nb201.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")])[0]
    assert not empty.any()


class _FlatFamily(Family):
    """A family that describes architectures only by their choices (no graph): for capability dispatch."""

    name: ClassVar[str] = "test_flat_family"

    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> Any:
        raise NotImplementedError

    def layers(self, space: SearchSpace, arch: Architecture) -> list[Any]:
        return []

    def task(self, space: SearchSpace) -> Any:
        raise NotImplementedError


@pytest.fixture
def flat_space() -> Iterator[SearchSpace]:
    registry.register("family", _FlatFamily.name)(_FlatFamily)
    spec = {
        "name": "test-flat",
        "version": 1,
        "family": _FlatFamily.name,
        "dimensions": [{"label": "width", "type": "ordinal", "choices": [8, 16, 32]}],
        "macro": {"input_shape": [1, 8, 8]},
    }
    yield parse_space(spec, "test-flat")
    registry._components["family"].pop(_FlatFamily.name, None)


def test_encoders_dispatch_on_capabilities(flat_space: SearchSpace) -> None:
    allowed = supported_encoders(flat_space)
    assert "onehot" in allowed and "path" not in allowed and "graph" not in allowed
    with pytest.raises(NasplatError, match=r"encoder 'path' does not support space 'test-flat'.*onehot"):
        make_encoder(flat_space, "path")
    with pytest.raises(NasplatError, match=r"unknown encoder 'nope'; allowed: .*onehot"):
        make_encoder(flat_space, "onehot+nope")
    archs = [flat_space.make({"width": w}) for w in (8, 16, 32)]
    model = make_predictor("gbdt", n_estimators=20).fit(flat_space, archs, [1.0, 2.0, 3.0])
    assert model.fitted_state()["encoder"] == "onehot+costs"  # type: ignore[attr-defined]
    assert model.predict(flat_space, archs)[0].shape == (3,)


# ------------------------------------------------------------------------------------------------- models
MODELS = {"gbdt": 0.6, "mlp": 0.5, "mlp_rank": 0.55, "gp": 0.5, "auto": 0.6}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_ranks_held_out_cells_and_round_trips(
    name: str, nb201: SearchSpace, table: tuple[list[Architecture], np.ndarray], tmp_path: Path
) -> None:
    archs, y = table
    model = make_predictor(name).fit(nb201, archs[:200], y[:200], seed=0)
    mean, std = model.predict(nb201, archs[200:])
    assert mean.shape == (1000,) and np.all(np.isfinite(mean))
    assert (std is not None) == (name in ("mlp", "mlp_rank", "gp")) or name == "auto"
    if std is not None:
        assert std.shape == (1000,) and np.all(std >= 0)
    quality = prediction_quality(y[200:], mean)
    assert quality["kendall_tau"] > MODELS[name], quality
    assert 5 < float(np.median(mean)) < 95  # predictions are in the target's units (percent)
    model.save(tmp_path / name)
    manifest = read_manifest(tmp_path / name)
    assert manifest["model"] == name and manifest["space"]["hash"] == nb201.hash
    again = load_predictor(tmp_path / name)
    mean2, std2 = again.predict(nb201, archs[200:])
    assert np.array_equal(mean, mean2)
    assert (std is None and std2 is None) or np.array_equal(std, std2)  # type: ignore[arg-type]
    assert space_from_manifest(tmp_path / name).hash == nb201.hash


def test_fits_are_seeded(nb201: SearchSpace, table: tuple[list[Architecture], np.ndarray]) -> None:
    archs, y = table
    runs = [
        make_predictor("mlp", epochs=30).fit(nb201, archs[:60], y[:60], seed=s).predict(nb201, archs[60:90])[0]
        for s in (1, 1, 2)
    ]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_latency_target_is_log_transformed_and_extra_features_are_required(nb201: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    archs = [nb201.sample(rng) for _ in range(60)]
    extra = rng.normal(size=(60, 2))
    latency_ms = np.exp(rng.normal(size=60) * 1.2) * 5  # positive and right-skewed
    model = make_predictor("gbdt", n_estimators=30).fit(nb201, archs, latency_ms, extra=extra)
    assert model.fitted_state()["transform"] == "log"  # type: ignore[attr-defined]
    assert np.all(model.predict(nb201, archs, extra=extra)[0] > 0)
    with pytest.raises(NasplatError, match="fitted with 2 extra feature"):
        model.predict(nb201, archs)
    with pytest.raises(NasplatError, match="fitted with 2 extra feature"):
        model.predict(nb201, archs, extra=extra[:, :1])


def test_prior_table_gives_log_features(nb201: SearchSpace, tmp_path: Path) -> None:
    archs = [nb201.sample(np.random.default_rng(i)) for i in range(3)]
    frame = pd.DataFrame(
        {"arch": [nb201.to_string(a) for a in archs], "gpu_ms": [1.0, 2.0, 4.0], "cpu_ms": [10.0, 20.0, 5.0]}
    )
    frame.to_csv(tmp_path / "prior.csv", index=False)
    prior = PriorTable.from_csv(nb201, tmp_path / "prior.csv", "arch", exclude=["cpu_ms"])
    assert prior.columns == ["gpu_ms"]
    assert np.allclose(prior.features(archs[::-1])[:, 0], np.log([4.0, 2.0, 1.0]))
    other = nb201.from_string(BEST)
    if other not in archs:
        with pytest.raises(NasplatError, match="not in the prior table"):
            prior.features([other])


def test_prediction_quality() -> None:
    assert prediction_quality([1, 2, 3, 4], [10, 20, 30, 40]) == {"kendall_tau": 1.0, "spearman": 1.0}
    q = prediction_quality([1, 2, 3, 4], [4, 3, 2, 1])
    assert q["kendall_tau"] == pytest.approx(-1.0) and q["spearman"] == pytest.approx(-1.0)
    assert np.isnan(prediction_quality([1, 2], [3, 3])["kendall_tau"])


def test_unknown_predictor_lists_the_allowed_ones() -> None:
    with pytest.raises(
        NasplatError,
        match=r"unknown predictor 'nope'; allowed: auto, auto_zc, fewshot_latency, gbdt, gp, mlp, mlp_rank",
    ):
        make_predictor("nope")


# ------------------------------------------------------------------------------------------------- conformance
@pytest.fixture(scope="module")
def digits_table() -> tuple[SearchSpace, list[Architecture], np.ndarray]:
    """A tiny cell space (1x8x8 inputs) with 24 distinct cells and a made-up positive target."""
    space = load_space(DIGITS)
    rng = np.random.default_rng(5)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(40)))[:24]
    y = np.array([len([v for _, v in a if v != "none"]) + 1.0 for a in archs]) + rng.uniform(0, 0.5, len(archs))
    return space, archs, y


@pytest.mark.parametrize("name", registry.available("predictor"))
def test_every_registered_predictor_keeps_the_contract(
    name: str, digits_table: tuple[SearchSpace, list[Architecture], np.ndarray], tmp_path: Path
) -> None:
    space, archs, y = digits_table
    cls = registry.get("predictor", name)
    model = make_predictor(name, **({"folds": 2} if name.startswith("auto") else {}))
    assert model.fit(space, archs[:16], y[:16], seed=0) is model
    mean, std = model.predict(space, archs[16:])
    assert mean.shape == (8,) and np.all(np.isfinite(mean))
    assert std is None or (std.shape == (8,) and np.all(std >= 0))
    if not cls.provides_std:
        assert std is None
    assert make_predictor(name, **model.params()).params() == model.params()  # params recreate the predictor
    model.save(tmp_path / name)
    again = load_predictor(tmp_path / name)
    mean2, std2 = again.predict(space, archs[16:])
    assert np.array_equal(mean, mean2) and (std is None) == (std2 is None)
    with pytest.raises(NasplatError, match="fitted on space"):
        model.predict(load_space("nb201"), [load_space("nb201").sample(np.random.default_rng(0))])


@pytest.mark.parametrize("name", registry.available("encoder"))
def test_every_registered_encoder_keeps_the_contract(
    name: str, digits_table: tuple[SearchSpace, list[Architecture], np.ndarray]
) -> None:
    space, archs, _ = digits_table
    (enc,) = make_encoder(space, name)
    x = enc.encode(space, archs[:6])
    assert x.dtype == np.float32 and x.shape == (6, len(enc.feature_names(space))) and np.all(np.isfinite(x))
    assert np.array_equal(enc.encode(space, archs[:6]), x)
    same = [space.from_string(s) for s in (CONV_THEN_SKIP, WITH_DEAD_EDGES)]
    y = enc.encode(space, same)
    assert np.array_equal(y[0], y[1])


# ------------------------------------------------------------------------------------------------- zero-cost
def test_zero_cost_proxies_are_seeded_and_usable_as_predictors(tmp_path: Path) -> None:
    from nasplat_predictors.zero_cost import PROXIES, ZeroCostProxies, ZeroCostSettings

    space = load_space(DIGITS)
    archs = [space.sample(np.random.default_rng(i)) for i in range(12)]
    first = ZeroCostProxies(space, ZeroCostSettings(seed=3, batch_size=8)).compute(archs)
    _clear_zero_cost_cache()
    second = ZeroCostProxies(space, ZeroCostSettings(seed=3, batch_size=8)).compute(archs)
    assert set(first) == set(PROXIES)
    for p in PROXIES:
        assert np.array_equal(first[p], second[p]), p
    other = ZeroCostProxies(space, ZeroCostSettings(seed=4, batch_size=8)).compute(archs, ["synflow"])
    assert not np.array_equal(first["synflow"], other["synflow"])
    assert np.all(first["params"] > 0) and np.all(first["macs"] > 0)
    x = encode(space, archs, "zc+onehot")
    assert x.shape == (12, len(PROXIES) + 30) and np.all(np.isfinite(x))
    y = first["params"] * -1.0  # a target the params proxy ranks exactly backwards
    model = make_predictor("zc_params").fit(space, archs, y)
    mean, std = model.predict(space, archs)
    assert std is None and prediction_quality(y, mean)["kendall_tau"] == pytest.approx(1.0)
    model.save(tmp_path / "zc")
    assert np.array_equal(load_predictor(tmp_path / "zc").predict(space, archs)[0], mean)
    auto = make_predictor("auto_zc", folds=2).fit(space, archs, first["synflow"], seed=0)
    assert all("+zc" in c["params"]["encoder"] for c in auto.chosen)  # type: ignore[attr-defined]
    assert auto.predict(space, archs)[0].shape == (12,)


def test_naswot_kernel_accumulated_per_layer_matches_its_definition() -> None:
    """K[i, j] counts the units where inputs i and j are both active or both inactive; the proxy is log|K|."""
    import torch

    from nasplat_predictors.zero_cost import _PatternKernel

    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(6, *shape, generator=g) > 0 for shape in ((3, 4, 4), (5,), (2, 7))]
    kernel = _PatternKernel()
    for active in layers:
        kernel.add(active)
    codes = torch.cat([a.flatten(1) for a in layers], dim=1)
    by_hand = torch.tensor(
        [[float((codes[i] == codes[j]).sum()) for j in range(6)] for i in range(6)], dtype=torch.float64
    )
    assert torch.equal(2 * kernel.gram - kernel.rows[:, None] - kernel.rows[None, :] + kernel.units, by_hand)
    assert kernel.log_det() == pytest.approx(float(torch.linalg.slogdet(by_hand)[1]))
    twins = _PatternKernel()
    twins.add(torch.stack([layers[0][0], layers[0][0], layers[0][1]]))  # two inputs with one pattern: singular
    assert twins.log_det() == -math.inf


def _clear_zero_cost_cache() -> None:
    from nasplat_predictors import zero_cost

    zero_cost._SCORE_CACHE.clear()


# ------------------------------------------------------------------------------------------------- command line
def nasplat(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "nasplat.cli", "predictor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_fit_predict_and_one_line_errors(shared_data: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(shared_data / "nb201" / "cifar10-12epoch.csv").sample(150, random_state=1)
    frame.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[100:].drop(columns=["val_acc"]).to_csv(tmp_path / "query.csv", index=False)
    proc = nasplat(
        "fit", "--space", "nb201", "--table", "train.csv", "--arch-column", "arch", "--target", "val_acc",
        "--model", "gp", "--out", "model", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "model" / "predictor.json").read_text())["target"] == "val_acc"
    proc = nasplat(
        "predict",
        "--model",
        "model",
        "--table",
        "query.csv",
        "--arch-column",
        "arch",
        "--out",
        "pred.csv",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["arch", "test_acc", "predicted", "predicted_std"]
    assert len(pred) == 50 and pred["predicted"].notna().all()
    assert prediction_quality(frame["val_acc"].iloc[100:], pred["predicted"])["kendall_tau"] > 0.4

    line = one_line_error(
        nasplat(
            "fit",
            "--space",
            "nb201",
            "--table",
            "train.csv",
            "--target",
            "val_acc",
            "--model",
            "gbdtx",
            "--out",
            "m2",
            cwd=tmp_path,
        )
    )
    assert "unknown predictor 'gbdtx'" in line and "auto" in line and "gbdt" in line
    line = one_line_error(
        nasplat(
            "fit",
            "--space",
            "nb201",
            "--table",
            "train.csv",
            "--target",
            "accuracy",
            "--model",
            "gbdt",
            "--out",
            "m2",
            cwd=tmp_path,
        )
    )
    assert "no column 'accuracy'" in line and "val_acc" in line
    (tmp_path / "bad.csv").write_text(
        "arch\n" + BEST.replace("nor_conv_1x1", "x") + "\n|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|\n"
    )
    line = one_line_error(nasplat("predict", "--model", "model", "--table", "bad.csv", "--out", "x.csv", cwd=tmp_path))
    assert "row 3" in line and "unknown op 'conv_7x7'" in line and "nor_conv_3x3" in line
