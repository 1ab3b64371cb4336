"""Fine-tuning (or retraining from scratch) a study's finalists as stand-alone networks, on Ray Tune.

A search ranks architectures by accuracy inherited from the supernet. ``run_finetune`` takes a few of them
(the Pareto front, or chosen trial numbers), trains each as a network of its own, and writes what it found
back onto the ORIGINAL trials of the study (never as new trials, which would change the front):

- trial attributes ``finetune:<metric>`` (stand-alone metrics on the validation split the search used),
  ``finetune:test_<metric>`` (the dataset's test split, never used for any choice), ``finetune:config`` (the
  winning learning rate, weight decay and epochs), ``finetune:checkpoint`` (folder of the winning weights,
  which ``nasplat export`` ships), ``finetune:from_scratch`` and ``finetune:run``;
- study attributes ``finetune:kendall_tau`` (rank agreement between inherited and stand-alone accuracy over
  the finalists: how far the supernet's ranking can be trusted) and ``finetune:summary``.

Each architecture gets a small hyper-parameter search: ``samples`` Tune trials with a log-uniform learning
rate and weight decay and a choice of epoch budgets (cosine schedule over the trial's own epochs), judged by
ASHA on validation accuracy after every epoch. ASHA runs per architecture (:class:`PerArchitectureASHA`):
trials compete only with trials of the same architecture, so a weak architecture is still measured. The
configurations are drawn from ``seed`` (Tune's basic variant generator), so the same seed gives the same
search. ``scheduler`` picks how trials are stopped early:

- ``asha`` (the default): per-architecture ASHA on the task's primary metric, as above;
- ``mo-asha``: :class:`~nasplat.finetune.MultiObjectiveASHA` grouped by finalist, on the stand-alone
  primary metric and the study's other objectives (their directions from the study; the values of those the
  task does not measure, such as MACs or latency, are the finalist's own study values, fixed for it and
  reported by every epoch's result). Samples of one architecture still compete with each other (within the
  group, on the same ordering, which for fixed costs is the primary metric's); across architectures, an
  architecture whose best sample at a rung is dominated by enough other architectures' bests (outside the
  top ``1/reduction_factor`` by non-domination rank, then crowding distance) has its samples stopped there.
  Compute goes to the architectures that can still reach the stand-alone front; a stopped architecture
  keeps the results it reached, so every finalist is still measured. Rungs are counted in epochs;
- ``none``: no early stopping, every trial trains its whole epoch budget.

Resources per trial come from the Ray cluster: CPU threads (``torch.set_num_threads``) and, when the
cluster has GPUs, a GPU fraction.

Layout of a run (``<study run dir>/finetune/<name>/``, ``name`` is ``finetune`` or ``scratch``)::

    request.json                  what was asked (trials, settings, scheduler); the same command again resumes,
                                  other settings are refused
    setup.json                    what every Tune trial reads: space declaration, dataset, settings, finalists
    inits/trial-<n>/              starting weights (model.safetensors) and how to rebuild the module (module.json)
    tune/                         Ray Tune's experiment: per-epoch checkpoints, restored after an interruption
    finalists/trial-<n>/          the winning weights, module.json and result.json of each architecture

With ``--ray-address`` on a cluster of several machines, the run folder must be on storage every node
sees (Tune's own requirement for its ``storage_path``): trials read ``setup.json`` and the starting weights
from it.

Checkpoints hold safetensors weights and an optimizer state read back with ``torch.load(weights_only=True)``;
nothing is unpickled without restriction. Ray is imported only when a run starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasplat import seeds
from nasplat.errors import NasplatError
from nasplat.study import FINETUNE_PREFIX, FINETUNE_SUMMARY, METRIC_PREFIX

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from nasplat.space import SearchSpace

_TAG_INIT = seeds.FINETUNE_INIT
SETUP_FORMAT = 2  # 2: the space as its stored record (space_record)


class FinetuneSettings(BaseModel):
    """How finalists are trained and how their hyper-parameters are searched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1, description="most epochs a Tune trial trains (ASHA's max_t)")
    epoch_choices: tuple[int, ...] | None = Field(
        default=None, description="epoch budgets a trial draws from (default: half of epochs, and epochs)"
    )
    samples: int = Field(default=4, ge=1, description="Tune trials per architecture")
    lr_min: float = Field(default=0.005, gt=0)
    lr_max: float = Field(default=0.1, gt=0)
    weight_decay_min: float = Field(default=1e-5, gt=0)
    weight_decay_max: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    batch_size: int | None = Field(default=None, ge=1, description="default: the study's dataset batch size")
    scheduler: Literal["asha", "mo-asha", "none"] = Field(
        default="asha", description="early stopping: per-architecture ASHA, multi-objective ASHA or none"
    )
    grace_period: int = Field(default=1, ge=1, description="epochs before ASHA may stop a trial")
    reduction_factor: float = Field(default=2.0, gt=1)
    from_scratch: bool = False
    seed: int = 0
    max_steps_per_epoch: int | None = Field(default=None, ge=1)
    calib_batches: int | None = Field(default=None, ge=1, description="BN recalibration (default: the study's)")
    cpus_per_trial: float | None = Field(default=None, gt=0)
    gpus_per_trial: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> FinetuneSettings:
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) exceeds lr_max ({self.lr_max})")
        if self.weight_decay_min > self.weight_decay_max:
            raise ValueError(f"weight_decay_min ({self.weight_decay_min}) exceeds weight_decay_max")
        bad = [e for e in self.epoch_choices or () if not 1 <= e <= self.epochs]
        if bad or self.epoch_choices == ():
            raise ValueError(f"epoch_choices must be between 1 and epochs ({self.epochs}), got {self.epoch_choices}")
        return self

    def epoch_budgets(self) -> list[int]:
        if self.epoch_choices:
            return sorted(set(self.epoch_choices))
        return sorted({max(1, math.ceil(self.epochs / 2)), self.epochs})

    def search_knobs(self) -> dict[str, Any]:
        """The settings that shape the experiment (a rerun must match them to resume it)."""
        skip = {"cpus_per_trial", "gpus_per_trial"}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}


@dataclass(frozen=True)
class FinetuneResult:
    """What a run measured: one row per finalist, the rank agreement, where it all is."""

    study: str
    name: str
    run_dir: Path
    from_scratch: bool
    metric: str
    rows: tuple[dict[str, Any], ...]
    kendall_tau: float | None
    spearman: float | None
    seconds: float
    resumed: bool


class FinetuneInterrupted(NasplatError):
    """The Tune experiment stopped before every trial finished (Ctrl+C); the same call resumes it."""


# ------------------------------------------------------------------------------------------------------------
# choosing finalists


def select_trials(study: optuna.Study, which: str) -> list[optuna.trial.FrozenTrial]:
    """``front`` (the study's Pareto front, by inherited values), ``front+N`` (the front and ``N`` off-front
    trials at evenly spaced ranks of the first objective: what a check of the estimate's ranking needs), or
    comma-separated trial numbers."""
    import optuna

    from nasplat.study import pareto_frame, trials_frame

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    text = which.strip()
    extra = 0
    if text.startswith("front+"):
        try:
            extra = int(text[len("front+") :])
        except ValueError:
            extra = -1
        if extra < 0:
            raise NasplatError(f"--trial front+N needs a whole number N >= 0; got '{which}'")
        text = "front"
    if text == "front":
        front, _ = pareto_frame(study)
        if front.empty:
            raise NasplatError(f"study '{study.study_name}' has no completed trial, so no front to fine-tune")
        numbers = [int(n) for n in front["trial"]]
        if extra:
            numbers += off_front_trials(trials_frame(study), numbers, study.metric_names or [], extra)
    else:
        numbers = []
        for part in text.split(","):
            try:
                numbers.append(int(part.strip()))
            except ValueError:
                raise NasplatError(
                    f"--trial must be 'front', 'front+N' or trial numbers like 3,7,12; got '{which}'"
                ) from None
        numbers = list(dict.fromkeys(numbers))
    chosen = []
    for n in numbers:
        if n not in trials:
            raise NasplatError(f"study '{study.study_name}' has no trial {n} (it has {len(trials)} trials)")
        t = trials[n]
        if t.state != optuna.trial.TrialState.COMPLETE or "arch_key" not in t.user_attrs:
            raise NasplatError(f"trial {n} is {t.state.name}, not COMPLETE: only evaluated trials can be fine-tuned")
        chosen.append(t)
    return chosen


def off_front_trials(frame: Any, front: list[int], objectives: list[str], n: int) -> list[int]:
    """``n`` completed trials off the front (one per architecture), at evenly spaced ranks of the first objective."""
    if frame.empty or not objectives or objectives[0] not in frame:
        return []
    rest = frame[~frame["trial"].isin(front)]
    if "arch_key" in rest:
        rest = rest.drop_duplicates("arch_key")
    rest = rest.sort_values([objectives[0], "trial"])
    if len(rest) <= n:
        return [int(t) for t in rest["trial"]]
    picks = np.linspace(0, len(rest) - 1, n).round().astype(int)
    return [int(rest["trial"].iloc[i]) for i in dict.fromkeys(picks.tolist())]


# ------------------------------------------------------------------------------------------------------------
# stand-alone modules: built from a file-backed description, so Tune trials need no supernet


def _module_path(module: nn.Module) -> str:
    name = type(module).__module__
    import sys

    source = sys.modules.get(name)
    if source is None or not callable(getattr(source, "build_model", None)):
        raise NasplatError(f"{type(module).__name__}'s module '{name}' has no build_model (stand-alone contract)")
    return name


def save_module(module: nn.Module, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """``model.safetensors`` (weights and buffers) and ``module.json`` (python module + config to rebuild it)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = getattr(module, "nasplat_config", None)
    if not isinstance(config, dict):
        raise NasplatError(f"{type(module).__name__} has no 'nasplat_config' dict (stand-alone module contract)")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "nasplat-standalone"})
    info = {"module": _module_path(module), "config": config, **(extra or {})}
    (folder / "module.json").write_text(json.dumps(info, indent=1))


def load_module(folder: Path, weights: Path | None = None) -> nn.Module:
    """Rebuild a module saved by :func:`save_module` (weights from ``weights``, default the folder's own)."""
    from safetensors.torch import load_file

    try:
        info = json.loads((folder / "module.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NasplatError(f"{folder / 'module.json'}: cannot read ({exc})") from None
    build = getattr(importlib.import_module(info["module"]), "build_model", None)
    if build is None:
        raise NasplatError(f"{folder / 'module.json'}: module '{info['module']}' has no build_model")
    model: nn.Module = build(info["config"])
    path = weights or folder / "model.safetensors"
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except Exception as exc:  # safetensors and load_state_dict raise several types
        raise NasplatError(f"{path}: weights do not fit {type(model).__name__}: {str(exc).splitlines()[0]}") from None
    return model


# ------------------------------------------------------------------------------------------------------------
# preparing the finalists' starting weights


def _study_data(study: optuna.Study) -> tuple[dict[str, Any], Any]:
    from nasplat.datasets import DataSpec

    run_spec: dict[str, Any] = study.user_attrs.get("run_spec") or {}
    if not run_spec.get("dataset"):
        raise NasplatError(f"study '{study.study_name}' records no dataset (no run_spec): nothing to train on")
    return run_spec, DataSpec.model_validate(run_spec["dataset"])


def prepare_finalists(
    study: optuna.Study,
    space: SearchSpace,
    trials: Sequence[optuna.trial.FrozenTrial],
    settings: FinetuneSettings,
    folder: Path,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Write each finalist's starting module to ``folder/trial-<n>``; returns their descriptions by number.

    Inherited: the supernet from the study's checkpoint, BatchNorm recalibrated for the path (as the search
    did), then extracted. From scratch: the family's stand-alone module rebuilt from its config with fresh
    weights (seeded from ``settings.seed`` and the trial number).
    """
    from nasplat.datasets import load_splits
    from nasplat.model import Calibration, load_checkpoint, recalibrate_path, seeded
    from nasplat.seeds import derive_seed
    from nasplat.study import objective_names

    run_spec, data = _study_data(study)
    seed = int(run_spec.get("seed", 0))
    supernet = space.family.build_supernet(space, seed=seed)
    from nasplat.study import CHECKPOINT, local_path, storage_folder

    ckpt = local_path(study.user_attrs, study.user_attrs.get(CHECKPOINT), storage_folder(study))
    if not settings.from_scratch:
        if not ckpt:
            raise NasplatError(
                f"study '{study.study_name}' used no supernet checkpoint, so there are no inherited weights; "
                f"use --from-scratch"
            )
        if not Path(ckpt).exists():
            raise NasplatError(f"the study's supernet checkpoint {ckpt} is missing (moved or deleted?)")
        load_checkpoint(supernet, Path(ckpt))
    train, _ = load_splits(data)
    task = space.family.task(space)
    fixed = [(i, n) for i, n in enumerate(objective_names(study)) if n not in task.metrics]
    out: dict[str, dict[str, Any]] = {}
    for t in trials:
        arch = space.from_key(str(t.user_attrs["arch_key"]))
        target = folder / f"trial-{t.number}"
        if settings.from_scratch:
            template = supernet.extract(arch)
            build = importlib.import_module(_module_path(template)).build_model
            with seeded(derive_seed(settings.seed, _TAG_INIT, t.number)):
                module = build(template.nasplat_config)
        else:
            # the statistics behind the trial's stored accuracy (the estimator's calibration, from the trial)
            calib = Calibration.of_trial(t.user_attrs.get("provenance"), run_spec)
            if settings.calib_batches is not None:
                calib = dataclasses.replace(calib, batches=settings.calib_batches)
            recalibrate_path(supernet, arch, task, train, calib)
            module = supernet.extract(arch)
        save_module(module, target, {"arch_key": arch.key, "trial": t.number})
        out[str(t.number)] = {
            "init": str(target.resolve()), "arch_key": arch.key, "arch": space.to_string(arch),
            "objectives": {n: float(t.values[i]) for i, n in fixed if t.values is not None},
        }  # fmt: skip
        log(
            f"  trial {t.number}: {space.to_string(arch)} ({'fresh weights' if settings.from_scratch else 'inherited'})"
        )
    return out


# ------------------------------------------------------------------------------------------------------------
# the run


def _resources(ray: Any, n_trials: int, settings: FinetuneSettings) -> dict[str, float]:
    """CPU threads and GPU fraction per Tune trial, from the cluster's size unless given."""
    cluster = ray.cluster_resources()
    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0))
    concurrent = max(1, min(n_trials, int(cpus)))
    cpu = settings.cpus_per_trial or float(max(1, int(cpus // concurrent)))
    if settings.gpus_per_trial is not None:
        gpu = settings.gpus_per_trial
    elif gpus > 0:
        per_gpu = math.ceil(min(n_trials, concurrent) / gpus)
        gpu = 1.0 / per_gpu
    else:
        gpu = 0.0
    if cpu > cpus:
        raise NasplatError(f"--cpus-per-trial {cpu:g} exceeds the cluster's {cpus:g} CPUs")
    if gpu > 0 and gpus == 0:
        raise NasplatError("--gpus-per-trial asks for GPUs, but the Ray cluster has none")
    return {"cpu": cpu, "gpu": gpu}


def _request(study: optuna.Study, numbers: list[int], settings: FinetuneSettings) -> dict[str, Any]:
    return {"study": study.study_name, "trials": numbers, "settings": settings.search_knobs()}


def run_finetune(
    study: optuna.Study,
    which: str = "front",
    settings: FinetuneSettings | None = None,
    *,
    name: str | None = None,
    out_dir: Path | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune the chosen trials of ``study`` on Ray Tune and write the results back (see the module doc).

    Running it again with the same study, trials and settings resumes an interrupted run (Tune's experiment
    restore, errored trials included) or, when the run had finished, writes the same results again.
    """
    from nasplat.export import study_space
    from nasplat.measure import connect_ray

    settings = settings or FinetuneSettings()
    space = study_space(study)
    trials = select_trials(study, which)
    numbers = [t.number for t in trials]
    name = name or ("scratch" if settings.from_scratch else "finetune")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise NasplatError(f"run name '{name}' must be letters, digits, '-' and '_'")
    from nasplat.study import RUN_DIR, local_path, storage_folder

    recorded = local_path(study.user_attrs, study.user_attrs.get(RUN_DIR), storage_folder(study))
    base = out_dir or Path(recorded or ".") / "finetune"  # a copied study fine-tunes inside its own folder
    run_dir = (base / name).resolve()
    exp_dir = run_dir / "tune"
    request = _request(study, numbers, settings)
    t0 = time.perf_counter()

    ray = connect_ray(ray_address, num_cpus=num_cpus)
    # Tune snapshots its experiment state after every checkpoint here (what makes resume exact); its note
    # that this may be a bottleneck is noise for epoch-long steps
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from ._tune import finetune_scheduler, train_finalist

    task = space.family.task(space)
    metric = task.primary
    mode = "max" if task.metrics[metric] == "maximize" else "min"
    n_tune = len(numbers) * settings.samples
    resources = _resources(ray, n_tune, settings)
    trainable = tune.with_resources(train_finalist, resources)

    resumed = tune.Tuner.can_restore(str(exp_dir))
    if resumed:
        try:
            previous = json.loads((run_dir / "request.json").read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if isinstance(previous, dict) and isinstance(previous.get("settings"), dict):
            previous["settings"].setdefault("scheduler", "asha")  # a run from before there was a choice
        if previous != request:
            raise NasplatError(
                f"{run_dir} holds a fine-tuning run with other trials or settings; use another --name "
                f"or delete the folder"
            )
        log(f"resuming the fine-tuning run in {run_dir}")
        with _quiet_analysis():
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
    else:
        if exp_dir.exists():
            shutil.rmtree(exp_dir)  # started but never saved a state Tune can restore
        _, data = _study_data(study)
        log(f"fine-tuning {len(numbers)} architectures of study '{study.study_name}' in {run_dir}")
        finalists = prepare_finalists(study, space, trials, settings, run_dir / "inits", log)
        setup = {
            "format": SETUP_FORMAT,
            "space_record": space.to_record(),
            "dataset": data.model_dump(mode="json"),
            "settings": settings.search_knobs(),
            "finalists": finalists,
        }
        _write_json(run_dir / "setup.json", setup)
        _write_json(run_dir / "request.json", request)
        from ray.tune.search.basic_variant import BasicVariantGenerator

        param_space = {
            "finalist": tune.grid_search(numbers),
            "lr": tune.loguniform(settings.lr_min, settings.lr_max),
            "weight_decay": tune.loguniform(settings.weight_decay_min, settings.weight_decay_max),
            "epochs": tune.choice(settings.epoch_budgets()),
            "setup": str(run_dir / "setup.json"),
        }
        scheduler = finetune_scheduler(settings, scheduler_objectives(study, metric, mode))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                scheduler=scheduler,
                num_samples=settings.samples,
                search_alg=BasicVariantGenerator(random_state=settings.seed),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(run_dir),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=1 if progress else 0,
            ),
        )
    stopping = {"asha": "ASHA per architecture", "mo-asha": "multi-objective ASHA", "none": "no early stopping"}
    log(
        f"{n_tune} Tune trials ({settings.samples} per architecture, up to {settings.epochs} epochs, "
        f"{stopping[settings.scheduler]}, "
        f"{resources['cpu']:g} CPU" + (f" + {resources['gpu']:.3g} GPU" if resources["gpu"] else "") + " each)"
    )
    grid = tuner.fit()
    finished, total = _saved_progress(exp_dir)
    if finished < total:
        raise FinetuneInterrupted(
            f"fine-tuning stopped with {finished} of {total} Tune trials finished; "
            f"run the same command again to resume ({run_dir})"
        )
    rows = _collect(study, space, grid, metric, mode, run_dir, settings, log)
    seconds = time.perf_counter() - t0
    return _write_back(study, rows, metric, name, run_dir, settings, seconds, resumed, log)


def scheduler_objectives(study: optuna.Study, metric: str, mode: str) -> dict[str, str]:
    """What ``--scheduler mo-asha`` ranks on: the task's primary metric (measured stand-alone) and the study's
    objectives, by name, in the study's directions (a task metric stand-alone, any other the finalist's own
    study value, which the trainable reports with every epoch)."""
    from nasplat.study import objective_names

    out = {metric: mode}
    for name, direction in zip(objective_names(study), study.directions, strict=True):
        if name not in out:
            out[name] = "max" if direction.name == "MAXIMIZE" else "min"
    return out


def _saved_progress(exp_dir: Path) -> tuple[int, int]:
    """(finished, all) Tune trials as the experiment's saved state has them.

    After Ctrl+C, Tune's in-memory results mark every trial TERMINATED; the saved state, which a restore
    reads, keeps the unfinished ones PENDING, so that is what decides whether the run is complete.
    """
    from ray.tune import ExperimentAnalysis

    with _quiet_analysis():
        trials = ExperimentAnalysis(str(exp_dir)).trials
    finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    return finished, len(trials)


@contextmanager
def _quiet_analysis() -> Iterator[None]:
    """Tune warns about trials without result files when it reads a saved experiment; after an
    interruption, trials that never started have none, which is expected."""
    import logging

    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _collect(
    study: optuna.Study,
    space: SearchSpace,
    grid: Any,
    metric: str,
    mode: str,
    run_dir: Path,
    settings: FinetuneSettings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The best Tune trial per finalist; its weights copied out and measured on the validation and test splits."""
    from nasplat.datasets import load_dataset, load_splits

    setup = json.loads((run_dir / "setup.json").read_text())
    by_number: dict[int, list[Any]] = {}
    errors: list[str] = []
    for result in grid:
        if result.error is not None:
            errors.append(str(result.error).strip().splitlines()[-1])
            continue
        if result.checkpoint is None or metric not in (result.metrics or {}):
            continue
        by_number.setdefault(int(result.config["finalist"]), []).append(result)
    sign = 1.0 if mode == "max" else -1.0
    _, data = _study_data(study)
    _, val = load_splits(data)
    try:
        test = load_dataset(data.name, "test", data.root)
    except NasplatError:
        test = None
    task = space.family.task(space)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = []
    for key, finalist in setup["finalists"].items():
        number = int(key)
        candidates = by_number.get(number, [])
        if not candidates:
            why = f": {errors[0]}" if errors else ""
            raise NasplatError(f"no Tune trial of study trial {number} finished{why}")
        candidates.sort(key=lambda r: str(r.metrics.get("trial_id")))  # ties go to the first Tune trial, always
        best = max(candidates, key=lambda r: (sign * float(r.metrics[metric]), _epochs_trained(r)))
        target = run_dir / "finalists" / f"trial-{number}"
        target.mkdir(parents=True, exist_ok=True)
        with best.checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / "model.safetensors", target / "model.safetensors")
        shutil.copyfile(Path(finalist["init"]) / "module.json", target / "module.json")
        model = load_module(target)
        val_metrics = task.evaluate(model, val.batches(256, seed=None, shuffle=False))
        test_metrics = task.evaluate(model, test.batches(256, seed=None, shuffle=False)) if test is not None else {}
        cfg = best.config
        config = {
            "lr": float(cfg["lr"]),
            "weight_decay": float(cfg["weight_decay"]),
            "epochs": int(cfg["epochs"]),
            "epochs_trained": _epochs_trained(best),
            "batch_size": int(settings.batch_size or data.batch_size),
            "momentum": settings.momentum,
        }
        t = trials[number]
        inherited = t.user_attrs.get(METRIC_PREFIX + metric)
        row = {
            "trial": number,
            "arch": finalist["arch"],
            "arch_key": finalist["arch_key"],
            "inherited": None if inherited is None else float(inherited),
            "val": val_metrics,
            "test": test_metrics,
            "config": config,
            "checkpoint": str(target),
            "tune_trials": len(candidates),
            "stopped_early": sum(_epochs_trained(r) < int(r.config["epochs"]) for r in candidates),
            "tune_trial_id": best.metrics.get("trial_id"),
        }
        _write_json(target / "result.json", row)
        rows.append(row)
        log(
            f"  trial {number}: inherited {metric} {_fmt(row['inherited'])} -> stand-alone {_fmt(val_metrics.get(metric))}"
            f" (test {_fmt(test_metrics.get(metric))}; lr {config['lr']:.3g}, wd {config['weight_decay']:.2g}, "
            f"{config['epochs_trained']}/{config['epochs']} epochs)"
        )
    return rows


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.4g}"


def _write_back(
    study: optuna.Study,
    rows: list[dict[str, Any]],
    metric: str,
    name: str,
    run_dir: Path,
    settings: FinetuneSettings,
    seconds: float,
    resumed: bool,
    log: Callable[[str], None],
) -> FinetuneResult:
    """Attributes on the original trials and the study's rank-agreement summary; no trial is added."""
    import nasplat
    from nasplat.measure import prediction_quality
    from nasplat.study import set_finished_trial_attrs

    for row in rows:
        attrs: dict[str, Any] = {f"{FINETUNE_PREFIX}{k}": float(v) for k, v in row["val"].items()}
        attrs.update({f"{FINETUNE_PREFIX}test_{k}": float(v) for k, v in row["test"].items()})
        attrs.update(
            {
                f"{FINETUNE_PREFIX}config": row["config"],
                f"{FINETUNE_PREFIX}checkpoint": row["checkpoint"],
                f"{FINETUNE_PREFIX}from_scratch": settings.from_scratch,
                f"{FINETUNE_PREFIX}run": name,
            }
        )
        set_finished_trial_attrs(study, int(row["trial"]), attrs)
    pairs = [(r["inherited"], r["val"].get(metric)) for r in rows if r["inherited"] is not None]
    quality = prediction_quality([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else {}
    tau = quality.get("kendall_tau", math.nan)
    rho = quality.get("spearman", math.nan)
    tau_v = None if not math.isfinite(tau) else float(tau)
    rho_v = None if not math.isfinite(rho) else float(rho)
    summary = {
        "run": name,
        "run_dir": str(run_dir),
        "from_scratch": settings.from_scratch,
        "metric": metric,
        "split": "validation split of the search (test split reported as test_<metric>)",
        "trials": [int(r["trial"]) for r in rows],
        "inherited": [r["inherited"] for r in rows],
        "finetuned": [r["val"].get(metric) for r in rows],
        "kendall_tau": tau_v,
        "spearman": rho_v,
        "settings": settings.search_knobs(),
        "seconds": seconds,
        "nasplat_version": nasplat.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    study.set_user_attr(f"{FINETUNE_PREFIX}kendall_tau", tau_v)
    study.set_user_attr(FINETUNE_SUMMARY, summary)
    log(
        f"rank agreement of inherited and stand-alone {metric} over {len(pairs)} finalists: "
        f"Kendall tau {_fmt(tau_v)}, Spearman {_fmt(rho_v)}"
    )
    return FinetuneResult(
        study=study.study_name,
        name=name,
        run_dir=run_dir,
        from_scratch=settings.from_scratch,
        metric=metric,
        rows=tuple(rows),
        kendall_tau=tau_v,
        spearman=rho_v,
        seconds=seconds,
        resumed=resumed,
    )


def _epochs_trained(result: Any) -> int:
    """Epochs behind a Tune result (its ``epoch`` metric; a result reported again after a resume repeats it)."""
    return int(result.metrics.get("epoch", result.metrics["training_iteration"]))
