"""QDQ ONNX of quantized bundles: int8 layers as QuantizeLinear/DequantizeLinear, run by onnxruntime on integer
kernels, within the stated tolerance of PyTorch's fake quantization; other formats stay simulated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import nasplat_search_spaces  # noqa: F401 - registers the families
from nasplat.datasets import ArrayDataset, DataSpec, load_splits
from nasplat.export import (
    INTEGER_OPS,
    QDQ_TOLERANCE,
    ExportResult,
    calibration_inputs,
    export_bundle,
    preprocessing_for,
)
from nasplat.space import SearchSpace, load_space

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SPACES = Path(__file__).parent / "spaces"
RESNET = SPACES / "quant-resnet-digits.yaml"


def policy(space: SearchSpace, default: str, **layers: tuple[str, str]) -> Any:
    values: dict[str, Any] = {d.label: default for d in space.dimensions}
    for slot, (w, a) in layers.items():
        values[f"q.{slot}.w"], values[f"q.{slot}.a"] = w, a
    return space.make(values)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(RESNET)


@pytest.fixture(scope="module")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_splits(DataSpec.model_validate({"name": "digits", "n_val": 360}))


@pytest.fixture(scope="module")
def supernet(space: SearchSpace, digits: tuple[ArrayDataset, ArrayDataset]) -> Any:
    """The tiny ResNet-8 trained two epochs under the all-int8 policy (so activation ranges are calibrated)."""
    train, _ = digits
    net = space.family.build_supernet(space, seed=0)
    task = space.family.task(space)
    arch = policy(space, "int8")
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for epoch in range(2):
        for batch in train.batches(64, seed=epoch, shuffle=True):
            with net.activate(arch):
                loss = task.loss(net, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def export(space: SearchSpace, net: Any, arch: Any, data: tuple[ArrayDataset, ArrayDataset], out: Path) -> ExportResult:
    train, val = data
    task = space.family.task(space)
    example = next(val.batches(2, seed=None, shuffle=False))[0]
    return export_bundle(
        net, arch, out, metrics={}, provenance={}, example_input=example,
        extras=space.family.bundle_extras(space, arch), preprocess=preprocessing_for(train, task),
        calibration=calibration_inputs(train, task),
    )  # fmt: skip


def optimized_ops(path: Path, tmp: Path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node]


def test_int8_policy_runs_on_integer_kernels(
    space: SearchSpace, supernet: Any, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    arch = policy(space, "int8")
    result = export(space, supernet, arch, digits, tmp_path / "b")
    assert result.qdq_onnx is not None and result.qdq_onnx.is_file() and result.qdq is not None
    report = result.qdq
    assert len(report.layers) == 10 and report.integer_layers == 10
    assert report.dynamic_batch
    # the graph: int8 weights behind DequantizeLinear, activations through QuantizeLinear/DequantizeLinear
    graph = onnx.load(str(result.qdq_onnx)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 20
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(int8_weights) == 10
    # onnxruntime fuses every layer into an integer kernel
    fused = [op for op in optimized_ops(result.qdq_onnx, tmp_path) if op in INTEGER_OPS]
    assert sorted(set(fused)) == ["QGemm", "QLinearConv"] and len(fused) == 10
    # the stored integers are the bundle's (per channel, up to the sign a folded BatchNorm gives)
    model = supernet.extract(arch).eval()
    stored = model.base.blocks[0].conv1.weight
    from onnx import numpy_helper

    conv_ints = [numpy_helper.to_array(t) for t in int8_weights if tuple(t.dims) == tuple(stored.shape)]
    assert any(np.array_equal(np.abs(w), np.abs(stored.numpy())) for w in conv_ints)

    # onnxruntime against PyTorch's fake quantization on data the calibration never saw (validation images)
    _, val = digits
    session = ort.InferenceSession(str(result.qdq_onnx), providers=["CPUExecutionProvider"])
    diffs, agree, top, correct_torch, correct_ort = [], 0, 0.0, 0, 0
    for x, y in val.batches(97, seed=None, shuffle=False):  # 97: batch sizes the export never used
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = session.run(None, {"input": x.numpy()})
        diffs.append(float(np.abs(got - want).max()))
        top = max(top, float(np.abs(want).max()))
        agree += int((got.argmax(1) == want.argmax(1)).sum())
        correct_torch += int((want.argmax(1) == y.numpy()).sum())
        correct_ort += int((got.argmax(1) == y.numpy()).sum())
    assert max(diffs) <= QDQ_TOLERANCE * top
    assert agree / len(val) >= 0.97
    assert abs(correct_ort - correct_torch) <= 0.02 * len(val)
    readme = result.readme.read_text()
    assert "model.qdq.onnx" in readme and "integer kernels" in readme and "int4 or int2" in readme
    assert "model.qdq.onnx" in (result.bundle_dir / "RUN.md").read_text()


def test_mixed_policy_quantizes_only_int8_layers(
    space: SearchSpace, supernet: Any, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    arch = policy(
        space, "int8",
        blocks_0_conv1=("int4", "int8"), blocks_1_conv2=("int8", "int4"), blocks_2_conv1=("fp8_e4m3", "int8"),
        fc=("bfloat16", "float32"), stem_conv=("int8", "float32"),
    )  # fmt: skip
    result = export(space, supernet, arch, digits, tmp_path / "b")
    assert result.qdq is not None and result.onnx_max_abs_diff is not None
    assert result.onnx_max_abs_diff <= 0.05 * 50  # model.onnx: the float simulation of every format (see ONNX_RTOL)
    assert set(result.qdq.layers) == {
        "base.blocks.0.conv2", "base.blocks.1.conv1", "base.blocks.1.shortcut.conv", "base.blocks.2.conv2",
        "base.blocks.2.shortcut.conv",
    }  # fmt: skip
    assert result.qdq.integer_layers == len(result.qdq.layers)
    assert result.qdq.max_rel_diff <= QDQ_TOLERANCE


def test_no_int8_layer_no_qdq_file(
    space: SearchSpace, supernet: Any, digits: tuple[ArrayDataset, ArrayDataset], tmp_path: Path
) -> None:
    result = export(space, supernet, policy(space, "bfloat16", stem_conv=("int4", "int4")), digits, tmp_path / "b")
    assert result.qdq is None and result.qdq_onnx is None
    assert not (result.bundle_dir / "model.qdq.onnx").exists()
    assert "model.qdq.onnx" not in result.readme.read_text()
