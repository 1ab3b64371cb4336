"""preprocess.json and load.py's preprocess()/classes: true to the training pipeline of every built-in dataset.

A deployer has raw images (a decoded JPEG, an IDX file's bytes, scikit-learn's digits), not nasplat's tensors:
each test starts from the raw image as such a deployer would read it, runs it through the bundle's own
``preprocess`` and model, and compares with what the training pipeline (``ArrayDataset.batches``) feeds the
network for the same image: the same tensor, bit for bit, hence the same logits.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import nasplat_search_spaces  # noqa: F401 - registers the families
from nasplat.datasets import FASHION_MNIST_DEFAULT_DIR, ArrayDataset, load_dataset
from nasplat.errors import NasplatError
from nasplat.export import ExportResult, Preprocessing, export_bundle, preprocessing_for
from nasplat.space import SearchSpace, load_space

SPACES = Path(__file__).parent / "spaces"
SHIPPED = Path(__file__).resolve().parent.parent / "search_spaces" / "cell"
INDICES = (0, 7, 123)  # images of the test split compared


def bundle_loader(bundle: Path) -> ModuleType:
    """The bundle's own load.py, imported by path (as a deployer would)."""
    spec = importlib.util.spec_from_file_location(f"bundle_load_{uuid.uuid4().hex[:8]}", bundle / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_for(space: SearchSpace, data: ArrayDataset, out: Path) -> tuple[ExportResult, Any, Any]:
    """A bundle of one architecture of ``space`` with ``data``'s preprocessing; (result, supernet, arch)."""
    supernet = space.family.build_supernet(space, seed=0).eval()
    arch = space.make({label: "nor_conv_3x3" for label in space.labels})
    example = next(data.batches(2, seed=None, shuffle=False))[0]
    task = space.family.task(space)
    pre = preprocessing_for(data, task)
    assert pre == Preprocessing.of_dataset(data)
    result = export_bundle(
        supernet, arch, out, metrics={}, provenance={}, example_input=example, onnx=False, preprocess=pre
    )
    return result, supernet, arch


def pipeline_tensor(data: ArrayDataset, index: int) -> torch.Tensor:
    """The float32 input the training pipeline makes of image ``index`` (a batch of one)."""
    x, _ = next(data.subset([index]).batches(1, seed=None, shuffle=False))
    return x


def check_parity(result: ExportResult, supernet: Any, arch: Any, data: ArrayDataset, raw: list[np.ndarray]) -> None:
    loader = bundle_loader(result.bundle_dir)
    model = loader.load()
    assert loader.classes == list(data.classes)
    batch = loader.preprocess(raw)  # a list of raw images
    for k, (index, image) in enumerate(zip(INDICES, raw, strict=True)):
        want = pipeline_tensor(data, index)
        got = loader.preprocess(image)  # one raw image
        assert got.dtype == torch.float32 and tuple(got.shape) == (1, *data.input_shape)
        assert torch.equal(got, want), f"image {index}: preprocess differs from the training pipeline"
        assert torch.equal(batch[k : k + 1], want)
        with torch.no_grad():
            logits = model(got)
            assert torch.equal(logits, model(want))
            with supernet.activate(arch):
                trained = supernet(want)  # the network as search evaluated it, on the pipeline's tensor
        torch.testing.assert_close(logits, trained, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# the three built-in datasets, from their raw files


def test_digits_from_scikit_learn(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_dataset("digits", "test")
    result, supernet, arch = export_for(load_space(SPACES / "cell-digits.yaml"), data, tmp_path / "b")
    doc = json.loads(Path(result.preprocess or "").read_text())
    assert doc["known"] is True and doc["dataset"] == "digits"
    assert doc["image"] == {
        "dtype": "uint8", "value_range": [0, 255], "height": 8, "width": 8, "channels": 1, "channel_order": "L",
        "layout": "HxW or HxWx1",
    }  # fmt: skip
    assert doc["mean"] == list(data.mean) and doc["std"] == list(data.std) and doc["scale"] == 1 / 255
    assert doc["model_input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW"}
    assert doc["classes"] == [str(d) for d in range(10)]
    assert any("0..16" in note for note in doc["notes"])  # the deployer is told how grey levels were scaled
    # the raw digits as scikit-learn ships them (0..16), scaled as preprocess.json's note says
    bunch = load_digits()
    offset = 1437  # the test split is the last 360 images
    raw = [np.rint(bunch.images[offset + i] * (255.0 / 16.0)).astype(np.uint8) for i in INDICES]
    check_parity(result, supernet, arch, data, raw)
    readme = result.readme.read_text()
    assert "preprocess(images)" in readme and "nothing is resized" in readme and "- note: scikit" in readme


def test_fashion_mnist_from_its_idx_file(tmp_path: Path) -> None:
    root = Path(os.environ.get("NASPLAT_FASHION_MNIST_DIR", FASHION_MNIST_DEFAULT_DIR))
    path = root / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"Fashion-MNIST not installed ({path})")
    data = load_dataset("fashion_mnist", "test")
    result, supernet, arch = export_for(load_space(SHIPPED / "nb201-cpu.yaml"), data, tmp_path / "b")
    # the IDX file read by hand: 16-byte header, then 28x28 bytes per image
    raw_bytes = gzip.decompress(path.read_bytes())
    raw = [np.frombuffer(raw_bytes, np.uint8, 784, 16 + 784 * i).reshape(28, 28) for i in INDICES]
    check_parity(result, supernet, arch, data, raw)
    doc = json.loads(Path(result.preprocess or "").read_text())
    assert doc["classes"][0] == "T-shirt/top" and doc["image"]["channel_order"] == "L"


def test_cifar10_from_its_jpegs(tmp_path: Path, shared_data: Path) -> None:
    from PIL import Image

    source = shared_data / "cifar10" / "cifar10_jpg_test.npz"
    if not source.is_file():
        pytest.skip(f"CIFAR-10 not found ({source})")
    data = load_dataset("cifar10", "test", shared_data)
    result, supernet, arch = export_for(load_space(SHIPPED / "nb201-cifar-cpu.yaml"), data, tmp_path / "b")
    with np.load(source, allow_pickle=False) as z:
        offsets, jpegs = z["offsets"], z["jpeg_bytes"]
        raw = []
        for i in INDICES:  # decoded as a deployer would: Pillow, RGB, H x W x 3
            with Image.open(io.BytesIO(jpegs[offsets[i] : offsets[i + 1]].tobytes())) as im:
                raw.append(np.asarray(im.convert("RGB")))
    check_parity(result, supernet, arch, data, raw)
    doc = json.loads(Path(result.preprocess or "").read_text())
    assert doc["image"]["channel_order"] == "RGB" and doc["image"]["layout"] == "HxWx3"
    assert len(doc["mean"]) == 3 and doc["classes"] == list(data.classes)
    # a PIL image goes in as it is (numpy.asarray of it)
    loader = bundle_loader(result.bundle_dir)
    with Image.open(io.BytesIO(jpegs[offsets[0] : offsets[1]].tobytes())) as im:
        assert torch.equal(loader.preprocess(im.convert("RGB")), pipeline_tensor(data, 0))


# ------------------------------------------------------------------------------------------------------------
# what preprocess refuses


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_dataset("digits", "test")
    result, _, _ = export_for(load_space(SPACES / "cell-digits.yaml"), data, tmp_path_factory.mktemp("d") / "b")
    return result.bundle_dir


def test_preprocess_accepts_batches_and_refuses_what_training_never_saw(digits_bundle: Path) -> None:
    loader = bundle_loader(digits_bundle)
    data = load_dataset("digits", "test")
    images = data.images[:5, 0].numpy()  # N x H x W uint8
    want = next(data.subset(range(5)).batches(5, seed=None, shuffle=False))[0]
    assert torch.equal(loader.preprocess(images), want)  # a batch N x H x W
    assert torch.equal(loader.preprocess(images[..., None]), want)  # N x H x W x 1
    assert torch.equal(loader.preprocess(images[0][..., None]), want[:1])  # H x W x 1
    with pytest.raises(TypeError, match="uint8"):
        loader.preprocess(images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="8x8 images with 1 channel"):
        loader.preprocess(np.zeros((16, 16), np.uint8))  # nothing is resized
    with pytest.raises(ValueError, match="1 channel"):
        loader.preprocess(np.zeros((8, 8, 3), np.uint8))  # colour into a grey network
    other = bundle_loader(digits_bundle)
    assert torch.equal(other.preprocess(images[:1], digits_bundle), want[:1])


def test_preprocessing_must_fit_the_network(tmp_path: Path) -> None:
    space = load_space(SPACES / "cell-digits.yaml")
    supernet = space.family.build_supernet(space, seed=0).eval()
    arch = space.make({label: "skip_connect" for label in space.labels})
    wrong = Preprocessing("x", (3, 8, 8), (0.5,) * 3, (0.5,) * 3, ("a",), "RGB")
    with pytest.raises(NasplatError, match="makes float32 3×8×8 inputs"):
        export_bundle(
            supernet, arch, tmp_path / "b", metrics={}, provenance={}, example_input=torch.zeros(2, 1, 8, 8),
            onnx=False, preprocess=wrong,
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_no_preprocessing_for_inputs_that_are_not_the_images() -> None:
    from nasplat.model import ClassificationTask

    class Noisy(ClassificationTask):
        def model_inputs(self, batch: Any) -> tuple[torch.Tensor, ...]:
            return (batch[0] + 1.0,)

    data = load_dataset("digits", "test")
    assert preprocessing_for(data, ClassificationTask()) is not None
    assert preprocessing_for(data, Noisy()) is None


# ------------------------------------------------------------------------------------------------------------
# a trial of a real study, loaded in a clean process with plain PyTorch


@pytest.fixture(scope="module")
def trial_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A real one-shot search on digits (a tiny supernet, one epoch), its best trial exported."""
    from nasplat.export import export_trial, pick_trial
    from nasplat_dashboards.demo import DemoStudy, write_demo_search

    folder = tmp_path_factory.mktemp("study")
    url = write_demo_search(folder, [DemoStudy("pre-oneshot", "random", 3, supernet_epochs=1)])
    import optuna

    study = optuna.load_study(study_name="pre-oneshot", storage=url)
    trial = pick_trial(study, "knee")
    out = folder / "bundle"
    export_trial(study, trial, out)
    yield out, study
    shutil.rmtree(folder, ignore_errors=True)


def test_trial_bundle_in_plain_pytorch(trial_bundle: tuple[Path, Any], tmp_path: Path) -> None:
    """export_trial records the study's dataset; a clean process without nasplat or safetensors reads a raw
    digits image, and gets the logits the bundle's model gives the training pipeline's tensor of it."""
    from sklearn.datasets import load_digits

    from nasplat.datasets import DataSpec, load_splits

    bundle, study = trial_bundle
    doc = json.loads((bundle / "preprocess.json").read_text())
    assert doc["known"] and doc["dataset"] == "digits" and doc["classes"] == [str(d) for d in range(10)]
    spec = DataSpec.model_validate(study.user_attrs["run_spec"]["dataset"])
    _, val = load_splits(spec)
    # which raw image is val[0]: find it among scikit-learn's digits (val holds images of the train split)
    raw_all = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    target = val.images[0, 0].numpy()
    index = next(i for i in range(len(raw_all)) if np.array_equal(raw_all[i], target))
    np.save(tmp_path / "raw.npy", raw_all[index])
    model = bundle_loader(bundle).load()
    with torch.no_grad():
        want = model(pipeline_tensor(val, 0))
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.modules["safetensors"] = None  # plain PyTorch (and numpy): no safetensors, no nasplat
        import numpy, torch
        spec = importlib.util.spec_from_file_location("bundle_load", {str(bundle / "load.py")!r})
        load = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(load)
        model = load.load()
        with torch.no_grad():
            logits = model(load.preprocess(numpy.load("raw.npy")))
        torch.save(logits, "logits.pt")
        print(load.classes[int(logits.argmax(1)[0])])
        assert not [m for m in sys.modules if m.startswith(("nasplat", "safetensors")) and sys.modules[m]]
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("NASPLAT")}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "logits.pt", weights_only=True)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert proc.stdout.strip() == str(int(want.argmax(1)[0]))
    readme = (bundle / "README.md").read_text()
    assert "mean (0.30543)" in readme and "`classes`: 10 names" in readme


def test_readme_bundle_example_runs(
    trial_bundle: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository README's bundle example, as written, on a real trial bundle and a PNG of a digit."""
    import re

    from PIL import Image

    bundle, _ = trial_bundle
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("An exported bundle needs PyTorch alone", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    digit = load_dataset("digits", "test").images[0, 0].numpy()
    Image.fromarray(digit, mode="L").save(tmp_path / "shoe.png")
    shutil.copytree(bundle, tmp_path / "my_bundle")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() in [str(d) for d in range(10)]
