"""The checkpoint format: layout (``run_dir/checkpoints/``)::

    epoch-0001/model.safetensors   supernet state_dict (weights and BN buffers)
    epoch-0001/optimizer.pt        optimizer state_dict (torch.save; read back with weights_only=True)
    epoch-0001/state.json          epochs done, steps, path-RNG state, settings, space name and hash, the
                                   data trained on (name, size, input shape, classes), history, and digests:
                                   sha256 of the two other files, of the weights in memory, of itself
    latest                         text file naming the newest complete checkpoint folder

A checkpoint folder is written under a temporary name and renamed into place, then ``latest`` is replaced
atomically, so a crash never leaves ``latest`` pointing at a partial checkpoint. Every load checks the digests
(checkpoints written before they were recorded load without) and refuses NaN or infinite weights, naming the
file; a resume then falls back to the checkpoint before, and a missing ``latest`` makes it use the newest
complete folder, saying so: a checkpoint holding finished epochs is never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

from ._supernet import Supernet

if TYPE_CHECKING:
    from nasplat.datasets import ArrayDataset
    from nasplat.space import SearchSpace


CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


class CorruptCheckpointError(NasplatError):
    """A checkpoint's files are damaged: content unlike the digests recorded when it was written, unreadable
    weights, NaN or infinite values. A resume falls back to an older checkpoint; every other load refuses it."""


#: The files of a checkpoint folder besides ``state.json``; ``state.json`` records their sha256 (``files``).
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt")
_CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})")


def notice(message: str) -> None:
    """One line telling the user about a recovery (on stderr: it is not the command's output)."""
    print(message, file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """A digest of named tensors (names and raw bytes, in name order): equal exactly for bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _state_digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of a checkpoint (their content is checked when it is read)."""
    return all((folder / name).is_file() for name in ("state.json", *CHECKPOINT_FILES))


def checkpoint_epoch(folder: Path) -> int:
    m = _CHECKPOINT_NAME.fullmatch(folder.name)
    if m is not None:
        return int(m.group(1))
    try:
        return int(json.loads((folder / "state.json").read_text()).get("epochs_done", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return -1


def complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """The complete checkpoint folders (``epoch-NNNN``) in ``ckpt_root``, newest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and _complete(p)]
    return sorted(found, key=checkpoint_epoch, reverse=True)


def latest_target(ckpt_root: Path) -> tuple[Path | None, str]:
    """The complete checkpoint folder ``ckpt_root/latest`` names, or ``None`` and what is wrong with it."""
    latest = ckpt_root / "latest"
    if latest.is_symlink() and not latest.exists():
        return None, f"{latest} points nowhere"
    if latest.is_dir():  # a link to the folder
        target = latest.resolve()
    elif not latest.is_file():
        return None, f"{latest} is missing"
    else:
        try:
            name = latest.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None, f"{latest} is unreadable"
        if not name:
            return None, f"{latest} is empty"
        target = ckpt_root / name
    if not _complete(target):
        return None, f"{latest} names {target.name}, which is not a complete checkpoint"
    return target, ""


def resolve_checkpoint(path: str | Path, *, log: Callable[[str], None] = notice) -> Path:
    """A checkpoint folder from itself, a run folder or a ``checkpoints`` folder (via ``latest``).

    When ``latest`` is missing or names no complete checkpoint, the newest complete ``epoch-NNNN`` folder is
    used, and ``log`` gets one line saying so.
    """
    p = Path(path)
    if (p / "state.json").is_file():
        return p
    for root in (p / "checkpoints", p):
        target, problem = latest_target(root)
        if target is not None:
            return target
        found = complete_checkpoints(root)
        if found:
            log(f"{problem}; using {found[0].name}, the newest complete checkpoint in {root}")
            return found[0]
        latest = root / "latest"
        if latest.is_file() or latest.is_symlink():
            raise NasplatError(f"{problem}, and {root} holds no other complete checkpoint")
    raise NasplatError(f"{p}: no checkpoint here (expected state.json, or checkpoints/latest in a run folder)")


def read_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "state.json"
    try:
        state = json.loads(path.read_text())
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint state ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{path}: damaged checkpoint state, not valid JSON ({exc})") from None
    if isinstance(state, dict) and "state_sha256" in state:
        recorded = state.pop("state_sha256")
        if _state_digest(state) != recorded:
            raise CorruptCheckpointError(
                f"{path}: content does not match the digest recorded when it was written "
                f"(expected sha256 {str(recorded)[:16]}); the file is damaged or was edited"
            )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NasplatError(f"{path}: not a nasplat checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` content of the checkpoint at ``path`` (resolved as :func:`resolve_checkpoint` does),
    checked against its recorded digest."""
    return read_state(resolve_checkpoint(path))


def check_checkpoint_space(state: dict[str, Any], space: SearchSpace, ckpt: Path) -> None:
    if state.get("space_hash") != space.hash:
        raise NasplatError(
            f"{ckpt}: checkpoint is of space '{state.get('space_name')}' (hash {state.get('space_hash')}), "
            f"not '{space.name}' (hash {space.hash}); use the same space file or a new run folder"
        )


def _shape_text(shape: Any) -> str:
    return "x".join(map(str, shape)) if isinstance(shape, (list, tuple)) else "unknown shape"


def check_checkpoint_data(state: dict[str, Any], ckpt: Path, space: SearchSpace, data: ArrayDataset) -> None:
    """The images the checkpoint's supernet was trained on must have ``data``'s input shape and class count.

    The checkpoint's ``data`` record says what it was trained on; a checkpoint written before it recorded
    them is taken to have the shape and classes its space declares (``macro.input_shape``/``num_classes``).
    """
    saved = state.get("data") or {}
    shape = saved.get("input_shape", getattr(space.macro, "input_shape", None))
    classes = saved.get("num_classes", getattr(space.macro, "num_classes", None))
    shape_differs = shape is not None and tuple(shape) != tuple(data.input_shape)
    classes_differ = classes is not None and int(classes) != data.num_classes
    if shape_differs or classes_differ:
        name = saved.get("name", "unknown data")
        raise NasplatError(
            f"{ckpt}: supernet trained on '{name}' ({_shape_text(shape)} images, {classes} classes) cannot "
            f"evaluate '{data.name}' ({_shape_text(data.input_shape)} images, {data.num_classes} classes); "
            f"evaluate on the data it was trained on, or use a checkpoint trained on '{data.name}'"
        )


def _verify_file(ckpt: Path, state: dict[str, Any], name: str) -> Path:
    """``ckpt/name``, checked against the sha256 ``state.json`` recorded (checkpoints older than that: not)."""
    path = ckpt / name
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing from the checkpoint")
    expected = (state.get("files") or {}).get(name)
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise CorruptCheckpointError(
                f"{path}: content does not match the digest recorded when it was written "
                f"(sha256 {actual[:16]}, expected {str(expected)[:16]}); the file is damaged"
            )
    return path


def _recorded_weights_digest(state: dict[str, Any]) -> str | None:
    """The weights digest the checkpoint recorded: its own, or (Ray Train checkpoints written before it had
    one) the replica digest of its last epoch."""
    if state.get("weights_digest"):
        return str(state["weights_digest"])
    history = state.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    if last.get("replica_digest") and last.get("epoch") == state.get("epochs_done"):
        return str(last["replica_digest"])
    return None


def read_weights(ckpt: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, verified: file digest, readable, finite, and the recorded weights digest."""
    from safetensors.torch import load_file

    path = _verify_file(ckpt, state, "model.safetensors")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptCheckpointError(f"{path}: cannot read weights ({detail})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CorruptCheckpointError(
                f"{path}: tensor '{name}' holds NaN or infinite values; expected finite weights"
            )
    expected = _recorded_weights_digest(state)
    if expected is not None and tensors_digest(tensors) != expected:
        raise CorruptCheckpointError(
            f"{path}: weights differ from the ones checkpointed (weights digest {tensors_digest(tensors)}, "
            f"expected {expected}); the file is damaged"
        )
    return tensors


def apply_weights(model: nn.Module, tensors: dict[str, torch.Tensor], ckpt: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise NasplatError(f"{ckpt}: weights do not fit this supernet: {detail}") from None


def read_optimizer(ckpt: Path, state: dict[str, Any]) -> dict[str, Any]:
    path = _verify_file(ckpt, state, "optimizer.pt")
    try:
        opt_state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling errors of a damaged file come in many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptCheckpointError(f"{path}: cannot read optimizer state ({detail})") from None
    if not isinstance(opt_state, dict):
        raise CorruptCheckpointError(f"{path}: not an optimizer state (expected a state_dict)")
    return opt_state


def load_checkpoint(supernet: Supernet, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights into ``supernet`` (strictly) and return its ``state.json`` content.

    ``path`` is a checkpoint folder or a run folder (its latest checkpoint). The checkpoint must be of the
    supernet's space (same hash), and intact: its files as their recorded digests say (checkpoints written
    before digests were recorded are read without), its weights finite. Otherwise a NasplatError names the file.
    """
    ckpt = resolve_checkpoint(path)
    state = read_state(ckpt)
    check_checkpoint_space(state, supernet.space, ckpt)
    apply_weights(supernet, read_weights(ckpt, state), ckpt)
    return state


def write_checkpoint_files(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """The files of one checkpoint (weights, optimizer state, state.json) into an existing empty ``folder``.

    ``state.json`` gets the sha256 of the other files (``files``), a digest of the weights as they were in
    memory (``weights_digest``) and a digest of its own content (``state_sha256``): every load checks them.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "nasplat-supernet"})
    (folder / "model.safetensors").chmod(0o644)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    record: dict[str, Any] = json.loads(json.dumps(state))  # as it will read back (tuples as lists, ...)
    record["files"] = {name: file_sha256(folder / name) for name in CHECKPOINT_FILES}
    record["weights_digest"] = tensors_digest(tensors)
    record["state_sha256"] = _state_digest(record)
    (folder / "state.json").write_text(json.dumps(record, indent=1))


def point_latest(ckpt_root: Path, name: str) -> None:
    """Make ``ckpt_root/latest`` name checkpoint folder ``name`` (atomically)."""
    fd, latest_tmp = tempfile.mkstemp(dir=ckpt_root, prefix=".latest-")
    with os.fdopen(fd, "w") as fh:
        fh.write(name + "\n")
    os.chmod(latest_tmp, 0o644)
    os.replace(latest_tmp, ckpt_root / "latest")


def set_aside(folder: Path, log: Callable[[str], None] = notice) -> Path:
    """Rename a checkpoint folder that is about to be written again (left damaged or incomplete) to
    ``<name>.damaged[-N]`` instead of deleting it; returns the new path."""
    aside = folder.with_name(f"{folder.name}.damaged")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.damaged-{n}")
    os.rename(folder, aside)
    log(f"{folder}: written again; the folder that was there is kept as {aside.name}")
    return aside


def write_checkpoint(
    run_dir: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    ckpt_root = checkpoints_dir(run_dir)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(epoch)
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".tmp-{final.name}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        write_checkpoint_files(tmp, model, optimizer, state)
        if final.exists():  # one a resume found damaged (an intact one would have been resumed from)
            set_aside(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_latest(ckpt_root, final.name)
    return final


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"
