"""Single-process supernet training (SPOS-style), checkpoints with exact resume, BN recalibration, subnet evaluation.

Every step trains the paths a :class:`SamplingStrategy` picks (``uniform``: one random path, as in SPOS) on one
batch, averaging their losses. All randomness is derived from ``TrainSettings.seed``: epoch ``e`` shuffles and
augments its data with a seed derived from ``(seed, e)``, paths come from a numpy Generator whose state is
checkpointed, and the task gets a torch Generator derived from ``(seed, step)``. So training 2 epochs straight
and training 1 epoch, stopping, and resuming give the same weights, bit for bit (on the same machine and
thread count; modules that draw from torch's global RNG, such as ``nn.Dropout``, break this guarantee).

Checkpoint layout (``run_dir/checkpoints/``)::

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
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from nasplat import registry, seeds
from nasplat.errors import NasplatError
from nasplat.seeds import derive_seed
from nasplat.supernet import Supernet
from nasplat.train_settings import TrainSettings

if TYPE_CHECKING:
    from nasplat.architecture import Architecture
    from nasplat.data import ArrayDataset
    from nasplat.space import SearchSpace
    from nasplat.task import Batch, Task

CHECKPOINT_FORMAT = 1
_SEED_TAG_DATA, _SEED_TAG_PATHS, _SEED_TAG_TASK, _SEED_TAG_PROGRESS = (
    seeds.TRAIN_DATA,
    seeds.TRAIN_PATHS,
    seeds.TASK,
    seeds.PROGRESS,
)


# Settings that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every_epochs", "progress_subnets", "progress_images"})


# --------------------------------------------------------------------------------------------------------------
# sampling strategies


class SamplingStrategy:
    """Which paths of the supernet are trained on a step (their losses are averaged).

    Strategies are registered with ``registry.register("strategy", NAME)`` and built as
    ``cls(space, **options)`` (options from ``TrainSettings.strategy_options``). :meth:`setup` hands them the
    supernet and task before training starts. ``distill = True`` makes the first path of every step the
    teacher of the others (in-place distillation through ``Task.distill_loss``). A strategy that keeps state
    between steps must return it from ``state_dict`` (JSON-able) and take it back in ``load_state_dict`` so
    that resumed runs are exact.
    """

    name: ClassVar[str] = ""
    distill: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.supernet: Supernet | None = None
        self.task: Task | None = None

    def setup(self, supernet: Supernet, task: Task) -> None:
        self.supernet, self.task = supernet, task

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@registry.register("strategy", "uniform")
class UniformStrategy(SamplingStrategy):
    """SPOS: one uniformly random path per step."""

    name: ClassVar[str] = "uniform"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [space.sample(rng)]


@registry.register("strategy", "sandwich")
class SandwichStrategy(SamplingStrategy):
    """The sandwich rule (BigNAS): the largest, the smallest and ``n_random`` random paths every step; the
    largest learns from the labels and teaches the others (in-place distillation). Largest and smallest come
    from the family (``Family.extremes``)."""

    name: ClassVar[str] = "sandwich"
    distill: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, n_random: int = 2) -> None:
        super().__init__(space)
        if n_random < 0:
            raise NasplatError(f"strategy 'sandwich': n_random must be >= 0, got {n_random}")
        self.n_random = int(n_random)
        self.largest, self.smallest = space.family.extremes(space)

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        return [self.largest, self.smallest, *(space.sample(rng) for _ in range(self.n_random))]


@registry.register("strategy", "fair")
class FairStrategy(SamplingStrategy):
    """Fair sampling (FairNAS): every step trains K paths such that each choice of every dimension is used
    exactly once (K = the largest choice count; dimensions with fewer choices repeat theirs in a shuffled
    cycle). A path that breaks a space constraint is replaced by a random valid one."""

    name: ClassVar[str] = "fair"

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        k = max(len(d.choices) for d in space.dimensions)
        columns = []
        for d in space.dimensions:
            n = len(d.choices)
            order = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k]
            columns.append([d.choices[int(i)] for i in order])
        out = []
        for i in range(k):
            choices = {d.label: col[i] for d, col in zip(space.dimensions, columns)}
            out.append(space.make(choices) if space.satisfies(choices) else space.sample(rng))
        return out


@registry.register("strategy", "attentive")
class AttentiveStrategy(SamplingStrategy):
    """Pareto-aware sampling (after AttentiveNAS): each step draws ``candidates`` random paths, scores them by a
    cost model's ``metric`` and by their loss on the step's batch (no gradients), and trains ``train_paths`` of
    those on the current (cost, loss) front, so training favours subnets near the accuracy/cost front. With
    ``with_extremes`` the family's largest and smallest paths are trained too (sandwich-style, no distillation
    unless ``distill`` is set)."""

    name: ClassVar[str] = "attentive"

    def __init__(
        self,
        space: SearchSpace,
        cost_model: str = "analytical",
        metric: str = "macs",
        device: str | None = None,
        candidates: int = 4,
        train_paths: int = 1,
        with_extremes: bool = False,
    ) -> None:
        super().__init__(space)
        if candidates < 1 or train_paths < 1:
            raise NasplatError("strategy 'attentive': candidates and train_paths must be >= 1")
        model = registry.get("cost_model", cost_model)()
        model.check_device(device)
        if metric not in model.metrics:
            raise NasplatError(
                f"strategy 'attentive': cost model '{cost_model}' has no metric '{metric}'; it has {list(model.metrics)}"
            )
        self.cost_model, self.metric, self.device = model, metric, device
        self.candidates, self.train_paths, self.with_extremes = int(candidates), int(train_paths), bool(with_extremes)
        self._costs: dict[str, float] = {}
        self.extremes = space.family.extremes(space) if with_extremes else ()

    def cost(self, arch: Architecture) -> float:
        if arch.key not in self._costs:
            self._costs[arch.key] = float(self.cost_model.estimate(self.space, arch, self.device)[self.metric])
        return self._costs[arch.key]

    def paths(
        self, space: SearchSpace, rng: np.random.Generator, step: int, batch: Batch | None = None
    ) -> list[Architecture]:
        if self.supernet is None or self.task is None or batch is None:
            raise NasplatError("strategy 'attentive' needs setup(supernet, task) and the step's batch")
        pool = list({a.key: a for a in (space.sample(rng) for _ in range(self.candidates))}.values())
        scores = []
        with torch.no_grad(), _frozen_bn(self.supernet):
            for arch in pool:
                with self.supernet.activate(arch):
                    scores.append((self.cost(arch), float(self.task.loss(self.supernet, batch, None))))
        front = [
            a
            for a, (c, v) in zip(pool, scores)
            if not any(c2 <= c and v2 <= v and (c2, v2) != (c, v) for c2, v2 in scores)
        ]
        picked = [front[int(i)] for i in rng.permutation(len(front))[: self.train_paths]]
        return [*self.extremes, *picked]


@contextmanager
def _frozen_bn(model: nn.Module) -> Iterator[None]:
    """Score paths without moving BatchNorm running statistics (train-mode normalisation, buffers restored)."""
    bns = _batch_norms([model])
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, state in zip(bns, saved):
                for k, v in state.items():
                    getattr(bn, k).copy_(v)


def make_strategy(name: str, space: SearchSpace, options: dict[str, Any] | None = None) -> SamplingStrategy:
    strategy = registry.build("strategy", name, space, options=options)
    if not isinstance(strategy, SamplingStrategy):
        raise NasplatError(f"strategy '{name}' is not a SamplingStrategy")
    return strategy


# --------------------------------------------------------------------------------------------------------------
# helpers


def lr_at(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``lr``, then cosine decay to 0 at the last step."""
    total = settings.epochs * steps_per_epoch
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * (step - warmup) / span))


def _make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov)


def _settings_json(settings: TrainSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class TrainResult:
    epochs_done: int
    checkpoint: Path
    history: tuple[dict[str, Any], ...]


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


class CorruptCheckpointError(NasplatError):
    """A checkpoint's files are damaged: content unlike the digests recorded when it was written, unreadable
    weights, NaN or infinite values. A resume falls back to an older checkpoint; every other load refuses it."""


#: The files of a checkpoint folder besides ``state.json``; ``state.json`` records their sha256 (``files``).
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt")
_CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})")


def _notice(message: str) -> None:
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


def _checkpoint_epoch(folder: Path) -> int:
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
    return sorted(found, key=_checkpoint_epoch, reverse=True)


def _latest_target(ckpt_root: Path) -> tuple[Path | None, str]:
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


def resolve_checkpoint(path: str | Path, *, log: Callable[[str], None] = _notice) -> Path:
    """A checkpoint folder from itself, a run folder or a ``checkpoints`` folder (via ``latest``).

    When ``latest`` is missing or names no complete checkpoint, the newest complete ``epoch-NNNN`` folder is
    used, and ``log`` gets one line saying so.
    """
    p = Path(path)
    if (p / "state.json").is_file():
        return p
    for root in (p / "checkpoints", p):
        target, problem = _latest_target(root)
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


def _read_state(ckpt: Path) -> dict[str, Any]:
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
    return _read_state(resolve_checkpoint(path))


def _check_space(state: dict[str, Any], space: SearchSpace, ckpt: Path) -> None:
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


def _read_weights(ckpt: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
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


def _apply_weights(model: nn.Module, tensors: dict[str, torch.Tensor], ckpt: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise NasplatError(f"{ckpt}: weights do not fit this supernet: {detail}") from None


def _read_optimizer(ckpt: Path, state: dict[str, Any]) -> dict[str, Any]:
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
    state = _read_state(ckpt)
    _check_space(state, supernet.space, ckpt)
    _apply_weights(supernet, _read_weights(ckpt, state), ckpt)
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


def set_aside(folder: Path, log: Callable[[str], None] = _notice) -> Path:
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


def _write_checkpoint(
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


def resume_newest(
    trainer: SupernetTrainer,
    ckpt_root: Path,
    *,
    extra: Sequence[Path] = (),
    log: Callable[[str], None] = _notice,
    repair_latest: bool = True,
) -> Path | None:
    """Restore ``trainer`` from the newest intact checkpoint in ``ckpt_root`` (or in ``extra``, first on a tie);
    ``None`` when there is none at all.

    A missing or dangling ``latest`` is no reason to start again: the newest complete folder is used (one line
    says so). A damaged checkpoint is skipped for the one before it (one line says so). When every checkpoint is
    damaged, a NasplatError: none is ever deleted or overwritten with a restart. With ``repair_latest``,
    ``latest`` is made to name the checkpoint resumed from.
    """
    named, problem = _latest_target(ckpt_root)
    seen = {p.resolve() for p in extra}
    candidates = list(extra) + [p for p in complete_checkpoints(ckpt_root) if p.resolve() not in seen]
    candidates.sort(key=_checkpoint_epoch, reverse=True)  # stable: `extra` first on a tie
    if not candidates:
        return None
    if named is None:
        log(f"{problem}; resuming from {candidates[0].name}, the newest complete checkpoint")
    for i, ckpt in enumerate(candidates):
        try:
            trainer.restore(ckpt)
        except CorruptCheckpointError as exc:
            if i + 1 == len(candidates):
                raise NasplatError(
                    f"{exc}; no older intact checkpoint in {ckpt_root} to resume from (move the folder away to "
                    "train from the start)"
                ) from None
            log(f"{exc}; resuming from {candidates[i + 1].name}, the checkpoint before it")
            continue
        if repair_latest and ckpt.resolve().parent == ckpt_root.resolve() and named != ckpt:
            point_latest(ckpt_root, ckpt.name)
        return ckpt
    return None


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


# --------------------------------------------------------------------------------------------------------------
# training


#: Seconds between progress lines when output is not a terminal (a log file, a pipe, CI).
HEARTBEAT_S = 30.0


class LineProgress:
    """Progress for output that is not a terminal: a line per task at most every ``interval_s`` seconds and
    one when it completes, instead of bars that only appear (all at once) when the run ends."""

    def __init__(self, interval_s: float = HEARTBEAT_S, write: Callable[[str], None] | None = None) -> None:
        self.interval_s = interval_s
        self._write = write or (lambda line: print(line, flush=True))
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, **fields: Any) -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = {"description": description, "total": total, "start": time.monotonic(), "last": 0.0}
        return task_id

    def update(self, task_id: int, completed: int, **fields: Any) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        done = completed >= task["total"]
        if not done and now - (task["last"] or task["start"]) < self.interval_s:
            return
        task["last"] = now
        elapsed = now - task["start"]
        extra = "".join(f" · {k} {v:.4g}" for k, v in fields.items() if isinstance(v, (int, float)))
        self._write(f"{task['description']}: {completed}/{task['total']} steps{extra} · {elapsed:.0f} s")


def _progress_bar(enabled: bool) -> Any:
    import sys
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    if not sys.stdout.isatty():
        return LineProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} steps/s"),
        TimeElapsedColumn(),
    )


class PathsLoss(nn.Module):
    """One training step's loss over several paths as a single forward pass.

    Wrapping the step in one module call is what lets DistributedDataParallel (one forward per backward) train
    several paths per step, and lets it synchronise the gradients of weights a worker's paths did not touch
    (``find_unused_parameters``: they count as zero on that worker). With ``distill`` the first path's output
    teaches the others.
    """

    def __init__(self, supernet: Supernet, task: Task) -> None:
        super().__init__()
        self.supernet = supernet
        self.task = task

    def forward(  # type: ignore[override]
        self, batch: Batch, archs: list[Architecture], generator: torch.Generator | None, distill: bool
    ) -> tuple[torch.Tensor, list[float]]:
        total: torch.Tensor | None = None
        teacher: torch.Tensor | None = None
        losses: list[float] = []
        for i, arch in enumerate(archs):
            with self.supernet.activate(arch):
                if distill and i == 0:
                    loss, out = self.task.loss_and_output(self.supernet, batch, generator)
                    teacher = None if out is None else out.detach()
                elif distill and teacher is not None:
                    loss = self.task.distill_loss(self.supernet, batch, teacher, generator)
                else:
                    loss = self.task.loss(self.supernet, batch, generator)
            losses.append(float(loss.detach()))
            total = loss if total is None else total + loss
        assert total is not None
        return total / len(archs), losses


class SupernetTrainer:
    """The training state of one process (one worker of ``world`` when distributed) and its epoch loop.

    Used as is by :func:`train_supernet` (one process) and by every Ray Train worker
    (:mod:`nasplat.distributed_train`), so both train, checkpoint and resume the same way. Worker ``rank`` reads
    its own slice of every global batch (``batch_size`` images per worker) and samples its own paths from a
    generator seeded by ``(seed, rank)``; the learning rate is scaled by ``world`` under ``lr_scaling: linear``.
    """

    def __init__(
        self,
        supernet: Supernet,
        task: Task,
        train_data: ArrayDataset,
        settings: TrainSettings,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.supernet, self.task, self.data, self.settings = supernet, task, train_data, settings
        self.rank, self.world = rank, world
        self.space = supernet.space
        self.strategy = make_strategy(settings.strategy, self.space, settings.strategy_options)
        self.strategy.setup(supernet, task)
        global_batch = settings.batch_size * world
        steps = len(train_data) // global_batch
        if steps == 0:
            raise NasplatError(
                f"dataset '{train_data.name}' has {len(train_data)} images, fewer than one global batch of "
                f"{global_batch} ({settings.batch_size} x {world} workers)"
            )
        if settings.max_steps_per_epoch is not None:
            steps = min(steps, settings.max_steps_per_epoch)
        self.steps_per_epoch = steps
        if settings.augment:
            from nasplat.data import check_augmentable

            check_augmentable(train_data)
        self.optimizer = _make_optimizer(supernet, settings)
        self.lr_scale = float(world) if settings.lr_scaling == "linear" else 1.0
        # rank 0 of a distributed run draws the same paths as a single-process run of the same seed
        self.path_rng = np.random.default_rng(derive_seed(settings.seed, _SEED_TAG_PATHS, rank))
        self.epochs_done, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.first_paths: list[str] = []  # the paths of the last epoch's first step (a record of what was sampled)
        self.data_info: dict[str, Any] = {
            "name": train_data.name,
            "n_images": len(train_data),
            "input_shape": list(train_data.input_shape),
            "num_classes": train_data.num_classes,
        }

    # state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epochs_done": self.epochs_done,
            "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "path_rng": self.path_rng.bit_generator.state,
            "strategy_state": self.strategy.state_dict(),
            "settings": _settings_json(self.settings),
            "space_name": self.space.name,
            "space_hash": self.space.hash,
            "data": self.data_info,
            "world": self.world,
            "history": self.history,
        }

    def restore(self, checkpoint: Path) -> None:
        """Continue from ``checkpoint`` (same space, data, settings and worker count).

        Every file of the checkpoint is checked before anything is restored: a damaged one raises a
        :class:`CorruptCheckpointError` and leaves this trainer as it was.
        """
        state = _read_state(checkpoint)
        _check_space(state, self.space, checkpoint)
        saved = state.get("settings", {})
        now = _settings_json(self.settings)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise NasplatError(f"{checkpoint}: cannot resume with different settings ({diffs}); use a new run folder")
        saved_data = state.get("data") or {}
        # checkpoints written before the data's shape and classes were recorded compare on name and size
        compared = ("name", "n_images", *(k for k in ("input_shape", "num_classes") if k in saved_data))
        if any(saved_data.get(k) != self.data_info[k] for k in compared):
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('data')}, not {self.data_info}; use a new run folder"
            )
        if int(state.get("world", 1)) != self.world:
            raise NasplatError(
                f"{checkpoint}: trained on {state.get('world', 1)} worker(s), not {self.world}; resume with the same "
                "number of workers or use a new run folder"
            )
        tensors = _read_weights(checkpoint, state)
        opt_state = _read_optimizer(checkpoint, state)
        _apply_weights(self.supernet, tensors, checkpoint)
        try:
            self.optimizer.load_state_dict(opt_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise NasplatError(f"{checkpoint / 'optimizer.pt'}: cannot restore optimizer ({exc})") from None
        rng_state = state["path_rng"]
        if self.rank != 0:  # every worker's own generator, saved by rank 0 in "worker_rngs"
            rng_state = state.get("worker_rngs", {}).get(str(self.rank), rng_state)
        self.path_rng.bit_generator.state = rng_state
        self.strategy.load_state_dict(state.get("strategy_state", {}))
        self.epochs_done, self.step = int(state["epochs_done"]), int(state["steps"])
        self.history = [dict(h) for h in state.get("history", [])]

    def save(self, run_dir: Path, extra_state: dict[str, Any] | None = None) -> Path:
        return _write_checkpoint(
            run_dir, self.epochs_done, self.supernet, self.optimizer, {**self.state(), **(extra_state or {})}
        )

    def should_checkpoint(self) -> bool:
        done = self.epochs_done
        return done % self.settings.checkpoint_every_epochs == 0 or done == self.settings.epochs

    # training ------------------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This worker's slices of epoch ``epoch``'s global batches (the same shuffle on every worker)."""
        s = self.settings
        per = s.batch_size
        for x, y in self.data.batches(
            per * self.world,
            seed=derive_seed(s.seed, _SEED_TAG_DATA, epoch),
            shuffle=True,
            augment=s.augment,
            drop_last=True,
        ):
            yield x[self.rank * per : (self.rank + 1) * per], y[self.rank * per : (self.rank + 1) * per]

    def run_epoch(
        self,
        step_module: nn.Module,
        *,
        device: torch.device | None = None,
        on_step: Callable[[int, float, float], None] | None = None,
    ) -> dict[str, Any]:
        """Train one epoch through ``step_module`` (a :class:`PathsLoss`, or DDP around one); return its record."""
        s = self.settings
        epoch = self.epochs_done
        params = [p for p in self.supernet.parameters() if p.requires_grad]
        autocast_device = (device or torch.device("cpu")).type
        t0 = time.perf_counter()
        loss_sum, n_steps, n_images, n_paths = 0.0, 0, 0, 0
        self.supernet.train()
        for x_cpu, y_cpu in self.epoch_batches(epoch):
            if n_steps >= self.steps_per_epoch:
                break
            batch: Batch = (x_cpu, y_cpu)
            if device is not None and device.type != "cpu":
                batch = (x_cpu.to(device, non_blocking=True), y_cpu.to(device, non_blocking=True))
            lr = lr_at(s, self.step, self.steps_per_epoch) * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            archs = self.strategy.paths(self.space, self.path_rng, self.step, batch)
            if n_steps == 0:
                self.first_paths = [a.key for a in archs]
            gen = torch.Generator().manual_seed(derive_seed(s.seed, _SEED_TAG_TASK, self.step * 1_000 + self.rank))
            with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                loss, path_losses = step_module(batch, archs, gen, self.strategy.distill)
            if not torch.isfinite(loss):
                raise NasplatError(f"training diverged: loss {float(loss)} at epoch {epoch + 1}, step {self.step}")
            loss.backward()
            if s.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip_norm)
            self.optimizer.step()
            self.step += 1
            n_steps += 1
            n_paths += len(archs)
            n_images += int(batch[0].shape[0])
            loss_sum += sum(path_losses) / len(path_losses)
            if on_step is not None:
                on_step(n_steps, loss_sum / n_steps, n_steps / max(time.perf_counter() - t0, 1e-9))
        seconds = time.perf_counter() - t0
        self.epochs_done = epoch + 1
        return {
            "epoch": epoch + 1,
            "loss": loss_sum / max(n_steps, 1),
            "seconds": seconds,
            "images_per_s": n_images / max(seconds, 1e-9),
            "paths_per_step": n_paths / max(n_steps, 1),
            "steps": n_steps,
            "lr": lr_at(s, self.step - 1, self.steps_per_epoch) * self.lr_scale,
        }

    def progress_eval(self, eval_data: ArrayDataset | None) -> dict[str, float]:
        """Mean metrics of ``progress_subnets`` fixed random subnets (BN recalibrated) on a validation slice."""
        s = self.settings
        if eval_data is None or s.progress_subnets == 0:
            return {}
        rng = np.random.default_rng(derive_seed(s.seed, _SEED_TAG_PROGRESS))
        archs = [self.space.sample(rng) for _ in range(s.progress_subnets)]
        subset = eval_data.subset(range(min(s.progress_images, len(eval_data))))
        rows = [
            evaluate_subnet(
                self.supernet, a, self.task, subset, self.data, batch_size=256, calib_batches=4, seed=s.seed
            )
            for a in archs
        ]
        self.supernet.train()
        return {f"subnet_{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}


def progress_line(settings: TrainSettings, record: dict[str, Any]) -> str:
    """One line per epoch: loss, sampled-subnet metrics (when measured) and throughput."""
    extra = "".join(f" · {k.removeprefix('subnet_')} {v:.2f}" for k, v in record.items() if k.startswith("subnet_"))
    workers = record.get("workers", 1)
    return (
        f"epoch {record['epoch']}/{settings.epochs} · loss {record['loss']:.4f}{extra} · "
        f"{record['images_per_s']:.0f} img/s"
        + (f" on {workers} workers" if workers != 1 else "")
        + f" · {record['seconds']:.1f} s"
    )


def train_supernet(
    supernet: Supernet,
    task: Task,
    train_data: ArrayDataset,
    settings: TrainSettings,
    run_dir: str | Path,
    *,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    eval_data: ArrayDataset | None = None,
) -> TrainResult:
    """Train ``supernet`` on ``train_data`` in this process, checkpointing into ``run_dir``; resume if it holds
    a checkpoint.

    Resuming needs the same space (hash), dataset size and settings (only ``checkpoint_every_epochs`` and the
    progress options may change); the run then continues after the newest intact checkpoint's epoch (see
    :func:`resume_newest`: a missing ``latest`` or a damaged checkpoint is no reason to start again) and ends
    with the same weights as an uninterrupted run. ``on_epoch`` gets each epoch's record (epoch, loss, seconds,
    images_per_s, steps, lr and, with ``eval_data`` and ``progress_subnets``, ``subnet_<metric>``).
    For several workers or machines, see :func:`nasplat.distributed_train.train_supernet_ray`.
    """
    run_dir = Path(run_dir)
    trainer = SupernetTrainer(supernet, task, train_data, settings)
    checkpoint = resume_newest(trainer, checkpoints_dir(run_dir))
    step_module = PathsLoss(supernet, task)
    with _progress_bar(progress) as bar:
        while trainer.epochs_done < settings.epochs:
            on_step = None
            if bar is not None:
                task_id = bar.add_task(
                    f"epoch {trainer.epochs_done + 1}/{settings.epochs}",
                    total=trainer.steps_per_epoch,
                    loss=0.0,
                    rate=0.0,
                )

                def on_step(n: int, loss: float, rate: float, _id: Any = task_id) -> None:
                    bar.update(_id, completed=n, loss=loss, rate=rate)

            record = trainer.run_epoch(step_module, on_step=on_step)
            record.update(trainer.progress_eval(eval_data))
            trainer.history.append(record)
            if trainer.should_checkpoint():
                checkpoint = trainer.save(run_dir)
            if on_epoch is not None:
                on_epoch(dict(record))
    assert checkpoint is not None  # the last epoch always checkpoints
    return TrainResult(epochs_done=settings.epochs, checkpoint=checkpoint, history=tuple(trainer.history))


# --------------------------------------------------------------------------------------------------------------
# batch-norm recalibration and subnet evaluation


def _batch_norms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    seen: set[int] = set()
    out = []
    for top in modules:
        for m in top.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


def _default_forward(model: nn.Module, batch: Batch) -> Any:
    return model(batch[0])


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Batch],
    n_batches: int,
    *,
    arch: Architecture | None = None,
    forward: Callable[[nn.Module, Batch], Any] | None = None,
) -> int:
    """Re-estimate BatchNorm running statistics from ``n_batches`` batches; returns the batches used.

    Resets every BatchNorm of ``model`` (or, with ``arch`` and a Supernet, those in
    ``model.path_modules(arch)``, running with ``arch`` active), then runs forward passes in train mode without
    gradients with ``momentum=None`` (a cumulative average over the batches), restores each BN's momentum and
    leaves the model in eval mode. ``forward(model, batch)`` defaults to ``model(batch[0])``.
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if arch is not None:
        if not isinstance(model, Supernet):
            raise TypeError("recalibrate_bn: 'arch' needs a Supernet")
        bns = _batch_norms(model.path_modules(arch))
    else:
        bns = _batch_norms([model])
    run = forward or _default_forward
    momenta = [bn.momentum for bn in bns]
    used = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            if arch is not None:
                assert isinstance(model, Supernet)
                with model.activate(arch):
                    used = _run_batches(model, batches, n_batches, run)
            else:
                used = _run_batches(model, batches, n_batches, run)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()
    if used == 0:
        raise NasplatError("BN recalibration got no batches")
    return used


def _run_batches(model: nn.Module, batches: Iterable[Batch], n_batches: int, run: Callable[..., Any]) -> int:
    used = 0
    for batch in batches:
        if used >= n_batches:
            break
        run(model, batch)
        used += 1
    return used


def evaluate_subnet(
    supernet: Supernet,
    arch: Architecture,
    task: Task,
    eval_data: ArrayDataset,
    calib_data: ArrayDataset,
    *,
    batch_size: int = 256,
    calib_batches: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics of ``arch`` inheriting the supernet's weights, after BN recalibration on ``calib_data``.

    Recalibration uses ``calib_batches`` shuffled batches of ``calib_data`` (seeded by ``seed``, no
    augmentation; 0 keeps the stored statistics). The supernet is left as it was found: the running statistics
    of the path's BatchNorms are saved before and restored after, so evaluations do not depend on each other's
    order, and the train/eval mode is restored.
    """
    bns = _batch_norms(supernet.path_modules(arch))
    saved = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in bns]
    modes = {m: m.training for m in supernet.modules()}
    from nasplat.inherit import Calibration, recalibrate_path

    try:
        recalibrate_path(supernet, arch, task, calib_data, Calibration(calib_batches, batch_size, seed))
        supernet.eval()
        with supernet.activate(arch):
            return task.evaluate(supernet, eval_data.batches(batch_size, seed=None, shuffle=False))
    finally:
        with torch.no_grad():
            for bn, state in zip(bns, saved):
                for k, v in state.items():
                    getattr(bn, k).copy_(v)
        for m, training in modes.items():
            m.training = training
