"""Image datasets as in-memory uint8 arrays, their loaders, and seeded batch iteration.

An :class:`ArrayDataset` holds every image of a split as one ``uint8`` tensor (N×C×H×W) with int64 labels.
``batches`` yields normalised float32 tensors; shuffling and augmentation are seeded, so the same seed gives
the same batches, bit for bit. Nothing here touches global random state.

Built-in datasets (``load_dataset(name, split)``):

- ``fashion_mnist``: the original gzipped IDX files (Debian package ``dataset-fashion-mnist``, installed in
  ``/usr/share/datasets/fashion-mnist``). Root: ``root`` argument, else ``$NASPLAT_FASHION_MNIST_DIR``.
- ``cifar10``: CIFAR-10 as JPEG bytes in ``<data dir>/cifar10/cifar10_jpg_{train,test}.npz`` (see
  ``shared/data/README.md``). Data dir: ``root`` argument, else ``$NASPLAT_DATA_DIR``, else ``shared/data`` next
  to the project checkout. Decoded once with Pillow and cached as ``.npy`` in ``$NASPLAT_CACHE_DIR`` (default
  ``~/.cache/nasplat``), keyed by the source file's size and modification time.
- ``digits``: scikit-learn's bundled 8×8 digits (1797 images, grey levels 0..16 scaled to 0..255). It has no
  official split; nasplat uses the first 1437 images as ``train`` and the last 360 as ``test`` (the file's
  order, which is already mixed across writers). It takes no ``root``.

``mean`` and ``std`` are per-channel statistics of each dataset's official train split on the 0..1 scale
(pixel / 255); ``batches`` yields ``(pixel / 255 - mean) / std``. They belong to the dataset, not to a subset,
so train, validation and test data are normalised the same way.

More datasets plug in through ``nasplat.registry.register("dataset", NAME)`` on a loader
``loader(split: str, root: Path | None) -> ArrayDataset``.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from nasplat import registry
from nasplat.errors import DatasetMissingError, NasplatError

Split = Literal["train", "test"]
DatasetLoader = Callable[[str, Path | None], "ArrayDataset"]

#: Padding (pixels per side) of the random-crop augmentation.
CROP_PADDING_PX = 4


# --------------------------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole split in memory: ``images`` uint8 N×C×H×W, ``labels`` int64 N."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 N×C×H×W tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be an int64 vector, got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need one value per channel ({channels})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ArrayDataset({self.name!r}, n={len(self)}, shape={self.input_shape}, classes={len(self.classes)})"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """The images at ``indices``, in that order (same normalisation and classes)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx.ndim != 1:
            raise ValueError("indices must be one-dimensional")
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} images")
        return replace(self, images=self.images[idx].contiguous(), labels=self.labels[idx].contiguous())

    def split(self, n_val: int, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
        """``(train, val)``: ``n_val`` images chosen at random (seeded) for ``val``, the rest for ``train``.

        Both keep the original order of the images.
        """
        if not 0 < n_val < len(self):
            raise NasplatError(f"dataset '{self.name}': cannot hold out {n_val} of {len(self)} images for validation")
        perm = np.random.default_rng(seed).permutation(len(self))
        return self.subset(np.sort(perm[n_val:])), self.subset(np.sort(perm[:n_val]))

    def batches(
        self,
        batch_size: int,
        *,
        seed: int | None,
        shuffle: bool,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` batches: ``x`` float32 normalised, ``y`` int64.

        ``shuffle`` draws the order from a numpy Generator and ``augment`` (random crop with 4-pixel zero
        padding, then a horizontal flip with probability 1/2; 32×32 colour images only) from a torch Generator,
        both made from ``seed``; ``seed`` may be ``None`` only when neither is asked for.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (shuffle or augment) and seed is None:
            raise ValueError("shuffled or augmented batches need a seed (randomness is explicit in nasplat)")
        if augment:
            check_augmentable(self)
        order_seq, aug_seq = np.random.SeedSequence(0 if seed is None else seed).spawn(2)
        n = len(self)
        order = np.random.default_rng(order_seq).permutation(n) if shuffle else np.arange(n)
        order_t = torch.from_numpy(order)
        gen = None
        if augment:
            gen = torch.Generator().manual_seed(int(aug_seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(1, -1, 1, 1)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order_t[start : start + batch_size]
            images = self.images[idx]
            if gen is not None:
                images = _random_crop_flip(images, gen)
            x = images.to(torch.float32) * scale + shift
            yield x, self.labels[idx]

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def check_augmentable(data: ArrayDataset) -> None:
    """Raise unless ``data`` holds 32×32 colour images (the only kind the augmentation is defined for)."""
    if data.input_shape != (3, 32, 32):
        raise NasplatError(
            f"dataset '{data.name}': augmentation (random crop + flip) is defined for 3×32×32 colour images, "
            f"not {'×'.join(map(str, data.input_shape))}; set augment to false"
        )


def _random_crop_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop of each image from its zero-padded copy, then a random horizontal flip (uint8 in and out)."""
    b, c, h, w = images.shape
    p = CROP_PADDING_PX
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


# --------------------------------------------------------------------------------------------------------------
# IDX files (MNIST / Fashion-MNIST)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array; corrupt files raise a NasplatError naming the problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetMissingError(f"{path}: file not found") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise NasplatError(f"{path}: corrupt gzip data ({exc}); reinstall or re-download the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise NasplatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise NasplatError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NasplatError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[raw[2]]
    expected_bytes = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected_bytes:
        raise NasplatError(f"{path}: IDX file is {len(raw)} bytes, its header {shape} implies {expected_bytes}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------------------------
# built-in datasets

FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Per-channel statistics of each official train split, on the 0..1 scale (computed once from the data; for
# CIFAR-10, from the JPEGs as Pillow decodes them: the train split's mean is 125.3, 122.9, 113.9 of 255).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.28604,), (0.35302,)
CIFAR10_MEAN, CIFAR10_STD = (0.49125, 0.48209, 0.44652), (0.24523, 0.24278, 0.26063)
DIGITS_MEAN, DIGITS_STD = (0.30543,), (0.37534,)
DIGITS_N_TRAIN = 1437  # first 1437 images train, last 360 test


def default_data_dir() -> Path:
    """``$NASPLAT_DATA_DIR``, else ``shared/data`` beside the project checkout (``<checkout>/../shared/data``)."""
    env = os.environ.get("NASPLAT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def cache_dir() -> Path:
    """Where decoded datasets are cached: ``$NASPLAT_CACHE_DIR``, else ``~/.cache/nasplat``."""
    env = os.environ.get("NASPLAT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nasplat"


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise NasplatError(f"dataset '{name}': unknown split '{split}'; allowed: test, train")


def _idx_file(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


@registry.register("dataset", "fashion_mnist")
def load_fashion_mnist(split: str, root: Path | None = None) -> ArrayDataset:
    _check_split("fashion_mnist", split)
    if root is None:
        env = os.environ.get("NASPLAT_FASHION_MNIST_DIR")
        root = Path(env).expanduser() if env else FASHION_MNIST_DEFAULT_DIR
    prefix = "train" if split == "train" else "t10k"
    files = {kind: _idx_file(root, f"{prefix}-{kind}-idx{nd}-ubyte") for kind, nd in (("images", 3), ("labels", 1))}
    missing = [f"{prefix}-{kind}-idx{nd}-ubyte.gz" for (kind, nd) in (("images", 3), ("labels", 1)) if not files[kind]]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST not found: {root} lacks {', '.join(missing)}; install it with "
            f"`apt-get install dataset-fashion-mnist` (files land in {FASHION_MNIST_DEFAULT_DIR}) or set "
            "NASPLAT_FASHION_MNIST_DIR to the folder holding the IDX files"
        )
    images_path, labels_path = files["images"], files["labels"]
    assert images_path is not None and labels_path is not None
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise NasplatError(f"{root}: Fashion-MNIST IDX files must hold unsigned bytes")
    if len(images) != len(labels):
        raise NasplatError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split")
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise NasplatError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    return ArrayDataset(
        name="fashion_mnist",
        images=torch.from_numpy(np.ascontiguousarray(images[:, None])),
        labels=torch.from_numpy(labels.astype(np.int64)),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        classes=FASHION_MNIST_CLASSES,
    )


def _cifar_file(root: Path | None, split: str) -> Path:
    data_dir = root if root is not None else default_data_dir()
    filename = f"cifar10_jpg_{split}.npz"
    for candidate in (data_dir / "cifar10" / filename, data_dir / filename):
        if candidate.is_file():
            return candidate
    how = "the `root` argument" if root is not None else "NASPLAT_DATA_DIR"
    raise DatasetMissingError(
        f"CIFAR-10 not found: no {data_dir / 'cifar10' / filename}; set {how} to the folder holding "
        f"cifar10/{filename} (the project's shared/data folder, see shared/data/README.md)"
    )


def _decode_jpegs(jpeg_bytes: np.ndarray, offsets: np.ndarray, source: Path) -> np.ndarray:
    """Decode every JPEG into an N×3×32×32 uint8 array, with a progress bar."""
    from PIL import Image, UnidentifiedImageError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    n = len(offsets) - 1
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"decoding {source.name} (once; cached)", total=n)
        for i in range(n):
            buf = jpeg_bytes[offsets[i] : offsets[i + 1]].tobytes()
            try:
                with Image.open(io.BytesIO(buf)) as img:
                    arr = np.asarray(img.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise NasplatError(f"{source}: image {i} is not a readable JPEG ({exc})") from None
            if arr.shape != (32, 32, 3):
                raise NasplatError(f"{source}: image {i} is {arr.shape[1]}×{arr.shape[0]}, expected 32×32")
            out[i] = arr
            if i % 500 == 0 or i == n - 1:
                bar.update(task, completed=i + 1)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _cached_decode(source: Path, jpeg_bytes: Callable[[], np.ndarray], offsets: np.ndarray) -> np.ndarray:
    n = len(offsets) - 1
    st = source.stat()
    folder = cache_dir() / "cifar10"
    cache_file = folder / f"{source.stem}-{st.st_size}-{st.st_mtime_ns}.npy"
    if cache_file.is_file():
        try:
            cached = np.load(cache_file, allow_pickle=False)
        except (OSError, ValueError):
            cached = None  # unreadable cache: decode again and overwrite it
        if cached is not None and cached.shape == (n, 3, 32, 32) and cached.dtype == np.uint8:
            return cached
    images = _decode_jpegs(jpeg_bytes(), offsets, source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{cache_file.stem}-", suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, images, allow_pickle=False)
            os.chmod(tmp, 0o644)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for stale in folder.glob(f"{source.stem}-*.npy"):  # older versions of the same source file
            if stale != cache_file:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # an unwritable cache only costs time: the next load decodes again
    return images


@registry.register("dataset", "cifar10")
def load_cifar10(split: str, root: Path | None = None) -> ArrayDataset:
    _check_split("cifar10", split)
    source = _cifar_file(root, split)
    try:
        with np.load(source, allow_pickle=False) as z:
            missing = sorted({"jpeg_bytes", "offsets", "labels", "classes"} - set(z.files))
            if missing:
                raise NasplatError(f"{source}: not a CIFAR-10 JPEG archive (missing keys: {', '.join(missing)})")
            offsets = z["offsets"].astype(np.int64)
            labels = z["labels"].astype(np.int64)
            classes = tuple(str(c) for c in z["classes"])
            if len(offsets) != len(labels) + 1:
                raise NasplatError(f"{source}: {len(labels)} labels but {len(offsets) - 1} images")
            images = _cached_decode(source, lambda: z["jpeg_bytes"], offsets)
    except (OSError, ValueError, zlib.error) as exc:
        raise NasplatError(f"{source}: cannot read CIFAR-10 archive ({exc})") from None
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise NasplatError(f"{source}: labels out of range 0..{len(classes) - 1}")
    return ArrayDataset(
        name="cifar10",
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        classes=classes,
    )


@registry.register("dataset", "digits")
def load_digits(split: str, root: Path | None = None) -> ArrayDataset:
    _check_split("digits", split)
    if root is not None:
        raise NasplatError("dataset 'digits' is bundled with scikit-learn and takes no root; leave root unset")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    part = slice(0, DIGITS_N_TRAIN) if split == "train" else slice(DIGITS_N_TRAIN, None)
    return ArrayDataset(
        name="digits",
        images=torch.from_numpy(np.ascontiguousarray(images[part])),
        labels=torch.from_numpy(np.ascontiguousarray(labels[part])),
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        classes=tuple(str(d) for d in range(10)),
    )


_BUILTIN: dict[str, DatasetLoader] = {
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "digits": load_digits,
}


def load_dataset(name: str, split: Split | str, root: str | Path | None = None) -> ArrayDataset:
    """One split (``"train"`` or ``"test"``) of a dataset by name; see the module docstring for locations."""
    loader = _BUILTIN.get(name)
    if loader is None:  # plugins may register more; unknown names list every registered one
        loader = registry.get("dataset", name)
    return loader(split, None if root is None else Path(root).expanduser())


# --------------------------------------------------------------------------------------------------------------
# run-time data declaration


class DataSpec(BaseModel):
    """What data a search trains and evaluates on.

    ``val`` (``n_val`` images) is held out from the official train split for search-time evaluation; the
    test split is never touched. ``n_train`` then optionally subsamples what remains, seeded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    root: str | None = None
    n_train: int | None = Field(default=None, ge=1)
    n_val: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=64, ge=1)
    augment: bool = False
    seed: int = 0


def load_splits(spec: DataSpec) -> tuple[ArrayDataset, ArrayDataset]:
    """``(train, val)`` from the official train split: val carved first (seeded), then train subsampled."""
    full = load_dataset(spec.name, "train", spec.root)
    if spec.augment:
        check_augmentable(full)
    train, val = full.split(spec.n_val, spec.seed)
    if spec.n_train is not None:
        if spec.n_train > len(train):
            raise NasplatError(
                f"dataset '{spec.name}': n_train={spec.n_train} but only {len(train)} images remain after holding "
                f"out n_val={spec.n_val} of {len(full)}"
            )
        pick = np.random.default_rng([spec.seed, 1]).choice(len(train), size=spec.n_train, replace=False)
        train = train.subset(np.sort(pick))
    return train, val
