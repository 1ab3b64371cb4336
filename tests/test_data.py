"""Datasets: IDX parsing, the CIFAR-10 JPEG archive and its cache, digits, seeded batches, splits, errors."""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import nasplat.datasets as data_mod
from nasplat.datasets import ArrayDataset, DataSpec, load_dataset, load_splits, read_idx
from nasplat.errors import DatasetMissingError, NasplatError, UnknownNameError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, magic: bytes | None = None) -> Path:
    assert array.dtype == np.uint8
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    raw = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def tiny_fashion(root: Path, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


def fake_dataset(n: int = 50, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    c = shape[0]
    return ArrayDataset(
        name="fake",
        images=torch.from_numpy(rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)),
        labels=torch.arange(n, dtype=torch.int64) % 10,
        mean=(0.5,) * c,
        std=(0.25,) * c,
        classes=tuple(str(i) for i in range(10)),
    )


# --------------------------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST


def test_read_idx_gzipped_and_plain(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", arr)), arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", arr, gz=False), expected_ndim=3), arr)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l.gz", labels), expected_ndim=1), labels)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: b"\x08\x03" + raw[2:], "magic"),  # first two bytes must be zero
        (lambda raw: raw[:2] + b"\x42" + raw[3:], "magic"),  # unknown element type
        (lambda raw: raw[:-5], "implies"),  # truncated data
        (lambda raw: raw + b"\x00", "implies"),  # trailing bytes
        (lambda raw: raw[:6], "header"),
        (lambda raw: b"", "magic"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    raw = write_idx(tmp_path / "x", arr, gz=False).read_bytes()
    (tmp_path / "bad").write_bytes(mutate(raw))
    with pytest.raises(NasplatError, match=message):
        read_idx(tmp_path / "bad")


def test_read_idx_rejects_corrupt_gzip_and_wrong_rank(tmp_path: Path) -> None:
    good = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abc")
    (tmp_path / "cut.gz").write_bytes(good[:-6])
    with pytest.raises(NasplatError, match="gzip"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "ok.gz").write_bytes(good)
    with pytest.raises(NasplatError, match="expected 3"):
        read_idx(tmp_path / "ok.gz", expected_ndim=3)


def test_fashion_mnist_loader_on_tiny_files(tmp_path: Path) -> None:
    images, labels = tiny_fashion(tmp_path)
    for split in ("train", "test"):
        ds = load_dataset("fashion_mnist", split, root=tmp_path)
        assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
        assert ds.classes[9] == "Ankle boot" and ds.input_shape == (1, 28, 28)


def test_fashion_mnist_env_var_and_label_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_fashion(tmp_path)
    monkeypatch.setenv("NASPLAT_FASHION_MNIST_DIR", str(tmp_path))
    assert len(load_dataset("fashion_mnist", "train")) == 7
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(7, 10, dtype=np.uint8))
    with pytest.raises(NasplatError, match="out of range"):
        load_dataset("fashion_mnist", "train")


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist absent")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NASPLAT_FASHION_MNIST_DIR", raising=False)
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert test.images.shape == (10000, 1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    mean = train.images.double().mean().item() / 255
    assert mean == pytest.approx(train.mean[0], abs=1e-4)


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 archive


def write_cifar_npz(folder: Path, split: str, n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """A tiny archive in the shared format, with real JPEGs; returns the decoded images (H×W×3)."""
    rng = np.random.default_rng(seed)
    blobs, decoded = [], []
    for _ in range(n):
        img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
        decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / f"cifar10_jpg_{split}.npz",
        jpeg_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=offsets,
        labels=(np.arange(n) % 10).astype(np.uint8),
        names=np.array([f"x/{i:04d}.jpg" for i in range(n)]),
        classes=np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]),
    )
    return decoded


def test_cifar10_loader_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NASPLAT_CACHE_DIR", str(cache))
    decoded = write_cifar_npz(tmp_path / "data" / "cifar10", "train")
    ds = load_dataset("cifar10", "train", root=tmp_path / "data")
    assert ds.images.shape == (6, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[2].permute(1, 2, 0).numpy(), decoded[2])
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5] and ds.classes[0] == "airplane"
    cached = list((cache / "cifar10").glob("*.npy"))
    assert len(cached) == 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data_mod, "_decode_jpegs", no_decoding)
    again = load_dataset("cifar10", "train", root=tmp_path / "data")  # cache hit
    assert torch.equal(again.images, ds.images)

    # a changed source file invalidates the cache (key: size + mtime); the stale entry is replaced
    monkeypatch.undo()
    monkeypatch.setenv("NASPLAT_CACHE_DIR", str(cache))
    write_cifar_npz(tmp_path / "data" / "cifar10", "train", n=4, seed=1)
    source = tmp_path / "data" / "cifar10" / "cifar10_jpg_train.npz"
    os.utime(source, ns=(1_000_000_000, 1_000_000_000))
    assert len(load_dataset("cifar10", "train", root=tmp_path / "data")) == 4
    assert len(list((cache / "cifar10").glob("*.npy"))) == 1


def test_cifar10_data_dir_env_and_bad_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASPLAT_CACHE_DIR", str(tmp_path / "cache"))
    write_cifar_npz(tmp_path / "data" / "cifar10", "test", n=3)
    monkeypatch.setenv("NASPLAT_DATA_DIR", str(tmp_path / "data"))
    assert len(load_dataset("cifar10", "test")) == 3
    np.savez(tmp_path / "data" / "cifar10" / "cifar10_jpg_train.npz", labels=np.zeros(3, dtype=np.uint8))
    with pytest.raises(NasplatError, match="missing keys"):
        load_dataset("cifar10", "train")


def test_missing_datasets_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist") as exc:
        load_dataset("fashion_mnist", "train", root=tmp_path / "empty")
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("NASPLAT_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DatasetMissingError, match="NASPLAT_DATA_DIR") as exc:
        load_dataset("cifar10", "train")
    assert "cifar10/cifar10_jpg_train.npz" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(UnknownNameError, match="cifar10, digits, fashion_mnist"):
        load_dataset("imagenet", "train")
    with pytest.raises(NasplatError, match="split"):
        load_dataset("digits", "validation")


def test_default_data_dir_is_shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NASPLAT_DATA_DIR", raising=False)
    repo_root = Path(data_mod.__file__).resolve().parents[1]
    assert data_mod.default_data_dir() == repo_root.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------------------------
# digits


def test_digits() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) == 1437 and len(test) == 360
    assert train.images.shape == (1437, 1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert train.images.double().mean().item() / 255 == pytest.approx(train.mean[0], abs=1e-4)
    with pytest.raises(NasplatError, match="no root"):
        load_dataset("digits", "train", root="/tmp")


# --------------------------------------------------------------------------------------------------------------
# batches, subsets, splits


def test_batches_are_normalised_and_seeded() -> None:
    ds = fake_dataset()
    x, y = next(ds.batches(8, seed=None, shuffle=False))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (8, 3, 32, 32)
    assert torch.allclose(x, (ds.images[:8].float() / 255 - 0.5) / 0.25, atol=1e-5)
    assert [len(b[1]) for b in ds.batches(16, seed=None, shuffle=False)] == [16, 16, 16, 2]
    assert [len(b[1]) for b in ds.batches(16, seed=None, shuffle=False, drop_last=True)] == [16, 16, 16]
    assert ds.num_batches(16) == 4 and ds.num_batches(16, drop_last=True) == 3

    for augment in (False, True):
        a = list(ds.batches(16, seed=5, shuffle=True, augment=augment))
        b = list(ds.batches(16, seed=5, shuffle=True, augment=augment))
        c = list(ds.batches(16, seed=6, shuffle=True, augment=augment))
        assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
        assert not all(torch.equal(p[1], q[1]) for p, q in zip(a, c))
        assert sorted(torch.cat([p[1] for p in a]).tolist()) == sorted(ds.labels.tolist())  # a permutation
    with pytest.raises(ValueError, match="seed"):
        next(ds.batches(4, seed=None, shuffle=True))


def test_augmentation_crops_and_flips() -> None:
    ds = fake_dataset(n=64)
    (x, _), = ds.batches(64, seed=1, shuffle=False, augment=True)  # fmt: skip
    pixels = torch.round((x * 0.25 + 0.5) * 255).to(torch.uint8)  # undo the normalisation
    padded = torch.nn.functional.pad(ds.images, (4, 4, 4, 4))
    found = []
    for i in range(64):
        # every output is a 32×32 window of the zero-padded image, maybe flipped horizontally
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(
                pixels[i],
                padded[i, :, dy : dy + 32, dx : dx + 32].flip(-1) if flip else padded[i, :, dy : dy + 32, dx : dx + 32],
            )
        ]
        assert len(matches) == 1
        found.append(matches[0])
    assert 10 < sum(f for _, _, f in found) < 54  # about half flipped
    assert len({(dy, dx) for dy, dx, _ in found}) > 20  # shifts vary
    with pytest.raises(NasplatError, match="3×32×32"):
        next(fake_dataset(shape=(1, 28, 28)).batches(4, seed=0, shuffle=True, augment=True))


def test_subset_and_split() -> None:
    ds = fake_dataset(n=100)
    sub = ds.subset([5, 1, 7])
    assert torch.equal(sub.images, ds.images[[5, 1, 7]]) and sub.labels.tolist() == [5, 1, 7]
    assert sub.mean == ds.mean and sub.classes == ds.classes
    train, val = ds.split(30, seed=0)
    assert len(train) == 70 and len(val) == 30
    ids = lambda d: {bytes(img.numpy()) for img in d.images}  # noqa: E731 - images are random, so unique
    assert not ids(train) & ids(val) and len(ids(train) | ids(val)) == 100
    train2, val2 = ds.split(30, seed=0)
    assert torch.equal(val.images, val2.images) and torch.equal(train.images, train2.images)
    assert not torch.equal(ds.split(30, seed=1)[1].images, val.images)
    with pytest.raises(NasplatError, match="hold out"):
        ds.split(100, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset("bad", ds.images.float(), ds.labels, ds.mean, ds.std, ds.classes)


def test_data_spec_and_load_splits() -> None:
    with pytest.raises(ValidationError, match="extra"):
        DataSpec(name="digits", nval=3)  # type: ignore[call-arg]
    train, val = load_splits(DataSpec(name="digits", n_val=200, seed=1))
    assert len(train) == 1237 and len(val) == 200
    small, val_small = load_splits(DataSpec(name="digits", n_val=200, n_train=100, seed=1))
    assert len(small) == 100 and torch.equal(val_small.images, val.images)  # val does not depend on n_train
    # val comes from the official train split, never from test
    full = load_dataset("digits", "train")
    rows = {bytes(img.numpy()) for img in full.images}
    assert all(bytes(img.numpy()) in rows for img in val.images)
    with pytest.raises(NasplatError, match="n_train"):
        load_splits(DataSpec(name="digits", n_val=200, n_train=5000))
    with pytest.raises(NasplatError, match="augmentation"):
        load_splits(DataSpec(name="digits", n_val=200, augment=True))
