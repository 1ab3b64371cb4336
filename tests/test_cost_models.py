"""Hardware cost models: roofline by hand, device profiles, lookup tables, measurement, the learned model, CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nasplat.errors import NasplatError, SpecError
from nasplat.measure import LayerRecord
from nasplat.space import SearchSpace, load_space
from nasplat_estimators.learned import FewShotLatencyModel, latency_metrics, layer_features, space_features
from nasplat_estimators.lut import LookupTable, LUTCostModel, build_table, layer_module, read_table
from nasplat_estimators.measured import (
    LOCAL_DEVICE,
    MeasuredCostModel,
    OnnxMeasuredCostModel,
    device_slug,
    local_device_names,
    measure_module,
)
from nasplat_estimators.roofline import (
    DEVICES_DIR,
    RooflineCostModel,
    layer_times,
    load_profile,
    load_profiles,
    roofline_ms,
)

SPACES = Path(__file__).parent / "spaces"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def digits() -> SearchSpace:
    return load_space(SPACES / "cell-digits.yaml")


PROFILE = {
    "name": "toy",
    "description": "a device with round numbers",
    "kind": "cpu",
    "sources": ["made up for the test"],
    "memory_bandwidth_gbs": 10.0,
    "kernel_overhead_us": 5.0,
    "vector_gops": 2.0,
    "formats": {"float32": {"peak_gops": 100.0}, "int8": {"peak_gops": 400.0, "native": True}},
}


def write_profile(folder: Path, data: dict[str, object], stem: str | None = None) -> Path:
    path = folder / f"{stem or data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------------------------------------ registry
def test_cost_model_devices_and_formats() -> None:
    """Name, metrics and devices of every registered cost model: the cost-model conformance suite (tests/plugins).
    Here: which devices and formats the measured and roofline models list."""
    assert set(MeasuredCostModel().devices() or []) == {LOCAL_DEVICE, device_slug("Intel(R) Xeon(R) CPU")} or (
        LOCAL_DEVICE in (MeasuredCostModel().devices() or [])
    )
    assert MeasuredCostModel().formats() == ["float32"]
    assert {"h100-sxm", "cortex-a76", "x86-avx512-2core"} <= set(RooflineCostModel().devices() or [])
    assert device_slug("Intel(R) Xeon(R) Gold 6240 CPU @ 2.60GHz") == "cpu-intel-xeon-gold-6240"


# ------------------------------------------------------------------------------------------------ roofline
def test_roofline_conv_by_hand(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, PROFILE))
    conv = LayerRecord("c", "conv2d", 16, 32, (8, 8), (8, 8), kernel=3)
    macs = 8 * 8 * 32 * 16 * 9  # 294,912
    ((compute, memory, overhead),) = layer_times([conv], profile)
    assert compute == pytest.approx(2 * macs / 100e9)  # 5.898 us at 100 GOP/s
    moved = 32 * 16 * 9 * 4 + 16 * 64 * 4 + 32 * 64 * 4  # weights + input + output, float32
    assert memory == pytest.approx(moved / 10e9)  # 2.662 us at 10 GB/s
    assert overhead == pytest.approx(5e-6)
    assert roofline_ms([(compute, memory, overhead)])["latency_ms"] == pytest.approx((2 * macs / 100e9 + 5e-6) * 1e3)
    # memory-bound element-wise layer: ReLU on 32x8x8 reads and writes 2048 floats, 2048 ops at 2 GOP/s
    relu = LayerRecord("r", "relu", 32, 32, (8, 8), (8, 8))
    ((c2, m2, _),) = layer_times([relu], profile)
    assert c2 == pytest.approx(2048 / 2e9) and m2 == pytest.approx(2 * 2048 * 4 / 10e9)
    # int8 weights and activations run at the int8 peak and move a quarter of the bytes
    q = LayerRecord("q", "conv2d", 16, 32, (8, 8), (8, 8), kernel=3, weight_format="int8", act_format="int8")
    ((c3, m3, _),) = layer_times([q], profile)
    assert c3 == pytest.approx(2 * macs / 400e9) and m3 == pytest.approx(moved / 4 / 10e9)
    # batch 4: activations and compute scale, weights do not
    ((c4, m4, _),) = layer_times([conv], profile, batch_size=4)
    assert c4 == pytest.approx(4 * compute)
    assert m4 == pytest.approx((32 * 16 * 9 * 4 + 4 * (16 + 32) * 64 * 4) / 10e9)
    # identity launches nothing
    assert layer_times([LayerRecord("i", "identity", 4, 4, (2, 2), (2, 2))], profile) == [(0.0, 0.0, 0.0)]


def test_roofline_model_on_a_space(tmp_path: Path, digits: SearchSpace) -> None:
    model = RooflineCostModel([write_profile(tmp_path, PROFILE)])
    arch = digits.from_string(BEST)
    costs = model.estimate(digits, arch, "toy")
    assert set(costs) == set(model.metrics)
    assert costs["latency_ms"] >= max(costs["compute_ms"], costs["memory_ms"])
    assert costs["latency_ms"] <= costs["compute_ms"] + costs["memory_ms"] + costs["overhead_ms"] + 1e-12
    for device in ("h100-sxm", "cortex-a76", "x86-avx512-2core"):
        assert model.estimate(digits, arch, device)["latency_ms"] > 0
    # tiny networks are launch-bound on a GPU; NAS-Bench-201's CIFAR network is compute-bound on a phone core
    assert (
        model.estimate(digits, arch, "h100-sxm")["latency_ms"]
        > model.estimate(digits, arch, "cortex-a76")["latency_ms"]
    )
    nb = load_space("nb201")
    big = nb.from_string(BEST)
    phone = model.estimate(nb, big, "cortex-a76")
    assert phone["compute_ms"] > phone["memory_ms"] + phone["overhead_ms"]
    assert model.estimate(nb, big, "h100-sxm")["latency_ms"] < phone["latency_ms"] / 5


def test_roofline_refuses_unknown_devices_and_formats(tmp_path: Path) -> None:
    model = RooflineCostModel([write_profile(tmp_path, PROFILE)])
    rec = LayerRecord("c", "conv2d", 4, 4, (4, 4), (4, 4))
    with pytest.raises(NasplatError, match=r"does not know device 'tpu-v9'; known: .*cortex-a76.*toy"):
        model.estimate_layers([rec], "tpu-v9")
    with pytest.raises(NasplatError, match="needs a device"):
        model.estimate_layers([rec], None)
    q = LayerRecord("q", "conv2d", 4, 4, (4, 4), (4, 4), weight_format="int4", act_format="int8")
    with pytest.raises(
        NasplatError, match=r"number format 'int4' on device 'toy' \(layer 'q'\); supported: float32, int8"
    ):
        model.estimate_layers([q], "toy")
    bf = LayerRecord("b", "linear", 4, 4, (1, 1), (1, 1), weight_format="bfloat16", act_format="bfloat16")
    with pytest.raises(NasplatError, match="'bfloat16' on device 'cortex-a76'"):
        model.estimate_layers([bf], "cortex-a76")
    assert model.estimate_layers([bf], "h100-sxm")["latency_ms"] > 0
    i2 = LayerRecord("x", "linear", 4, 4, (1, 1), (1, 1), weight_format="int2", act_format="int8")
    with pytest.raises(NasplatError, match="'int2' on device 'h100-sxm'"):
        model.estimate_layers([i2], "h100-sxm")


def test_shipped_profiles_are_valid_and_cite_sources() -> None:
    files = sorted(DEVICES_DIR.glob("*.yaml"))
    assert {f.stem for f in files} >= {"h100-sxm", "cortex-a76", "x86-avx512-2core"}
    for f in files:
        p = load_profile(f)
        assert p.sources and all(len(s) > 20 for s in p.sources)
        assert "float32" in p.formats


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"bandwidth": 3}, "bandwidth", "unknown key"),
        ({"memory_bandwidth_gbs": -1}, "memory_bandwidth_gbs", "greater than 0"),
        ({"formats": {"float7": {"peak_gops": 1}}}, "formats", "unknown number format 'float7'"),
        (
            {"formats": {"float32": {"peak": 1}}},
            "formats.float32.peak",
            "unknown key; allowed keys: native, note, peak_gops",
        ),
        ({"kind": "abacus"}, "kind", "'cpu', 'gpu', 'npu' or 'fpga'"),
        ({"sources": []}, "sources", "at least 1"),
        ({"name": "other"}, "name", "must equal the file name 'toy'"),
    ],
)
def test_profile_errors_name_file_and_key(tmp_path: Path, change: dict[str, object], key: str, message: str) -> None:
    path = write_profile(tmp_path, {**PROFILE, **change}, stem="toy")
    with pytest.raises(SpecError) as info:
        load_profile(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert message in str(info.value)


def test_profile_missing_key_and_bad_yaml(tmp_path: Path) -> None:
    data = dict(PROFILE)
    del data["vector_gops"]
    with pytest.raises(SpecError, match=r"toy\.yaml: at 'vector_gops': required key is missing"):
        load_profile(write_profile(tmp_path, data))
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: malformed YAML"):
        load_profile(bad)
    dup = tmp_path / "dups"
    dup.mkdir()
    write_profile(dup, {**PROFILE, "name": "h100-sxm"})
    with pytest.raises(SpecError, match="already declared"):
        load_profiles([dup])


# ------------------------------------------------------------------------------------------------ measured
def test_measured_latency_is_positive(digits: SearchSpace) -> None:
    arch = digits.from_string(BEST)
    before = torch.get_num_threads()
    eager = MeasuredCostModel(threads=1, warmup=1, repeats=5)
    costs = eager.estimate(digits, arch, LOCAL_DEVICE)
    assert costs["latency_ms"] > 0 and costs["latency_iqr_ms"] >= 0
    assert torch.get_num_threads() == before
    batch = MeasuredCostModel(batch_size=4, warmup=1, repeats=3).measure(digits, arch)
    assert batch.latency_ms > 0 and len(batch.samples_ms) == 3
    onnx = OnnxMeasuredCostModel(warmup=1, repeats=5).estimate(digits, arch)
    assert onnx["latency_ms"] > 0
    prov = eager.provenance()
    assert prov["engine"] == "eager" and prov["threads"] == 1 and prov["torch"] and prov["cpu_model"]


def test_measured_refuses_other_devices_and_formats() -> None:
    model = MeasuredCostModel()
    with pytest.raises(
        NasplatError, match=r"measures on this machine only; device 'pixel3' is not it \(this machine is: local-cpu"
    ):
        model.check_device("pixel3")
    for name in local_device_names():
        model.check_device(name)
    q = LayerRecord("q", "conv2d", 4, 4, (4, 4), (4, 4), weight_format="int8", act_format="int8")
    with pytest.raises(NasplatError, match=r"does not support number format 'int8'.*supported: float32"):
        model.check_formats([q], LOCAL_DEVICE)
    with pytest.raises(NasplatError, match="need threads, batch_size, repeats >= 1"):
        MeasuredCostModel(threads=0)
    with pytest.raises(NasplatError, match="unknown engine 'tvm'"):
        measure_module(torch.nn.Identity(), (torch.zeros(1),), engine="tvm")


# ------------------------------------------------------------------------------------------------ lookup table
def test_every_profiled_op_builds_and_runs() -> None:
    records = [
        LayerRecord("c", "conv2d", 4, 8, (8, 8), (4, 4), kernel=3, stride=2, groups=2, bias=True),
        LayerRecord("l", "linear", 8, 3, (1, 1), (1, 1), bias=True),
        LayerRecord("t", "linear", 8, 3, (2, 2), (2, 2)),
        LayerRecord("b", "batchnorm", 4, 4, (8, 8), (8, 8)),
        LayerRecord("n", "layernorm", 8, 8, (2, 2), (2, 2)),
        LayerRecord("r", "relu", 4, 4, (8, 8), (8, 8)),
        LayerRecord("g", "gelu", 4, 4, (8, 8), (8, 8)),
        LayerRecord("a", "avgpool", 4, 4, (8, 8), (8, 8), kernel=3),
        LayerRecord("m", "maxpool", 4, 4, (8, 8), (4, 4), kernel=2, stride=2),
        LayerRecord("p", "global_avgpool", 4, 4, (8, 8), (1, 1)),
        LayerRecord("s", "add", 4, 4, (8, 8), (8, 8)),
        LayerRecord("i", "identity", 4, 4, (8, 8), (8, 8)),
        LayerRecord("z", "zero", 4, 4, (8, 8), (8, 8)),
        LayerRecord("h", "attention", 8, 8, (2, 2), (2, 2), heads=2),
        LayerRecord("x", "matmul", 8, 5, (2, 2), (2, 2)),
        LayerRecord("k", "concat", 4, 6, (8, 8), (8, 8)),
        LayerRecord("u", "upsample", 4, 4, (4, 4), (8, 8)),
    ]
    for rec in records:
        fn, inputs = layer_module(rec)
        with torch.no_grad():
            out = fn(*inputs)
        if rec.op in ("conv2d", "batchnorm", "relu", "avgpool", "maxpool", "add", "concat", "upsample"):
            assert tuple(out.shape) == (1, rec.out_channels, *rec.out_hw), rec
    with pytest.raises(NasplatError, match="number format 'int8' cannot be timed"):
        layer_module(LayerRecord("q", "conv2d", 4, 4, (4, 4), (4, 4), weight_format="int8"))


def test_lut_build_estimate_and_round_trip(tmp_path: Path, digits: SearchSpace) -> None:
    table = build_table(digits, "test-box", warmup=1, repeats=3, networks=4, network_repeats=3)
    keys = {r.config_key for a in digits.enumerate() for r in digits.family.layers(digits, a)}
    assert set(table.entries) == keys
    assert all(lat > 0 for lat, _ in table.entries.values())
    path = table.write(tmp_path / "t.csv")
    text = path.read_text()
    assert "# device: test-box" in text and "# measured_on:" in text and "# space_hash:" in text
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    assert {r["device"] for r in rows} == {"test-box"} and {r["space_hash"] for r in rows} == {digits.hash}
    back = read_table(path)
    assert back.entries == table.entries and back.overhead_ms == table.overhead_ms
    assert back.per_layer_ms == table.per_layer_ms
    model = LUTCostModel([path])
    assert model.devices() == ["test-box"]
    arch = digits.from_string(BEST)
    records = digits.family.layers(digits, arch)
    expected = (
        sum(table.entries[r.config_key][0] for r in records) + table.overhead_ms + table.per_layer_ms * len(records)
    )
    assert model.estimate(digits, arch, "test-box")["latency_ms"] == pytest.approx(expected)
    with pytest.raises(NasplatError, match="does not know device 'local-cpu'; known: test-box"):
        model.estimate(digits, arch, LOCAL_DEVICE)
    nb = load_space("nb201-cpu")
    with pytest.raises(
        NasplatError, match=r"no lookup table for space 'nb201-cpu' on device 'test-box'.*nasplat profile"
    ):
        model.estimate(nb, nb.from_string(BEST), "test-box")


def test_lut_refuses_unknown_layers_stale_tables_and_bad_files(tmp_path: Path, digits: SearchSpace) -> None:
    table = LookupTable("box", digits.name, digits.hash, "eager", 1, 1, entries={})
    with pytest.raises(
        NasplatError, match=r"has no entry for layer 'stem.conv'.*nasplat profile --space cell-digits --device box"
    ):
        table.estimate(digits.family.layers(digits, digits.from_string(BEST)))
    stale = LookupTable("box", digits.name, "000000000000", "eager", 1, 1, entries={})
    path = stale.write(tmp_path / "stale.csv")
    with pytest.raises(NasplatError, match="built for another version of space 'cell-digits'"):
        LUTCostModel([path]).estimate(digits, digits.from_string(BEST), "box")
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    with pytest.raises(NasplatError, match=r"junk\.csv: not a nasplat lookup table"):
        read_table(junk)
    with pytest.raises(NasplatError, match="lookup table not found"):
        read_table(tmp_path / "missing.csv")


def test_overhead_fit() -> None:
    table = LookupTable("box", "s", "h", "eager", 1, 1, entries={})
    table.fit_overhead([1.0, 2.0, 3.0, 4.0], [10, 20, 30, 40], [1.5, 2.7, 3.9, 5.1])
    assert table.overhead_ms == pytest.approx(0.3) and table.per_layer_ms == pytest.approx(0.02)
    table.fit_overhead([1.0, 2.0], [10, 20], [1.5, 2.5])
    assert table.overhead_ms == pytest.approx(0.5) and table.per_layer_ms == 0.0


# ------------------------------------------------------------------------------------------------ learned
def test_layer_features_count_configurations(digits: SearchSpace) -> None:
    archs = list(digits.enumerate())[:50]
    x, vocab = space_features(digits, archs)
    assert x.shape == (50, len(vocab.keys))
    for row, arch in zip(x, archs, strict=True):
        assert row.sum() == len(digits.family.layers(digits, arch))
    x2, _ = space_features(digits, archs[:5], vocab)
    np.testing.assert_array_equal(x2, x[:5])
    odd = [LayerRecord("o", "conv2d", 3, 3, (99, 99), (99, 99))]
    with pytest.raises(NasplatError, match="not among the layer configurations"):
        layer_features([odd], vocab)


def test_learned_model_recovers_an_additive_device(digits: SearchSpace) -> None:
    """A device whose latency is an exact per-layer sum is learned from 12 networks, with and without a prior."""
    archs = list(digits.enumerate())
    x, _ = space_features(digits, archs)
    rng = np.random.default_rng(0)
    costs = rng.uniform(0.01, 0.2, x.shape[1])
    y = 0.3 + x @ costs
    prior = np.stack([0.1 + x @ (costs * rng.uniform(0.5, 2.0, x.shape[1])) for _ in range(3)], axis=1)
    train = rng.choice(len(archs), 12, replace=False)
    plain = FewShotLatencyModel().fit(x[train], y[train], reference=x)
    assert latency_metrics(y, plain.predict(x))["within_10pct"] > 0.97
    pre = FewShotLatencyModel().pretrain(x, prior, ["a", "b", "c"]).fit(x[train], y[train])
    assert latency_metrics(y, pre.predict(x))["within_10pct"] > 0.97
    again = FewShotLatencyModel.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_allclose(again.predict(x[:20]), pre.predict(x[:20]))
    lut = plain.layer_costs_ms()
    np.testing.assert_allclose(lut[0] + x[:20] @ lut[1:], plain.predict(x[:20]), rtol=1e-9)
    with pytest.raises(NasplatError, match="positive"):
        FewShotLatencyModel().fit(x[:3], np.array([1.0, -1.0, 2.0]))
    with pytest.raises(NasplatError, match="not fitted"):
        FewShotLatencyModel().predict(x[:2])


def test_learned_few_shot_on_benchmark_latencies(shared_data: Path) -> None:
    """Leave the FPGA out of a prior of the other devices and adapt from 20 of its networks (2,000-row slice)."""
    path = shared_data / "nb201" / "latency.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))[:2000]
    space = load_space("nb201")
    archs = [space.from_string(r["arch"]) for r in rows]
    x, _ = space_features(space, archs)
    devices = ["titan_rtx_1_ms", "titan_rtx_256_ms", "gold_6240_ms", "pixel3_ms", "fpga_ms"]
    table = np.array([[float(r[d]) for d in devices] for r in rows])
    target, prior = table[:, 4], table[:, :4]
    rng = np.random.default_rng(0)
    train = rng.choice(len(rows), 20, replace=False)
    test = np.setdiff1d(np.arange(len(rows)), train)
    model = FewShotLatencyModel().pretrain(x, prior, devices[:4]).fit(x[train], target[train])
    m = latency_metrics(target[test], model.predict(x[test]))
    assert m["within_10pct"] > 0.95 and m["kendall_tau"] > 0.9, m
    assert model.mix is not None and (model.mix >= 0).all()


# ------------------------------------------------------------------------------------------------ command line
def nasplat(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasplat.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=120,
    )


def test_cli_profile_then_cost(tmp_path: Path) -> None:
    env = {"NASPLAT_LUT_DIR": str(tmp_path / "lut")}
    space = str(SPACES / "cell-digits.yaml")
    proc = nasplat("profile", "--space", space, "--device", "ci-box", "--repeats", "2", "--networks", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lut" / "cell-digits--ci-box.csv").is_file()
    proc = nasplat("cost", BEST, "--space", space, "--model", "lut", "--device", "ci-box", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["latency_ms"] > 0
    proc = nasplat("cost", BEST, "--space", space, "--model", "roofline", "--device", "pixel9", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not know device 'pixel9'" in lines[0]


def test_predictor_fit_prior_pretrains_the_fewshot_latency_model(digits: SearchSpace, tmp_path: Path) -> None:
    """`nasplat predictor fit --model fewshot_latency --prior` pre-trains on every prior row, then adapts to 4
    measured networks; with a prior it beats fitting the 4 alone, and saved models predict the same."""
    from nasplat.cli import fit_from_table, predict_from_table

    archs = list(digits.enumerate())
    strings = [digits.to_string(a) for a in archs]
    x, _ = space_features(digits, archs)
    rng = np.random.default_rng(1)
    base = rng.uniform(0.01, 0.2, x.shape[1])
    devices = {f"dev{i}_ms": 0.2 + x @ (base * rng.uniform(0.7, 1.4, x.shape[1])) for i in range(3)}
    target = 0.3 + 0.5 * devices["dev0_ms"] + 0.8 * devices["dev2_ms"]  # a mix of the prior devices
    pd.DataFrame({"arch": strings, **devices}).to_csv(tmp_path / "prior.csv", index=False)
    few = rng.choice(len(archs), 4, replace=False)  # fewer than the 6 directions the layers span
    pd.DataFrame({"arch": [strings[i] for i in few], "target_ms": target[few]}).to_csv(
        tmp_path / "few.csv", index=False
    )
    pd.DataFrame({"arch": strings, "target_ms": target}).to_csv(tmp_path / "all.csv", index=False)
    space_file = str(SPACES / "cell-digits.yaml")
    quality = {}
    for label, prior in (("prior", tmp_path / "prior.csv"), ("alone", None)):
        out = tmp_path / label
        fit_from_table(space_file, tmp_path / "few.csv", "arch", "target_ms", "fewshot_latency", out, prior)
        predict_from_table(out, tmp_path / "all.csv", "arch", tmp_path / f"{label}.csv")
        predicted = pd.read_csv(tmp_path / f"{label}.csv")["predicted"].to_numpy()
        quality[label] = latency_metrics(target, predicted)["within_10pct"]
    assert quality["prior"] > 0.95
    assert quality["prior"] > quality["alone"]
