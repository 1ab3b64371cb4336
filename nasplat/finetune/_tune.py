"""The Ray Tune side of :mod:`nasplat.finetune`: the trainable and its schedulers (per-architecture ASHA, the
multi-objective :class:`~nasplat.finetune.MultiObjectiveASHA` grouped by finalist, or none).

Imported only when a fine-tuning run starts (it imports Ray at the top), and by Tune's workers, which call
:func:`train_finalist` with one trial's configuration::

    {"finalist": <study trial number>, "lr": ..., "weight_decay": ..., "epochs": ..., "setup": <setup.json>}

Every epoch the trial reports the family task's metrics on the validation split (with the study's other
objectives of its finalist, fixed values such as MACs, under their own names: what the multi-objective
scheduler ranks on) and a checkpoint
(``model.safetensors``, ``optimizer.pt`` read back with ``weights_only=True``, ``state.json``). A trial
restored after an interruption continues from its last checkpoint; its data order and learning rates are
those of an uninterrupted run (both are functions of the seed, the epoch and the step).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from torch import nn

from nasplat import seeds
from nasplat.errors import NasplatError

_TAG_DATA, _TAG_STEP = seeds.FINETUNE_DATA, seeds.FINETUNE_STEP


class PerArchitectureASHA(FIFOScheduler):  # type: ignore[misc]
    """One ASHA scheduler per value of ``config[key]``: trials compete only with their own architecture's.

    A single ASHA over every trial would stop the trials of weaker architectures, and those architectures
    would then have no stand-alone measurement at all.
    """

    def __init__(self, key: str, **asha: Any) -> None:
        super().__init__()
        self._key = key
        self._asha = dict(asha)
        self._metric: str | None = None
        self._mode: str | None = None
        self._children: dict[Any, ASHAScheduler] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def _child(self, tune_controller: Any, trial: Any) -> ASHAScheduler:
        value = trial.config.get(self._key)
        child = self._children.get(value)
        if child is None:
            child = ASHAScheduler(metric=self._metric, mode=self._mode, **self._asha)
            self._children[value] = child
        if trial.trial_id not in child._trial_info:  # e.g. a trial that comes back with a restored experiment
            child.on_trial_add(tune_controller, trial)
        return child

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._child(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return str(self._child(tune_controller, trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._child(tune_controller, trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        child = self._children.get(trial.config.get(self._key))
        if child is not None and trial.trial_id in child._trial_info:
            child.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        stopped = sum(c._num_stopped for c in self._children.values())
        return f"ASHA per architecture ({len(self._children)} architectures): {stopped} trials stopped early"


def finetune_scheduler(settings: Any, objectives: dict[str, str]) -> TrialScheduler:
    """The scheduler ``settings.scheduler`` names: ``asha`` (:class:`PerArchitectureASHA` on the task's primary
    metric, which TuneConfig's metric and mode give it), ``mo-asha`` (:class:`MultiObjectiveASHA` on
    ``objectives``, grouped by finalist, in epochs) or ``none`` (every trial runs its whole budget)."""
    from ._mo_asha import MultiObjectiveASHA

    grace = min(settings.grace_period, settings.epochs)
    if settings.scheduler == "none":
        return FIFOScheduler()
    if settings.scheduler == "mo-asha":
        return MultiObjectiveASHA(
            objectives, time_attr="epoch", max_t=settings.epochs, grace_period=grace,
            reduction_factor=settings.reduction_factor, group="finalist",
        )  # fmt: skip
    return PerArchitectureASHA(
        "finalist", max_t=settings.epochs, grace_period=grace, reduction_factor=settings.reduction_factor
    )


def _optimizer(model: nn.Module, lr: float, weight_decay: float, momentum: float) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def _trial_threads() -> int:
    try:
        resources = tune.get_context().get_trial_resources().required_resources
        return max(1, int(resources.get("CPU", 1)))
    except Exception:  # outside a Tune trial (direct call in a test): one thread
        return 1


def _device() -> torch.device:
    import ray

    if torch.cuda.is_available() and ray.get_gpu_ids():
        return torch.device("cuda")
    return torch.device("cpu")


def train_finalist(config: dict[str, Any]) -> None:
    """Tune trainable: train one finalist with one configuration, reporting and checkpointing every epoch."""
    from safetensors.torch import load_file, save_file

    from nasplat.datasets import DataSpec, load_splits
    from nasplat.seeds import derive_seed
    from nasplat.space import space_from_record
    from nasplat.train import TrainSettings, lr_at

    from ._finetune import load_module

    torch.set_num_threads(_trial_threads())
    setup = json.loads(Path(config["setup"]).read_text())
    number = int(config["finalist"])
    finalist = setup["finalists"][str(number)]
    space = space_from_record(setup["space_record"], f"{config['setup']} (space)")
    task = space.family.task(space)
    data = DataSpec.model_validate(setup["dataset"])
    train, val = load_splits(data)
    knobs = setup["settings"]
    fixed = {k: float(v) for k, v in (finalist.get("objectives") or {}).items()}  # the study's costs of it
    device = _device()

    model = load_module(Path(finalist["init"])).to(device)
    epochs = int(config["epochs"])
    lr, weight_decay = float(config["lr"]), float(config["weight_decay"])
    batch_size = int(knobs["batch_size"] or data.batch_size)
    schedule = TrainSettings(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=0)
    optimizer = _optimizer(model, lr, weight_decay, float(knobs["momentum"]))
    steps_per_epoch = train.num_batches(batch_size, drop_last=True)
    if knobs.get("max_steps_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, int(knobs["max_steps_per_epoch"]))
    if steps_per_epoch == 0:
        raise NasplatError(f"dataset '{train.name}' has {len(train)} images, fewer than one batch of {batch_size}")
    seed = derive_seed(int(knobs["seed"]), _TAG_DATA, number)

    start_epoch, step = 0, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            model.load_state_dict(load_file(str(Path(folder) / "model.safetensors"), device=str(device)))
            optimizer.load_state_dict(torch.load(Path(folder) / "optimizer.pt", weights_only=True, map_location=device))
            state = json.loads((Path(folder) / "state.json").read_text())
        start_epoch, step = int(state["epoch"]), int(state["step"])
        if start_epoch >= epochs and "result" in state:
            # every epoch was trained, but an interruption may have come between the checkpoint and its result
            # reaching the experiment: report that result again, so the trial ends on its last epoch's metrics
            tune.report(state["result"])
            return

    for epoch in range(start_epoch, epochs):
        model.train()
        loss_sum, n_steps = 0.0, 0
        batches = train.batches(
            batch_size, seed=derive_seed(seed, _TAG_DATA, epoch), shuffle=True, augment=data.augment, drop_last=True
        )
        for batch in batches:
            if n_steps >= steps_per_epoch:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(schedule, step, steps_per_epoch)
            optimizer.zero_grad(set_to_none=True)
            gen = torch.Generator().manual_seed(derive_seed(seed, _TAG_STEP, step))
            loss = task.loss(model, tuple(t.to(device) for t in batch), gen)
            if not torch.isfinite(loss):
                raise NasplatError(f"training diverged: loss {float(loss)} at epoch {epoch + 1} (lr {lr:.3g})")
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            n_steps += 1
            step += 1
        metrics = task.evaluate(
            model, (tuple(t.to(device) for t in b) for b in val.batches(256, seed=None, shuffle=False))
        )
        with tempfile.TemporaryDirectory() as folder:
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            save_file(tensors, str(Path(folder) / "model.safetensors"))
            torch.save(optimizer.state_dict(), Path(folder) / "optimizer.pt")
            result = {**fixed, **metrics, "epoch": epoch + 1, "train_loss": loss_sum / max(n_steps, 1)}
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch + 1, "step": step, "result": result}))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
