"""Export one architecture as a self-contained bundle that loads and runs without nasplat.

A bundle is a folder::

    weights.safetensors   the extracted module's state_dict (contiguous, unshared tensors)
    weights.pt            the same tensors saved with torch.save (for PyTorch without safetensors)
    model.py              verbatim source of the file defining the module's class (torch + stdlib only)
    config.json           the module's ``nasplat_config``: ``model.build_model(config)`` rebuilds it
    preprocess.json       how the training pipeline made the network's input from uint8 images (shape, layout,
                          channel order, scaling, per-channel mean/std) and the class names; ``known: false``
                          when the export was not told (:class:`Preprocessing`, :func:`preprocessing_for`)
    arch.json             space name and hash, choices, the family's string form, the space declaration
    metrics.json          the metrics measured for the architecture and their provenance
    load.py               ``load(bundle_dir=None) -> nn.Module``, ``preprocess(images)``, ``classes``: torch only
                          (safetensors when installed, else weights.pt; numpy for ``preprocess``), never nasplat
    model.onnx            the same network in ONNX (optional), checked against PyTorch with onnxruntime
    model.qdq.onnx        for modules that declare int8 layers (the quant family): those layers as
                          QuantizeLinear/DequantizeLinear for onnxruntime's integer kernels (:mod:`nasplat.export._onnx_qdq`)
    README.md             how to load it and feed it images

ONNX: the bundle is exported with torch's dynamo-based exporter (``torch.onnx.export(dynamo=True)``, which
uses onnxscript) with a dynamic batch dimension on every input, weights embedded in the one file. If the
dynamic export fails (some graphs specialise on the batch size) it falls back to the example input's fixed
shape; :attr:`ExportResult.onnx_dynamic_batch` says which one was written. Either way onnxruntime must
reproduce PyTorch's output on ``example_input`` (and on a different batch size when dynamic) within
``atol=1e-4``, or the export fails. ``model.qdq.onnx`` must match the fake-quantized PyTorch output within
:data:`nasplat.export.QDQ_TOLERANCE` of its largest magnitude (its requantized points add error).

Before anything is moved into place the bundle is loaded back through its own ``load.py`` (from each weights
file) and its output compared with the supernet's on ``example_input`` (:func:`export_bundle`), or with the
given module's when a stand-alone module trained on its own, e.g. a fine-tuned finalist, is exported
(:func:`export_module`). The folder is written to a temporary sibling and renamed, so a failed export leaves
nothing behind, and an existing non-empty folder is only replaced with ``overwrite=True``, and only when it is
itself a bundle (holds ``arch.json``): a mistyped path never deletes unrelated files. Non-finite metric values
are written as ``null``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import json
import logging
import math
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.model import Supernet, Task
    from nasplat.space import Architecture, SearchSpace

    from ._onnx_qdq import QDQReport

#: Absolute tolerance for every output comparison (bundle reload, ONNX vs PyTorch).
ATOL = 1e-4
#: ONNX vs PyTorch for modules that quantize activations (they set ``nasplat_onnx_rtol``, e.g. the quant
#: family's): rounding to a grid is discontinuous, so a value that falls on a rounding boundary in one runtime
#: may land on the neighbouring level in the other (the convolutions' float sums differ in their last bits, and
#: even PyTorch's differ with the thread count). Such modules are checked to ``max(ATOL, rtol * max|output|)``.

#: Top-level modules a stand-alone model file may import besides the standard library.
ALLOWED_THIRD_PARTY = frozenset({"torch"})


@dataclass(frozen=True)
class ExportResult:
    """Where an export put each file (``onnx`` is None when ONNX export was not asked for; ``qdq_onnx`` is
    None unless the module declares int8 layers, see :mod:`nasplat.export._onnx_qdq`)."""

    bundle_dir: Path
    weights: Path
    model_source: Path
    config: Path
    arch: Path
    metrics: Path
    load_script: Path
    readme: Path
    onnx: Path | None
    onnx_dynamic_batch: bool | None
    onnx_max_abs_diff: float | None
    weights_pt: Path | None = None
    preprocess: Path | None = None
    qdq_onnx: Path | None = None
    qdq: QDQReport | None = None


# ------------------------------------------------------------------------------------------------------------
# input preprocessing

#: Channel order of the built-in datasets' images as nasplat's loaders store them (nasplat.datasets): IDX files
#: and scikit-learn's digits are grey levels; CIFAR-10's JPEGs are decoded by Pillow as RGB.
CHANNEL_ORDER: dict[str, str] = {"fashion_mnist": "L", "digits": "L", "cifar10": "RGB"}
#: What a deployer must know about a built-in dataset's pixels beyond preprocess.json's numbers.
DATASET_NOTES: dict[str, tuple[str, ...]] = {
    "digits": (
        "scikit-learn's 8x8 digits hold grey levels 0..16; nasplat trains on round(v * 255 / 16) as uint8, "
        "so pass images in that 0..255 form",
    ),
    "fashion_mnist": ("Fashion-MNIST's IDX images as stored: 0 is the background, 255 the brightest ink",),
}


@dataclass(frozen=True)
class Preprocessing:
    """How the training pipeline turned a dataset's uint8 images into the network's input (for preprocess.json).

    ``nasplat.datasets.ArrayDataset.batches`` yields ``(pixel / 255 - mean[c]) / std[c]`` in float32, computed as
    ``pixel * (1 / (255 * std[c])) + (-mean[c] / std[c])``, from N×C×H×W uint8 images, nothing resized (the
    random crop and flip of ``augment`` are training-only); the bundle's ``preprocess`` does the same.
    """

    dataset: str
    input_shape: tuple[int, int, int]  # channels, height, width
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    channel_order: str | None  # "L" (grey), "RGB"; None when the dataset's loader does not say
    notes: tuple[str, ...] = ()

    @classmethod
    def of_dataset(cls, data: ArrayDataset) -> Preprocessing:
        c = data.input_shape[0]
        order = CHANNEL_ORDER.get(data.name, "L" if c == 1 else None)
        return cls(
            dataset=data.name,
            input_shape=data.input_shape,
            mean=tuple(float(m) for m in data.mean),
            std=tuple(float(v) for v in data.std),
            classes=tuple(str(k) for k in data.classes),
            channel_order=order,
            notes=DATASET_NOTES.get(data.name, ()),
        )

    def to_json(self, input_name: str) -> dict[str, Any]:
        c, h, w = self.input_shape
        order = self.channel_order or f"as dataset '{self.dataset}' stores them ({c} channels)"
        return {
            "format": PREPROCESS_FORMAT,
            "known": True,
            "dataset": self.dataset,
            "image": {
                "dtype": "uint8",
                "value_range": [0, 255],
                "height": h,
                "width": w,
                "channels": c,
                "channel_order": order,
                "layout": "HxW or HxWx1" if c == 1 else f"HxWx{c}",
            },
            "resize": f"none: the network was trained on {h}x{w} images as they are",
            "scale": 1.0 / 255.0,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "x[n, c, y, x] = (pixel[n, y, x, c] / 255 - mean[c]) / std[c]  (float32)",
            "model_input": {"name": input_name, "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW"},
            "classes": list(self.classes),
            "notes": list(self.notes),
        }


PREPROCESS_FORMAT = "nasplat-preprocess/1"


def preprocessing_for(data: ArrayDataset, task: Task) -> Preprocessing | None:
    """The preprocessing of ``data`` when the network's input is the image batch itself (``task.model_inputs``
    passes it through, as for classification), else None (e.g. a diffusion task builds noisy inputs)."""
    if len(data) == 0:
        return None
    batch = next(data.batches(1, seed=None, shuffle=False))
    inputs = task.model_inputs(batch)
    if len(inputs) != 1 or inputs[0] is not batch[0]:
        return None
    return Preprocessing.of_dataset(data)


def calibration_inputs(
    data: ArrayDataset, task: Task, *, batches: int = 4, batch_size: int = 64
) -> list[tuple[torch.Tensor, ...]]:
    """Network inputs from ``batches`` shuffled batches of ``data`` (seed 0, no augmentation): what calibrates
    the added quantization points of a QDQ ONNX (:func:`export_bundle`'s ``calibration``)."""
    out: list[tuple[torch.Tensor, ...]] = []
    for batch in data.batches(batch_size, seed=0, shuffle=True):
        if len(out) == batches:
            break
        out.append(tuple(task.model_inputs(batch)))
    return out


def _unknown_preprocess(inputs: tuple[torch.Tensor, ...], reason: str) -> dict[str, Any]:
    names = _input_names(len(inputs))
    return {
        "format": PREPROCESS_FORMAT,
        "known": False,
        "reason": reason,
        "model_inputs": [
            {
                "name": n,
                "shape": ["batch", *(int(d) for d in t.shape[1:])],
                "dtype": str(t.dtype).removeprefix("torch."),
            }
            for n, t in zip(names, inputs, strict=True)
        ],
        "classes": None,
    }


# ------------------------------------------------------------------------------------------------------------
# the stand-alone module contract


def check_standalone_source(path: Path) -> str:
    """Return the source of a stand-alone model file after checking it against the contract.

    The file must import nothing but ``torch`` and the standard library (every ``import``/``from`` anywhere in
    it, checked with ``ast``; relative imports are refused too) and define a top-level ``build_model``.
    """
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NasplatError(f"cannot read the stand-alone model file {path}: {exc.strerror}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise NasplatError(f"{path}: not valid Python ({exc.msg}, line {exc.lineno})") from None
    allowed = set(sys.stdlib_module_names) | ALLOWED_THIRD_PARTY | {"__future__"}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise NasplatError(
                    f"{path}, line {node.lineno}: relative import 'from {'.' * node.level}{node.module or ''} "
                    f"import ...' is not allowed in a stand-alone model file (only torch and the standard library)"
                )
            names = [node.module or ""]
        for name in names:
            if name.split(".")[0] not in allowed:
                raise NasplatError(
                    f"{path}, line {getattr(node, 'lineno', '?')}: imports '{name}'; a stand-alone model file may import only "
                    f"torch and the standard library"
                )
    if not any(isinstance(n, ast.FunctionDef) and n.name == "build_model" for n in tree.body):
        raise NasplatError(f"{path}: a stand-alone model file must define a top-level 'build_model(config)'")
    return source


def _module_config(module: nn.Module) -> dict[str, Any]:
    config = getattr(module, "nasplat_config", None)
    if not isinstance(config, dict):
        raise NasplatError(
            f"extracted module {type(module).__name__} has no 'nasplat_config' dict (stand-alone module contract)"
        )
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise NasplatError(f"{type(module).__name__}.nasplat_config is not JSON-able: {exc}") from None
    return config


# ------------------------------------------------------------------------------------------------------------
# files written into the bundle

LOAD_PY = '''\
"""Load this nasplat export bundle with PyTorch alone (never nasplat).

    import sys; sys.path.insert(0, "path/to/bundle")
    from load import classes, load, preprocess
    model = load()                     # or load("path/to/bundle") from anywhere
    logits = model(preprocess(images))  # uint8 images (numpy: HxW grey or HxWxC), one, a list or a batch
    print(classes[int(logits.argmax(1)[0])])

Weights: ``weights.safetensors`` when the ``safetensors`` package is installed, else ``weights.pt`` (the same
tensors, read with ``torch.load(weights_only=True)``). ``preprocess`` needs numpy (which gives the arrays);
it follows ``preprocess.json``, the training data's own pipeline. Run ``python load.py [bundle_dir]`` for a
one-line summary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def _root(bundle_dir: str | Path | None) -> Path:
    return (Path(bundle_dir) if bundle_dir is not None else HERE).resolve()


def state_dict(bundle_dir: str | Path | None = None, weights: str = "auto") -> dict[str, torch.Tensor]:
    """The weights: ``weights="auto"`` (safetensors if installed, else weights.pt), ``"safetensors"`` or ``"pt"``."""
    root = _root(bundle_dir)
    if weights not in ("auto", "safetensors", "pt"):
        raise ValueError(f"weights must be 'auto', 'safetensors' or 'pt', not {weights!r}")
    if weights != "pt":
        try:
            from safetensors.torch import load_file
        except ImportError:
            if weights == "safetensors":
                raise
        else:
            return load_file(str(root / "weights.safetensors"))
    return torch.load(root / "weights.pt", map_location="cpu", weights_only=True)


def load(bundle_dir: str | Path | None = None, *, weights: str = "auto") -> torch.nn.Module:
    """Build the network from model.py + config.json, load its weights (strict), eval mode."""
    root = _root(bundle_dir)
    name = "bundle_model_" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, root / "model.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {root / 'model.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered (and replaced on every load) so that the file's classes resolve
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    model = module.build_model(config)
    model.load_state_dict(state_dict(root, weights), strict=True)
    return model.eval()


def preprocessing(bundle_dir: str | Path | None = None) -> dict[str, Any]:
    """preprocess.json: what the training pipeline did to images (empty when the bundle has none)."""
    path = _root(bundle_dir) / "preprocess.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def preprocess(images: Any, bundle_dir: str | Path | None = None) -> torch.Tensor:
    """Raw uint8 images -> the model's float32 input batch (N x C x H x W), exactly as in training.

    ``images``: one image (HxW for grey, HxWxC), a list of them, or a batch (NxHxW / NxHxWxC); numpy arrays,
    PIL images or anything ``numpy.asarray`` takes, pixel values 0..255 in the channel order preprocess.json
    names. No resizing: images must already have the training data's height and width.
    """
    import numpy as np

    spec = preprocessing(bundle_dir)
    if not spec.get("known"):
        raise ValueError(
            "this bundle does not record how its inputs were made (preprocess.json: "
            + str(spec.get("reason", "missing"))
            + "); build the input tensor yourself"
        )
    image = spec["image"]
    h, w, c = int(image["height"]), int(image["width"]), int(image["channels"])
    if isinstance(images, (list, tuple)):
        parts = [np.asarray(im) for im in images]
        bad = [p.dtype for p in parts if p.dtype != np.uint8]
        if bad:
            raise TypeError(f"preprocess takes uint8 pixels (0..255), got {bad[0]}")
        arr = np.stack([p[..., None] if p.ndim == 2 else p for p in parts]) if parts else np.zeros((0, h, w, c), dtype=np.uint8)
    else:
        arr = np.asarray(images)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape == (h, w, c)):
            arr = arr[None]
        if arr.ndim == 3 and c == 1:
            arr = arr[..., None]
    if arr.dtype != np.uint8:
        raise TypeError(
            f"preprocess takes uint8 pixels (0..255), got {arr.dtype}; for floats in 0..1 pass "
            "numpy.round(x * 255).astype(numpy.uint8)"
        )
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (h, w, c):
        raise ValueError(
            f"preprocess expects {h}x{w} images with {c} channel(s) ({image['channel_order']}; layout "
            f"{'HxW or ' if c == 1 else ''}HxWx{c}, one or a batch), got an array of shape {tuple(arr.shape)}; "
            "nothing is resized"
        )
    x = torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())  # a writable, contiguous copy
    # the training pipeline's own arithmetic (pixel / 255 - mean) / std, as pixel * scale + shift in float32
    scale = torch.tensor([1.0 / (255.0 * s) for s in spec["std"]], dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec["mean"], spec["std"])], dtype=torch.float32).view(1, -1, 1, 1)
    return x.to(torch.float32) * scale + shift


#: Class names, index = the model's output position (empty when the bundle does not record them).
classes: list[str] = list(preprocessing().get("classes") or [])


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    model = load(root)
    arch = json.loads((root / "arch.json").read_text(encoding="utf-8"))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__} of space {arch['space']} ({arch['string']}): {n_params} parameters")


if __name__ == "__main__":
    main()
'''

README_MD = """\
# {title}

An architecture of the search space `{space}` (hash `{space_hash}`), exported by nasplat {version}.

    {string}

Load it with PyTorch alone (nasplat is not needed; `safetensors` is used when installed, else `weights.pt`;
`preprocess` needs numpy):

```python
import sys; sys.path.insert(0, "path/to/this/folder")
from load import classes, load, preprocess
model = load()  # an nn.Module in eval mode; {input_hint}
```

{preprocess_section}

Or run `python load.py` here for a one-line summary.{onnx_hint}

| file | content |
| --- | --- |
| `model.py` | the network's source (`build_model(config)`), torch and the standard library only |
| `config.json` | the configuration `build_model` takes |
| `weights.safetensors` | the weights (`load_state_dict(..., strict=True)`) |
| `weights.pt` | the same tensors for PyTorch without safetensors (`torch.load(..., weights_only=True)`) |
| `preprocess.json` | how images become the model's input, and the class names |
| `arch.json` | space name, hash and declaration; the architecture's choices and string form |
| `metrics.json` | measured metrics and where they come from |
| `load.py` | `load()`, `preprocess(images)`, `classes` (torch only; numpy for `preprocess`) |
{onnx_row}{qdq_row}{qdq_section}
## Metrics

{metrics_table}
"""


def _metrics_table(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "(none recorded)"
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(rows)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _finite(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def _finite(data: Any) -> Any:
    """NaN and infinities become null: the files stay strict JSON for any reader."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _write_json(path: Path, data: Any) -> None:
    try:
        text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NasplatError(f"cannot write {path.name}: {exc}") from None
    path.write_text(text + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# helpers


def _as_inputs(example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise NasplatError("example_input must be a tensor (or a tuple of tensors) the network takes")
    return tuple(t.detach().cpu() for t in inputs)


def _flat_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flat_outputs(out[k])]
    raise NasplatError(f"cannot compare a network output of type {type(out).__name__}")


def _max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if tuple(x.shape) != tuple(y.shape):
            return math.inf
        if x.numel():
            worst = max(worst, float((x.double() - y.double()).abs().max()))
    return worst


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every sub-module's own mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _import_by_path(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NasplatError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reload_bundle(bundle: Path, weights: str = "auto") -> nn.Module:
    """Load the bundle in-process through its own load.py (which needs no nasplat)."""
    tag = uuid.uuid4().hex[:12]
    loader = _import_by_path(bundle / "load.py", f"_bundle_check_load_{tag}")
    model: nn.Module = loader.load(bundle, weights=weights)
    sys.modules.pop(loader.__name__, None)
    for key in [k for k in sys.modules if k.startswith("bundle_model_")]:
        if getattr(sys.modules[key], "__file__", None) == str((bundle / "model.py").resolve()):
            del sys.modules[key]  # the temporary folder is about to be renamed: forget modules loaded from it
    return model


def _current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, briefly, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _normal_permissions(folder: Path) -> None:
    """mkdtemp (and safetensors) create private files; give the bundle the permissions of ordinary output."""
    umask = _current_umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep torch.onnx's progress chatter and warnings out of the caller's output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def _torch_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> bool:
    """Write ``path`` with torch's exporter: a dynamic batch dimension if it can, else fixed; returns which."""
    input_names = _input_names(len(inputs))
    errors: list[str] = []
    for dynamic in (True, False):
        kwargs: dict[str, Any] = {}
        if dynamic:
            batch = torch.export.Dim("batch", min=1)
            kwargs["dynamic_shapes"] = tuple({0: batch} if t.dim() else {} for t in inputs)
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(
                    module, inputs, str(path), input_names=input_names, dynamo=True, external_data=False,
                    verbose=False, **kwargs,
                )  # fmt: skip
            return dynamic
        except Exception as exc:  # the exporter raises many kinds; report them all together
            errors.append(f"{'dynamic' if dynamic else 'fixed'} batch: {type(exc).__name__}: {exc}".splitlines()[0])
            path.unlink(missing_ok=True)
    raise NasplatError(f"ONNX export failed ({'; '.join(errors)})")


def _export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> tuple[bool, float]:
    """Write ``path`` and check it with onnxruntime; returns (dynamic batch?, max abs difference)."""
    import numpy as np
    import onnxruntime as ort

    input_names = _input_names(len(inputs))
    dynamic = _torch_onnx(module, inputs, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checks = [inputs]
    if dynamic and all(t.dim() for t in inputs):
        other = 1 if inputs[0].shape[0] != 1 else 2
        gen = torch.Generator().manual_seed(0)
        checks.append(tuple(torch.randn((other, *t.shape[1:]), generator=gen).to(t.dtype) for t in inputs))
    rtol = float(getattr(module, "nasplat_onnx_rtol", 0.0) or 0.0)
    worst = 0.0
    for xs in checks:
        with torch.no_grad():
            expected = _flat_outputs(module(*xs))
        got = session.run(None, {n: np.ascontiguousarray(t.numpy()) for n, t in zip(input_names, xs, strict=True)})
        diff = _max_abs_diff(expected, [torch.from_numpy(np.asarray(g)) for g in got])
        top = max((float(t.abs().max()) for t in expected if t.numel()), default=0.0)
        limit = max(ATOL, rtol * top)
        if not diff <= limit:
            raise NasplatError(
                f"ONNX output differs from PyTorch's on a batch of {xs[0].shape[0] if xs[0].dim() else 1} "
                f"(max abs difference {diff:.3g} > {limit:.3g})"
            )
        worst = max(worst, diff)
    return dynamic, worst


# ------------------------------------------------------------------------------------------------------------
# the exporter


def export_bundle(
    supernet: Supernet,
    arch: Architecture,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    onnx: bool = True,
    overwrite: bool = False,
    extras: dict[str, str] | None = None,
    preprocess: Preprocessing | None = None,
    calibration: Sequence[torch.Tensor | tuple[torch.Tensor, ...]] | None = None,
) -> ExportResult:
    """Write the stand-alone bundle of ``arch`` (weights from ``supernet``) to ``out_dir``; see the module doc.

    ``example_input`` is one input batch (a tensor, or a tuple for multi-input networks) used to trace the
    ONNX graph and to check that the bundle reproduces the supernet's output. ``extras`` maps further file
    names to their text (a family's own scripts, e.g. a sampling script; see ``Family.bundle_extras``); they
    may not replace the bundle's own files. ``preprocess`` says how the training data became the network's
    input (:func:`preprocessing_for`; None when unknown, e.g. for a bare module: preprocess.json then says
    so). ``calibration``: input batches that calibrate the added quantization points of a QDQ ONNX (modules
    with int8 layers only; default ``example_input``).
    """
    out = Path(out_dir)
    _check_target(out, overwrite)
    space = supernet.space
    space.validate(arch)
    inputs = _as_inputs(example_input)

    module = supernet.extract(arch).cpu().eval()
    _module_source(module)  # the contract first: a module that cannot ship is refused before anything runs
    device = next((p.device for p in supernet.parameters()), torch.device("cpu"))
    with torch.no_grad(), _eval_mode(supernet), supernet.activate(arch):
        reference = [t.cpu() for t in _flat_outputs(supernet(*(t.to(device) for t in inputs)))]
    with torch.no_grad():
        extracted = _flat_outputs(module(*inputs))
    diff = _max_abs_diff(reference, extracted)
    if not diff <= ATOL:
        raise NasplatError(
            f"the extracted module's output differs from the supernet's (max abs difference {diff:.3g} > {ATOL})"
        )
    return _write_bundle(
        module, space, arch, out, reference, inputs, "supernet",
        metrics=metrics, provenance=provenance, onnx=onnx, extras=extras, preprocess=preprocess,
        calibration=calibration,
    )  # fmt: skip


def export_module(
    module: nn.Module,
    space: SearchSpace,
    arch: Architecture,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    onnx: bool = True,
    overwrite: bool = False,
    extras: dict[str, str] | None = None,
    preprocess: Preprocessing | None = None,
    calibration: Sequence[torch.Tensor | tuple[torch.Tensor, ...]] | None = None,
) -> ExportResult:
    """Write the bundle of a stand-alone module of ``arch`` that was trained on its own (e.g. fine-tuned).

    Same bundle and checks as :func:`export_bundle`, except that the reference output the reloaded bundle
    (and the ONNX graph) must reproduce is ``module``'s own, in eval mode: its weights, not the supernet's,
    are what ships. ``module`` must follow the stand-alone module contract (``nasplat_config``, a
    ``build_model`` source file). ``preprocess`` and ``calibration`` as for :func:`export_bundle`.
    """
    out = Path(out_dir)
    _check_target(out, overwrite)
    space.validate(arch)
    inputs = _as_inputs(example_input)
    module = module.cpu().eval()
    _module_source(module)
    with torch.no_grad():
        reference = [t.cpu() for t in _flat_outputs(module(*inputs))]
    return _write_bundle(
        module, space, arch, out, reference, inputs, "module",
        metrics=metrics, provenance=provenance, onnx=onnx, extras=extras, preprocess=preprocess,
        calibration=calibration,
    )  # fmt: skip


def _module_source(module: nn.Module) -> tuple[str, dict[str, Any]]:
    """The checked source file and the config of a stand-alone module (see the contract)."""
    try:
        source_file = inspect.getsourcefile(type(module))
    except (TypeError, OSError):
        source_file = None
    if source_file is None:
        raise NasplatError(f"cannot find the source file of {type(module).__name__}")
    return check_standalone_source(Path(source_file)), _module_config(module)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NasplatError(f"export target {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise NasplatError(f"export target {out} exists and is not empty; pass overwrite=True to replace it")
        if not (out / "arch.json").is_file():
            raise NasplatError(
                f"export target {out} is not empty and not an export bundle (no arch.json): refusing to replace it"
            )


def _write_bundle(
    module: nn.Module,
    space: SearchSpace,
    arch: Architecture,
    out: Path,
    reference: list[torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    reference_name: str,
    *,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    onnx: bool,
    extras: dict[str, str] | None,
    preprocess: Preprocessing | None,
    calibration: Sequence[torch.Tensor | tuple[torch.Tensor, ...]] | None,
) -> ExportResult:
    """Write, check (reload against ``reference``, ONNX) and move the bundle of ``module`` into ``out``."""
    source, config = _module_source(module)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    qdq: QDQReport | None = None
    try:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"), metadata={"format": "pt", "space": space.name})
        torch.save(state, tmp / "weights.pt")
        _check_torch_weights(tmp / "weights.pt", state)
        (tmp / "model.py").write_text(source, encoding="utf-8")
        _write_json(tmp / "config.json", config)
        string = space.to_string(arch)
        _write_json(
            tmp / "arch.json",
            {
                "space": space.name,
                "space_hash": space.hash,
                "family": space.spec.family,
                "string": string,
                "key": arch.key,
                "digest": arch.digest,
                "choices": arch.as_dict(),
                "space_declaration": space.spec.model_dump(mode="json"),
            },
        )
        from nasplat import __version__

        _write_json(
            tmp / "metrics.json",
            {"metrics": dict(metrics), "provenance": {**dict(provenance), "nasplat_version": __version__}},
        )
        onnx_inputs = _input_names(len(inputs))
        _write_json(tmp / "preprocess.json", _preprocess_doc(preprocess, inputs, onnx_inputs))
        (tmp / "load.py").write_text(LOAD_PY, encoding="utf-8")
        for name, text in (extras or {}).items():
            target = tmp / name
            if target.exists() or Path(name).name != name or name in OWN_FILES:
                raise NasplatError(f"bundle extra '{name}' must be a new plain file name inside the bundle")
            target.write_text(text, encoding="utf-8")

        for weights in ("safetensors", "pt"):  # both weight files, through the bundle's own loader
            reloaded = _reload_bundle(tmp, weights)
            with torch.no_grad():
                diff = _max_abs_diff(reference, _flat_outputs(reloaded(*inputs)))
            if not diff <= ATOL:
                raise NasplatError(
                    f"the bundle's model (load.py, weights.{weights}) does not reproduce the {reference_name}'s "
                    f"output (max abs difference {diff:.3g} > {ATOL})"
                )

        onnx_dynamic: bool | None = None
        onnx_diff: float | None = None
        if onnx:
            onnx_dynamic, onnx_diff = _export_onnx(module, inputs, tmp / "model.onnx")
            qdq = _export_qdq(module, inputs, calibration, tmp / "model.qdq.onnx")

        shape = "×".join(str(s) for s in inputs[0].shape[1:])
        (tmp / "README.md").write_text(
            README_MD.format(
                title=f"{space.name}: {arch.digest}",
                space=space.name,
                space_hash=space.hash,
                version=__version__,
                string=string,
                input_hint=f"input: a float tensor of shape (batch, {shape})",
                preprocess_section=_preprocess_readme(preprocess),
                onnx_hint=(
                    f"\n\n`model.onnx` runs in onnxruntime (inputs named {', '.join(f'`{n}`' for n in onnx_inputs)}; "
                    f"{'any batch size' if onnx_dynamic else f'batch size {inputs[0].shape[0]} only'})."
                    if onnx
                    else ""
                ),
                onnx_row="| `model.onnx` | the same network in ONNX |\n" if onnx else "",
                qdq_row=(
                    "| `model.qdq.onnx` | its int8 layers as QuantizeLinear/DequantizeLinear for integer kernels |\n"
                    if qdq
                    else ""
                ),
                qdq_section=_qdq_readme(qdq),
                metrics_table=_metrics_table(dict(metrics)),
            ),
            encoding="utf-8",
        )

        _normal_permissions(tmp)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            try:
                tmp.rename(out)
            except OSError:
                trash.rename(out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return ExportResult(
        bundle_dir=out,
        weights=out / "weights.safetensors",
        model_source=out / "model.py",
        config=out / "config.json",
        arch=out / "arch.json",
        metrics=out / "metrics.json",
        load_script=out / "load.py",
        readme=out / "README.md",
        onnx=out / "model.onnx" if onnx else None,
        onnx_dynamic_batch=onnx_dynamic,
        onnx_max_abs_diff=onnx_diff,
        weights_pt=out / "weights.pt",
        preprocess=out / "preprocess.json",
        qdq_onnx=out / "model.qdq.onnx" if qdq else None,
        qdq=None if qdq is None else replace(qdq, path=out / "model.qdq.onnx"),
    )


#: Files every bundle writes itself (extras may not take these names).
OWN_FILES = frozenset(
    {"weights.safetensors", "weights.pt", "model.py", "config.json", "arch.json", "metrics.json", "preprocess.json",
     "load.py", "README.md", "model.onnx", "model.qdq.onnx"}
)  # fmt: skip


def _check_torch_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """weights.pt must load with ``torch.load(weights_only=True)`` into exactly ``state``."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    same = sorted(loaded) == sorted(state) and all(
        loaded[k].dtype == v.dtype and loaded[k].shape == v.shape and torch.equal(_bytes(loaded[k]), _bytes(v))
        for k, v in state.items()
    )
    if not same:
        raise NasplatError(f"{path.name} does not hold the same tensors as weights.safetensors")


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _preprocess_doc(
    preprocess: Preprocessing | None, inputs: tuple[torch.Tensor, ...], names: list[str]
) -> dict[str, Any]:
    if preprocess is None:
        return _unknown_preprocess(
            inputs, "exported without its dataset (a bare module, or a network whose input is not the image batch)"
        )
    shape = tuple(int(d) for d in inputs[0].shape[1:])
    if len(inputs) != 1 or shape != preprocess.input_shape or inputs[0].dtype != torch.float32:
        raise NasplatError(
            f"preprocessing of dataset '{preprocess.dataset}' makes float32 {'×'.join(map(str, preprocess.input_shape))} "
            f"inputs, but the network takes {len(inputs)} input(s), the first {inputs[0].dtype} {'×'.join(map(str, shape))}"
        )
    return preprocess.to_json(names[0])


def _preprocess_readme(preprocess: Preprocessing | None) -> str:
    if preprocess is None:
        return (
            "`preprocess.json` records no input preprocessing for this bundle (it was exported without its "
            "dataset), so `preprocess()` refuses and `classes` is empty: build the input tensor as the network "
            "was trained."
        )
    c, h, w = preprocess.input_shape
    order = {"L": "grey levels", "RGB": "channels in RGB order"}.get(
        preprocess.channel_order or "", f"channels as dataset `{preprocess.dataset}` stores them"
    )
    layout = "`HxW` (or `HxWx1`)" if c == 1 else f"`HxWx{c}`"
    mean = ", ".join(f"{m:.5g}" for m in preprocess.mean)
    std = ", ".join(f"{v:.5g}" for v in preprocess.std)
    notes = "".join(f"\n- note: {n}" for n in preprocess.notes)
    return (
        "Real images go through `preprocess`, which repeats the training pipeline (`preprocess.json` holds the "
        "numbers):\n\n"
        "```python\n"
        "x = preprocess(images)             # uint8 numpy images -> float32 (batch, "
        f"{c}, {h}, {w})\n"
        "probs = model(x).softmax(1)\n"
        "print(classes[int(probs[0].argmax())], float(probs[0].max()))\n"
        "```\n\n"
        f"- images: {layout} uint8 arrays (values 0..255, {order}), one, a list, or a batch "
        f"(`N` first); {h}×{w} exactly: nothing is resized (training did not resize either)\n"
        f"- pixels scaled to 0..1 (`/ 255`), then normalised per channel: mean ({mean}), std ({std}) of "
        f"dataset `{preprocess.dataset}`'s training split; channels first (NCHW), float32\n"
        f"- `classes`: {len(preprocess.classes)} names, `classes[i]` is output `i` "
        f"({', '.join(preprocess.classes[:4])}{', ...' if len(preprocess.classes) > 4 else ''}){notes}"
    )


def _export_qdq(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    calibration: Sequence[torch.Tensor | tuple[torch.Tensor, ...]] | None,
    path: Path,
) -> QDQReport | None:
    """model.qdq.onnx for a module that declares int8 layers (see :mod:`nasplat.export._onnx_qdq`), else None."""
    from ._onnx_qdq import declared_layers, write_qdq_onnx

    declared = declared_layers(module)
    if declared is None:
        return None
    float_module, layers = declared
    batches = [_as_inputs(b) for b in calibration] if calibration else [inputs]
    return write_qdq_onnx(float_module, layers, module, inputs, batches, path, _torch_onnx)


def _qdq_readme(qdq: QDQReport | None) -> str:
    if qdq is None:
        return ""
    from ._onnx_qdq import QDQ_MIN_AGREEMENT, QDQ_TOLERANCE

    agree = (
        ""
        if qdq.argmax_agreement is None
        else f", the same argmax on {qdq.argmax_agreement:.1%} of them (at least {QDQ_MIN_AGREEMENT:.0%} required)"
    )
    req = (
        f"{len(qdq.requantized)} convolution output(s) that feed float operations (residual additions and the "
        f"like) are quantized too, because onnxruntime runs a convolution on integer kernels only with a "
        f"quantized output; that, and int32 biases, is the only difference from `model.onnx`"
        if qdq.requantized
        else "no other tensor is quantized, so it computes what `model.onnx` computes up to int32 biases"
    )
    return f"""
## Integer ONNX (`model.qdq.onnx`)

The {len(qdq.layers)} layer(s) with int8 weights and int8 input activations ({", ".join(f"`{n}`" for n in qdq.layers)})
are QuantizeLinear/DequantizeLinear around int8 weights (per output channel, BatchNorm folded in) and int8
activations (the policy's own calibrated scales); onnxruntime fuses them into integer kernels (QLinearConv,
QGemm: {qdq.integer_layers} on the exporting machine's CPU). {req[0].upper()}{req[1:]}.

Checked at export: onnxruntime against the fake-quantized PyTorch model on {qdq.checked} samples, max abs
difference {qdq.max_abs_diff:.3g} ({qdq.max_rel_diff:.2%} of the largest output magnitude; the limit is
{QDQ_TOLERANCE:.0%}){agree}.

Every other format stays fake-quantized (simulated in float arithmetic) in both ONNX files: onnxruntime has no
integer kernels for int4 or int2 (their values are exact in `model.py`, `model.onnx` and the integer tensors
of `weights.safetensors`), nor for float8, bfloat16 or float16 here; int8 weights with non-int8 activations
(or the reverse) are simulated too.
"""
