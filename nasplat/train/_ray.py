"""Supernet training on Ray Train workers (``TorchTrainer`` + DistributedDataParallel).

Every worker runs the same :class:`~nasplat.train.SupernetTrainer` loop as a single-process run: it reads
its own slice of each global batch and samples its own paths (seeded by ``(seed, rank)``); one step's paths are
one forward pass of :class:`~nasplat.train.PathsLoss` wrapped in DDP with ``find_unused_parameters``, so the
gradients of weights that only some workers' paths touched are averaged correctly (zero where untouched) and
every replica takes the same optimizer step. Backend: gloo on CPU, NCCL on GPU (Ray Train picks it).

After every epoch the workers compare a digest of their weights (a run whose replicas drift stops with an
error), rank 0 writes the checkpoint (nasplat's format) and reports it to Ray Train, which persists it as
``run_dir/checkpoints/epoch-NNNN`` (storage path ``run_dir``, run name ``checkpoints``), then rank 0 points
``checkpoints/latest`` at it. A worker that dies makes Ray Train restart the worker group (``max_failures``
times), and the new workers continue from the last reported checkpoint; a new driver on the same run folder
continues from it too. So no finished epoch is ever lost, and the result equals an uninterrupted run's.

Progress: rank 0 prints one line per epoch and, given a study storage, records the epoch as a study user
attribute ``supernet:epoch:NNNN`` (plus ``supernet:checkpoint``) for the dashboards.

Multi-machine runs need ``run_dir`` (and a SQLite storage, if used) on storage every node can reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nasplat.errors import NasplatError

from ._trainer import TrainResult

#: Ray Train run name inside the run folder: its checkpoints land in ``run_dir/checkpoints``.
RAY_RUN_NAME = "checkpoints"


def _abs_sqlite(url: str | None) -> str | None:
    """SQLite URLs with relative paths made absolute (Ray workers do not share the driver's directory)."""
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url[len("sqlite:///") :]).resolve())
    return url


def worker_threads(ray: Any, workers: int) -> int:
    """CPU threads (and Ray CPUs) per worker: the cluster's CPUs shared out, but never more than one node has,
    since a worker runs on one node (a cluster of 1-CPU nodes gets 1-thread workers, not a request no node can
    ever meet). On a local cluster, the one node is this machine."""
    nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    total = sum(nodes) or float(os.cpu_count() or 1)
    largest = max(nodes, default=0.0) or total
    return max(1, int(min(total // workers, largest)))


def weights_digest(model: Any) -> str:
    """A digest of every parameter and buffer (replicas must agree on it bit for bit); the checkpoint records
    the same digest of its weights (``weights_digest``), and every load checks it."""
    from nasplat.model import tensors_digest

    return tensors_digest(model.state_dict())


def _worker_loop(config: dict[str, Any]) -> None:  # runs on every Ray Train worker
    import ray.train
    import torch
    import torch.distributed as dist

    from nasplat.datasets import DataSpec, load_splits
    from nasplat.model import checkpoint_name, checkpoints_dir, point_latest, set_aside, write_checkpoint_files
    from nasplat.space import space_from_record

    from ._settings import TrainSettings
    from ._trainer import PathsLoss, SupernetTrainer, progress_line, resume_newest

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(config["threads"]))
    run_dir = Path(config["run_dir"])
    pid_dir = run_dir / "workers"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank-{rank}.pid").write_text(str(os.getpid()))

    space = space_from_record(config["space_record"])
    settings = TrainSettings.model_validate(config["settings"])
    data = DataSpec.model_validate(config["data"])
    train, val = load_splits(data)
    supernet = space.family.build_supernet(space, seed=settings.seed)
    task = space.family.task(space)
    device = ray.train.torch.get_device()
    supernet.to(device)
    trainer = SupernetTrainer(supernet, task, train, settings, rank=rank, world=world)

    # Ray's own record of the last checkpoint and the run folder's `latest` can differ by one epoch when the
    # driver was killed between the two being written: resume from the newest intact checkpoint of either
    # (Ray's first on a tie); a missing `latest` or a damaged checkpoint falls back, saying so (rank 0)
    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    resumed_from = None
    ray_ckpt = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        ray_dirs = [Path(stack.enter_context(ray_ckpt.as_directory()))] if ray_ckpt is not None else []
        newest = resume_newest(trainer, checkpoints_dir(run_dir), extra=ray_dirs, log=log, repair_latest=rank == 0)
        if newest is not None:
            resumed_from = newest.name
    if resumed_from and rank == 0:
        print(f"resumed from {resumed_from} (epoch {trainer.epochs_done}, step {trainer.step})", flush=True)
    nodes: list[Any] = [None] * world  # where the group landed, in one line (a cluster spreads it over nodes)
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    log(f"Ray Train: {world} worker(s) on {len(set(nodes))} node(s)")

    step_module = ray.train.torch.prepare_model(
        PathsLoss(supernet, task),
        move_to_device=False,
        parallel_strategy_kwargs={"find_unused_parameters": True},
    )
    recorder = _StudyRecorder(config) if rank == 0 and config.get("storage") else None
    if recorder is not None and resumed_from:  # rows a kill kept from the study (after the checkpoint was written)
        recorder.epochs(trainer.history, checkpoints_dir(run_dir) / resumed_from)
    while trainer.epochs_done < settings.epochs:
        record = trainer.run_epoch(step_module, device=device)
        # DDP syncs BatchNorm statistics from rank 0 before each forward; after the epoch's last forward every
        # worker holds its own, so take rank 0's again before the replicas are compared and checkpointed
        for buffer in supernet.buffers():
            dist.broadcast(buffer, src=0)
        digest = weights_digest(supernet)
        digests: list[Any] = [None] * world
        dist.all_gather_object(digests, digest)
        rng_states: list[Any] = [None] * world
        dist.all_gather_object(rng_states, trainer.path_rng.bit_generator.state)
        losses: list[Any] = [None] * world
        dist.all_gather_object(losses, record["loss"])
        paths_seen: list[Any] = [None] * world
        dist.all_gather_object(paths_seen, trainer.first_paths)
        if len(set(digests)) != 1:
            raise NasplatError(f"supernet replicas differ after epoch {record['epoch']}: digests {digests}")
        record.update(
            {
                "workers": world,
                "loss": sum(losses) / world,
                "images_per_s": record["images_per_s"] * world,
                "replica_digest": digest,
                "worker_paths_differ": len({tuple(p) for p in paths_seen}) == world,
            }
        )
        if rank == 0:
            record.update(trainer.progress_eval(val))
        trainer.history.append(record)
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
        if trainer.should_checkpoint():
            extra = {"worker_rngs": {str(r): s for r, s in enumerate(rng_states)}}
            tmp = Path(tempfile.mkdtemp(prefix="nasplat-ckpt-"))
            try:
                if rank == 0:
                    write_checkpoint_files(tmp, supernet, trainer.optimizer, {**trainer.state(), **extra})
                    target = checkpoints_dir(run_dir) / checkpoint_name(trainer.epochs_done)
                    if target.exists():  # one the resume found damaged: kept, never overwritten
                        set_aside(target, log)
                    checkpoint = ray.train.Checkpoint.from_directory(str(tmp))
                    ray.train.report(
                        metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(trainer.epochs_done)
                    )
                    point_latest(checkpoints_dir(run_dir), checkpoint_name(trainer.epochs_done))
                else:
                    ray.train.report(metrics)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            ray.train.report(metrics)
        if rank == 0:
            print(progress_line(settings, record), flush=True)
            if recorder is not None:
                recorder.epochs([record], checkpoints_dir(run_dir) / checkpoint_name(trainer.epochs_done))


class _StudyRecorder:
    """Writes each epoch's record into the run's study (created if needed) as ``supernet:epoch:NNNN``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def epochs(self, records: list[dict[str, Any]], checkpoint: Path) -> None:
        from nasplat.study import record_supernet_epochs

        record_supernet_epochs(
            self.config["storage"],
            self.config["study"],
            space_record=self.config["space_record"],
            objectives=self.config["objectives"],
            records=records,
            checkpoint=checkpoint,
        )


def train_supernet_ray(
    space: Any,
    data: Any,
    settings: Any,
    run_dir: str | Path,
    *,
    workers: int = 2,
    ray_address: str | None = None,
    use_gpu: bool | None = None,
    max_failures: int = 3,
    storage: str | None = None,
    study: str | None = None,
    objectives: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``space``'s supernet on ``workers`` Ray Train workers; resume from ``run_dir`` when it holds a
    checkpoint. ``data`` is a :class:`~nasplat.datasets.DataSpec`, ``settings`` a
    :class:`~nasplat.train.TrainSettings` (``batch_size`` per worker). ``use_gpu`` defaults to whether CUDA is
    available. Given ``storage`` and ``study`` (and the run's ``objectives``), epochs are recorded in that study.
    """
    import torch

    from nasplat.measure import connect_ray
    from nasplat.model import checkpoints_dir, load_checkpoint, point_latest, resolve_checkpoint

    if workers < 1:
        raise NasplatError(f"workers must be >= 1, got {workers}")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    cpus = os.cpu_count() or 1
    ray = connect_ray(ray_address, num_cpus=None if ray_address else cpus, log_to_driver=True)
    threads = worker_threads(ray, workers)
    data_dump = data.model_dump(mode="json")
    if data_dump.get("root"):
        data_dump["root"] = str(Path(data_dump["root"]).resolve())
    config = {
        "space_record": space.to_record(),
        "settings": settings.model_dump(mode="json"),
        "data": data_dump,
        "run_dir": str(run_dir),
        "threads": threads,
        "storage": _abs_sqlite(storage),
        "study": study,
        "objectives": objectives or [],
    }

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": threads} if not use_gpu else None
        ),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(run_dir),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; show the first line of the root cause
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        text = str(cause).strip().splitlines()
        raise NasplatError(f"supernet training on Ray failed: {text[-1] if text else type(cause).__name__}") from None
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        raise NasplatError(f"{run_dir}: training ended without a checkpoint")
    ckpt = resolve_checkpoint(run_dir)  # a missing `latest` (the workers repair it) resolves to the newest
    if not (root / "latest").is_file() or (root / "latest").read_text().strip() != ckpt.name:
        point_latest(root, ckpt.name)
    supernet = space.family.build_supernet(space, seed=settings.seed)
    state = load_checkpoint(supernet, ckpt)  # proves the checkpoint is complete and of this space
    return TrainResult(epochs_done=int(state["epochs_done"]), checkpoint=ckpt, history=tuple(state.get("history", [])))
