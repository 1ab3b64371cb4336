"""Export bundles: files, ONNX parity, loading without nasplat in a clean process, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nasplat.errors import NasplatError
from nasplat.export import ExportResult, check_standalone_source, export_bundle
from nasplat.model import Supernet
from nasplat.space import Architecture, SearchSpace, load_space

SPACES = Path(__file__).parent / "spaces"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(SPACES / "cell-digits.yaml")


@pytest.fixture(scope="module")
def supernet(space: SearchSpace) -> Supernet:
    with torch.random.fork_rng():  # the family initialises with torch's defaults: seed them, locally
        torch.manual_seed(0)
        net = space.family.build_supernet(space)
    # move BN statistics away from their defaults so that the copied buffers matter
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def arch(space: SearchSpace) -> Architecture:
    rng = np.random.default_rng(7)
    while True:  # a cell with at least one convolution, so weights matter
        a = space.sample(rng)
        if any(v in ("nor_conv_1x1", "nor_conv_3x3") for _, v in a):
            return a


@pytest.fixture(scope="module")
def example() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory,
    supernet: Supernet,
    arch: Architecture,
    example: torch.Tensor,
) -> ExportResult:
    out = tmp_path_factory.mktemp("export") / "bundle"
    return export_bundle(
        supernet,
        arch,
        out,
        metrics={"accuracy": 12.5, "macs": 1000.0},
        provenance={"estimator": "test", "seed": 0},
        example_input=example,
    )


def test_bundle_files(bundle: ExportResult, space: SearchSpace, arch: Architecture) -> None:
    names = sorted(p.name for p in bundle.bundle_dir.iterdir())
    assert names == sorted(
        [
            "weights.safetensors",
            "weights.pt",
            "model.py",
            "config.json",
            "preprocess.json",
            "arch.json",
            "metrics.json",
            "load.py",
            "model.onnx",
            "README.md",
        ]
    )
    assert bundle.qdq_onnx is None  # a float network declares no int8 layers
    arch_doc = json.loads(bundle.arch.read_text())
    assert arch_doc["space"] == space.name and arch_doc["space_hash"] == space.hash
    assert arch_doc["choices"] == arch.as_dict()
    assert arch_doc["string"] == space.to_string(arch)
    assert space.from_string(arch_doc["string"]) == arch
    assert arch_doc["space_declaration"]["name"] == space.name
    metrics = json.loads(bundle.metrics.read_text())
    assert metrics["metrics"] == {"accuracy": 12.5, "macs": 1000.0}
    assert metrics["provenance"]["estimator"] == "test"
    config = json.loads(bundle.config.read_text())
    assert config["ops"] == {k.removeprefix("cell."): v for k, v in arch.as_dict().items()}
    readme = bundle.readme.read_text()
    assert "from load import classes, load, preprocess" in readme
    assert "weights.pt" in readme and "safetensors` is used when installed" in readme
    # a bare supernet export is not told its dataset: preprocess.json says so, with the input it knows
    assert bundle.preprocess is not None
    pre = json.loads(bundle.preprocess.read_text())
    assert pre["known"] is False and pre["classes"] is None
    assert pre["model_inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert "records no input preprocessing" in readme
    assert not list(bundle.bundle_dir.parent.glob(".bundle.*")), "temporary folders left behind"


def test_onnx_matches_pytorch(bundle: ExportResult, supernet: Supernet, arch: Architecture) -> None:
    import onnxruntime as ort

    assert bundle.onnx is not None and bundle.onnx_max_abs_diff is not None
    assert bundle.onnx_max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(bundle.onnx), providers=["CPUExecutionProvider"])
    sizes = (3, 1) if bundle.onnx_dynamic_batch else (4,)
    for n in sizes:
        x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
        with torch.no_grad(), supernet.activate(arch):
            expected = supernet(x).numpy()
        (got,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_loads_without_nasplat_in_clean_process(
    bundle: ExportResult, supernet: Supernet, arch: Architecture, tmp_path: Path
) -> None:
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), supernet.activate(arch):
        expected = supernet(x)
    torch.save(x, tmp_path / "x.pt")
    # plain PyTorch: safetensors (and nasplat) cannot be imported, so the loader reads weights.pt
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.modules["safetensors"] = None  # import safetensors now raises ImportError
        import torch
        spec = importlib.util.spec_from_file_location("bundle_loader", {str(bundle.load_script)!r})
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        model = loader.load({str(bundle.bundle_dir)!r})
        assert not model.training
        with torch.no_grad():
            y = model(torch.load("x.pt"))
        torch.save(y, "y.pt")
        try:
            loader.load({str(bundle.bundle_dir)!r}, weights="safetensors")
        except ImportError:
            pass
        else:
            raise AssertionError("safetensors was importable")
        assert loader.classes == []
        try:
            loader.preprocess([])
        except ValueError as exc:
            assert "does not record" in str(exc), exc
        else:
            raise AssertionError("preprocess ran without preprocessing")
        leaked = sorted(m for m in sys.modules if m.startswith(("nasplat", "safetensors")) and sys.modules[m])
        assert not leaked, leaked
        print("clean")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("NASPLAT")}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("clean")
    got = torch.load(tmp_path / "y.pt")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # `python load.py` prints a one-line summary
    proc = subprocess.run(
        [sys.executable, "-I", str(bundle.load_script)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "parameters" in lines[0]


def test_refuses_to_overwrite(
    bundle: ExportResult, supernet: Supernet, arch: Architecture, example: torch.Tensor, space: SearchSpace
) -> None:
    before = bundle.weights.read_bytes()
    with pytest.raises(NasplatError, match="not empty"):
        export_bundle(supernet, arch, bundle.bundle_dir, metrics={}, provenance={}, example_input=example)
    assert bundle.weights.read_bytes() == before
    other = space.make({label: "nor_conv_1x1" for label in space.labels})
    result = export_bundle(
        supernet, other, bundle.bundle_dir, metrics={}, provenance={}, example_input=example, onnx=False, overwrite=True
    )
    try:
        assert result.onnx is None and not (result.bundle_dir / "model.onnx").exists()
        assert json.loads(result.arch.read_text())["choices"] == other.as_dict()
        assert not list(bundle.bundle_dir.parent.glob(".bundle.*")), "temporary folders left behind"
    finally:  # put the module-scoped bundle back for the other tests
        export_bundle(
            supernet, arch, bundle.bundle_dir, metrics={"accuracy": 12.5, "macs": 1000.0},
            provenance={"estimator": "test", "seed": 0}, example_input=example, overwrite=True,
        )  # fmt: skip


def test_overwrite_only_replaces_a_bundle(
    tmp_path: Path, supernet: Supernet, arch: Architecture, example: torch.Tensor
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(NasplatError, match="not an export bundle"):
        export_bundle(supernet, arch, out, metrics={}, provenance={}, example_input=example, onnx=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_non_finite_metrics_become_null(
    tmp_path: Path, supernet: Supernet, arch: Architecture, example: torch.Tensor
) -> None:
    result = export_bundle(
        supernet, arch, tmp_path / "b", metrics={"loss": float("nan"), "accuracy": 1.0}, provenance={},
        example_input=example, onnx=False,
    )  # fmt: skip
    assert json.loads(result.metrics.read_text())["metrics"] == {"loss": None, "accuracy": 1.0}


def test_empty_existing_folder_is_fine(
    tmp_path: Path, supernet: Supernet, arch: Architecture, example: torch.Tensor
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    result = export_bundle(supernet, arch, out, metrics={}, provenance={}, example_input=example, onnx=False)
    assert result.weights.is_file()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import numpy as np\ndef build_model(config): ...\n", "imports 'numpy'"),
        ("from nasplat.errors import NasplatError\ndef build_model(config): ...\n", "imports 'nasplat.errors'"),
        ("def build_model(config):\n    import yaml\n", "imports 'yaml'"),
        ("from .helpers import x\ndef build_model(config): ...\n", "relative import"),
        ("import torch\n", "build_model"),
    ],
)
def test_standalone_source_check(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "model.py"
    path.write_text(source)
    with pytest.raises(NasplatError, match=message):
        check_standalone_source(path)


def test_forbidden_import_refuses_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, space: SearchSpace, arch: Architecture, example: torch.Tensor
) -> None:
    source = textwrap.dedent(
        """
        import numpy  # not allowed in a stand-alone file
        import torch
        from torch import nn


        class Tiny(nn.Module):
            def __init__(self, config):
                super().__init__()
                self.nasplat_config = dict(config)
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                return self.fc(x.flatten(1))


        def build_model(config):
            return Tiny(config)
        """
    )
    (tmp_path / "bad_standalone.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_standalone", raising=False)  # so the import is undone after the test
    import bad_standalone  # type: ignore[import-not-found]

    class BadSupernet(Supernet):
        def __init__(self) -> None:
            super().__init__(space)
            self.inner = bad_standalone.build_model({})

        def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(*inputs)

        def extract(self, arch: Architecture) -> torch.nn.Module:
            return bad_standalone.build_model({})

    out = tmp_path / "out"
    with pytest.raises(NasplatError, match="imports 'numpy'"):
        export_bundle(BadSupernet(), arch, out, metrics={}, provenance={}, example_input=example, onnx=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
