"""Export one architecture as a self-contained bundle that loads and runs without nasplat.

A bundle is a folder::

    weights.safetensors   the extracted module's state_dict (contiguous, unshared tensors)
    model.py              verbatim source of the file defining the module's class (torch + stdlib only)
    config.json           the module's ``nasplat_config``: ``model.build_model(config)`` rebuilds it
    arch.json             space name and hash, choices, the family's string form, the space declaration
    metrics.json          the metrics measured for the architecture and their provenance
    load.py               ``load(bundle_dir=None) -> nn.Module`` (torch + safetensors, never nasplat)
    model.onnx            the same network in ONNX (optional), checked against PyTorch with onnxruntime
    README.md             how to load it in three lines

ONNX: the bundle is exported with torch's dynamo-based exporter (``torch.onnx.export(dynamo=True)``, which
uses onnxscript) with a dynamic batch dimension on every input, weights embedded in the one file. If the
dynamic export fails (some graphs specialise on the batch size) it falls back to the example input's fixed
shape; :attr:`ExportResult.onnx_dynamic_batch` says which one was written. Either way onnxruntime must
reproduce PyTorch's output on ``example_input`` (and on a different batch size when dynamic) within
``atol=1e-4``, or the export fails.

Before anything is moved into place the bundle is loaded back through its own ``load.py`` and its output
compared with the supernet's on ``example_input`` (:func:`export_bundle`), or with the given module's when a
stand-alone module trained on its own, e.g. a fine-tuned finalist, is exported (:func:`export_module`). The folder is written to a temporary sibling and renamed,
so a failed export leaves nothing behind, and an existing non-empty folder is only replaced with
``overwrite=True``, and only when it is itself a bundle (holds ``arch.json``): a mistyped path never deletes
unrelated files. Non-finite metric values are written as ``null``.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    from nasplat.architecture import Architecture
    from nasplat.space import SearchSpace
    from nasplat.supernet import Supernet

#: Absolute tolerance for every output comparison (bundle reload, ONNX vs PyTorch).
ATOL = 1e-4

#: Top-level modules a stand-alone model file may import besides the standard library.
ALLOWED_THIRD_PARTY = frozenset({"torch"})


@dataclass(frozen=True)
class ExportResult:
    """Where an export put each file (``onnx`` is None when ONNX export was not asked for)."""

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
"""Load this nasplat export bundle. Needs only torch and safetensors (never nasplat).

    import sys; sys.path.insert(0, "path/to/bundle")
    from load import load
    model = load()          # or load("path/to/bundle") from anywhere

Run ``python load.py [bundle_dir]`` for a one-line summary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def load(bundle_dir: str | Path | None = None) -> torch.nn.Module:
    """Build the network from model.py + config.json, load weights.safetensors (strict), eval mode."""
    root = Path(bundle_dir) if bundle_dir is not None else Path(__file__).resolve().parent
    root = root.resolve()
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
    model.load_state_dict(load_file(str(root / "weights.safetensors")), strict=True)
    return model.eval()


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
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

Load it with torch and safetensors only (nasplat is not needed):

```python
import sys; sys.path.insert(0, "path/to/this/folder")
from load import load
model = load()  # an nn.Module in eval mode; {input_hint}
```

Or run `python load.py` here for a one-line summary.{onnx_hint}

| file | content |
| --- | --- |
| `model.py` | the network's source (`build_model(config)`), torch and the standard library only |
| `config.json` | the configuration `build_model` takes |
| `weights.safetensors` | the weights (`load_state_dict(..., strict=True)`) |
| `arch.json` | space name, hash and declaration; the architecture's choices and string form |
| `metrics.json` | measured metrics and where they come from |
| `load.py` | the loader above |
{onnx_row}
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


def _reload_bundle(bundle: Path) -> nn.Module:
    """Load the bundle in-process through its own load.py (which needs no nasplat)."""
    tag = uuid.uuid4().hex[:12]
    loader = _import_by_path(bundle / "load.py", f"_bundle_check_load_{tag}")
    model: nn.Module = loader.load(bundle)
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


def _export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> tuple[bool, float]:
    """Write ``path`` and check it with onnxruntime; returns (dynamic batch?, max abs difference)."""
    import numpy as np
    import onnxruntime as ort

    input_names = _input_names(len(inputs))
    errors: list[str] = []
    dynamic = False
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
            break
        except Exception as exc:  # the exporter raises many kinds; report them all together
            errors.append(f"{'dynamic' if dynamic else 'fixed'} batch: {type(exc).__name__}: {exc}".splitlines()[0])
            path.unlink(missing_ok=True)
    else:
        raise NasplatError(f"ONNX export failed ({'; '.join(errors)})")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checks = [inputs]
    if dynamic and all(t.dim() for t in inputs):
        other = 1 if inputs[0].shape[0] != 1 else 2
        gen = torch.Generator().manual_seed(0)
        checks.append(tuple(torch.randn((other, *t.shape[1:]), generator=gen).to(t.dtype) for t in inputs))
    worst = 0.0
    for xs in checks:
        with torch.no_grad():
            expected = _flat_outputs(module(*xs))
        got = session.run(None, {n: np.ascontiguousarray(t.numpy()) for n, t in zip(input_names, xs, strict=True)})
        diff = _max_abs_diff(expected, [torch.from_numpy(np.asarray(g)) for g in got])
        if not diff <= ATOL:
            raise NasplatError(
                f"ONNX output differs from PyTorch's on a batch of {xs[0].shape[0] if xs[0].dim() else 1} "
                f"(max abs difference {diff:.3g} > {ATOL})"
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
) -> ExportResult:
    """Write the stand-alone bundle of ``arch`` (weights from ``supernet``) to ``out_dir``; see the module doc.

    ``example_input`` is one input batch (a tensor, or a tuple for multi-input networks) used to trace the
    ONNX graph and to check that the bundle reproduces the supernet's output. ``extras`` maps further file
    names to their text (a family's own scripts, e.g. a sampling script; see ``Family.bundle_extras``); they
    may not replace the bundle's own files.
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
        metrics=metrics, provenance=provenance, onnx=onnx, extras=extras,
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
) -> ExportResult:
    """Write the bundle of a stand-alone module of ``arch`` that was trained on its own (e.g. fine-tuned).

    Same bundle and checks as :func:`export_bundle`, except that the reference output the reloaded bundle
    (and the ONNX graph) must reproduce is ``module``'s own, in eval mode: its weights, not the supernet's,
    are what ships. ``module`` must follow the stand-alone module contract (``nasplat_config``, a
    ``build_model`` source file).
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
        metrics=metrics, provenance=provenance, onnx=onnx, extras=extras,
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
) -> ExportResult:
    """Write, check (reload against ``reference``, ONNX) and move the bundle of ``module`` into ``out``."""
    source, config = _module_source(module)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"), metadata={"format": "pt", "space": space.name})
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
        (tmp / "load.py").write_text(LOAD_PY, encoding="utf-8")
        for name, text in (extras or {}).items():
            target = tmp / name
            if target.exists() or Path(name).name != name or name in ("README.md", "model.onnx"):
                raise NasplatError(f"bundle extra '{name}' must be a new plain file name inside the bundle")
            target.write_text(text, encoding="utf-8")

        reloaded = _reload_bundle(tmp)
        with torch.no_grad():
            diff = _max_abs_diff(reference, _flat_outputs(reloaded(*inputs)))
        if not diff <= ATOL:
            raise NasplatError(
                f"the bundle's model (load.py) does not reproduce the {reference_name}'s output "
                f"(max abs difference {diff:.3g} > {ATOL})"
            )

        onnx_dynamic: bool | None = None
        onnx_diff: float | None = None
        if onnx:
            onnx_dynamic, onnx_diff = _export_onnx(module, inputs, tmp / "model.onnx")

        shape = "×".join(str(s) for s in inputs[0].shape[1:])
        onnx_inputs = _input_names(len(inputs))
        (tmp / "README.md").write_text(
            README_MD.format(
                title=f"{space.name}: {arch.digest}",
                space=space.name,
                space_hash=space.hash,
                version=__version__,
                string=string,
                input_hint=f"input: a float tensor of shape (batch, {shape})",
                onnx_hint=(
                    f"\n\n`model.onnx` runs in onnxruntime (inputs named {', '.join(f'`{n}`' for n in onnx_inputs)}; "
                    f"{'any batch size' if onnx_dynamic else f'batch size {inputs[0].shape[0]} only'})."
                    if onnx
                    else ""
                ),
                onnx_row="| `model.onnx` | the same network in ONNX |\n" if onnx else "",
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
    )
