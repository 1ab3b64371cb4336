"""Working with finished studies: choosing a trial and exporting it as a stand-alone bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasplat.errors import NasplatError
from nasplat.space import SearchSpace

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from rich.table import Table

    from ._bundle import ExportResult


def study_space(study: optuna.Study) -> SearchSpace:
    """The space a study searched, rebuilt from the declaration stored in the study (checked by hash)."""
    from nasplat.study import record as study_record

    attrs = study.user_attrs
    if not isinstance(attrs.get(study_record.SPACE_SPEC), dict):
        raise NasplatError(f"study '{study.study_name}' was not written by nasplat (no space declaration stored)")
    return study_record.study_space(attrs, f"study '{study.study_name}' space")


def pick_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """A completed trial by number, or ``knee`` (the front's best balanced trade-off)."""
    import optuna

    from nasplat.pareto import knee_index
    from nasplat.study import objective_names, pareto_frame

    if which == "knee":
        front, _ = pareto_frame(study)
        if front.empty:
            raise NasplatError(f"study '{study.study_name}' has no completed trial")
        names = objective_names(study)
        directions = [d.name.lower() for d in study.directions]
        number = int(front.iloc[knee_index(front[names].to_numpy(dtype=float), directions)]["trial"])
    else:
        try:
            number = int(which)
        except ValueError:
            raise NasplatError(f"trial must be a trial number or 'knee', got '{which}'") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise NasplatError(f"study '{study.study_name}' has no trial {number}")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE:
        raise NasplatError(f"trial {number} is {t.state.name}, not COMPLETE: only evaluated trials can be exported")
    return t


def export_trial(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    out_dir: Path,
    *,
    overwrite: bool = False,
    finetuned: bool | None = None,
) -> ExportResult:
    """Export a trial's network as a stand-alone bundle.

    A trial fine-tuned by ``nasplat finetune`` (it has a ``finetune:checkpoint``) ships its fine-tuned weights
    (``finetuned=None`` or True); otherwise, or with ``finetuned=False``, the supernet is rebuilt from the
    study's checkpoint, BN recalibrated for the trial's path, and the path exported with inherited weights.
    """
    from nasplat.datasets import DataSpec, load_splits
    from nasplat.model import Calibration, load_supernet, recalibrate_path
    from nasplat.study import FINETUNE_PREFIX, METRIC_PREFIX

    from ._bundle import calibration_inputs, export_bundle, preprocessing_for

    attrs = study.user_attrs
    space = study_space(study)
    tuned = trial.user_attrs.get(f"{FINETUNE_PREFIX}checkpoint")
    if finetuned and not tuned:
        raise NasplatError(f"trial {trial.number} has not been fine-tuned (run 'nasplat finetune' first)")
    if tuned and finetuned is not False:
        return _export_finetuned(study, space, trial, Path(str(tuned)), out_dir, overwrite)
    from nasplat.study import CHECKPOINT, local_path, storage_folder

    ckpt = local_path(attrs, attrs.get(CHECKPOINT), storage_folder(study))
    if not ckpt:
        raise NasplatError(
            f"study '{study.study_name}' used no supernet checkpoint, so it has no trained weights to export"
        )
    if not Path(ckpt).exists():
        raise NasplatError(f"the study's supernet checkpoint {ckpt} is missing (moved or deleted?)")
    run_spec: dict[str, Any] = attrs.get("run_spec") or {}
    data = DataSpec.model_validate(run_spec.get("dataset"))
    train, val = load_splits(data)
    supernet, _info = load_supernet(space, Path(ckpt))
    arch = space.from_key(str(trial.user_attrs["arch_key"]))
    task = space.family.task(space)
    # the statistics behind the trial's stored accuracy: the estimator's calibration, read from the trial
    recalibrate_path(supernet, arch, task, train, Calibration.of_trial(trial.user_attrs.get("provenance"), run_spec))
    example = task.model_inputs(next(val.batches(2, seed=0, shuffle=False)))
    metrics = {k[len(METRIC_PREFIX) :]: v for k, v in trial.user_attrs.items() if k.startswith(METRIC_PREFIX)}
    provenance = dict(trial.user_attrs.get("provenance") or {})
    provenance.update({"study": study.study_name, "trial": trial.number, "checkpoint": str(ckpt)})
    return export_bundle(
        supernet,
        arch,
        out_dir,
        metrics=metrics,
        provenance=provenance,
        example_input=example,
        overwrite=overwrite,
        extras=space.family.bundle_extras(space, arch),
        preprocess=preprocessing_for(train, task),
        calibration=calibration_inputs(train, task),
    )


def _export_finetuned(
    study: optuna.Study, space: SearchSpace, trial: optuna.trial.FrozenTrial, folder: Path, out_dir: Path,
    overwrite: bool,
) -> ExportResult:  # fmt: skip
    """Export the fine-tuned weights of a trial; the bundle is checked against the fine-tuned module itself."""
    from safetensors.torch import load_file

    from nasplat.datasets import DataSpec, load_splits
    from nasplat.study import FINETUNE_PREFIX, METRIC_PREFIX

    from ._bundle import calibration_inputs, export_module, preprocessing_for

    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise NasplatError(f"trial {trial.number}'s fine-tuned weights {weights} are missing (moved or deleted?)")
    run_spec: dict[str, Any] = study.user_attrs.get("run_spec") or {}
    arch = space.from_key(str(trial.user_attrs["arch_key"]))
    # the module comes from the family's own extraction for this architecture (so structure and config
    # belong to it), then takes the fine-tuned weights strictly
    module = space.family.build_supernet(space, seed=int(run_spec.get("seed", 0))).extract(arch)
    try:
        module.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as exc:  # safetensors and load_state_dict raise several types
        raise NasplatError(
            f"{weights}: does not fit trial {trial.number}'s network: {str(exc).splitlines()[0]}"
        ) from None
    data = DataSpec.model_validate(run_spec.get("dataset"))
    train, val = load_splits(data)
    task = space.family.task(space)
    example = task.model_inputs(next(val.batches(2, seed=0, shuffle=False)))
    metrics: dict[str, Any] = {
        k[len(METRIC_PREFIX) :]: v for k, v in trial.user_attrs.items() if k.startswith(METRIC_PREFIX)
    }
    metrics.update(
        {k: v for k, v in trial.user_attrs.items() if k.startswith(FINETUNE_PREFIX) and isinstance(v, float)}
    )
    provenance = dict(trial.user_attrs.get("provenance") or {})
    provenance.update(
        {
            "study": study.study_name,
            "trial": trial.number,
            "weights": "finetuned",
            "finetune_checkpoint": str(folder),
            "finetune_config": trial.user_attrs.get(f"{FINETUNE_PREFIX}config"),
            "finetune_from_scratch": trial.user_attrs.get(f"{FINETUNE_PREFIX}from_scratch"),
            "supernet_checkpoint": study.user_attrs.get("checkpoint"),
        }
    )
    return export_module(
        module,
        space,
        arch,
        out_dir,
        metrics=metrics,
        provenance=provenance,
        example_input=example,
        overwrite=overwrite,
        extras=space.family.bundle_extras(space, arch),
        preprocess=preprocessing_for(train, task),
        calibration=calibration_inputs(train, task),
    )


def front_table(study: optuna.Study, front: pd.DataFrame, title: str) -> Table:
    """The front as a rich table: trial, each objective, and the architecture in the family's string form.

    A front ranked by fine-tuned values (``pareto_frame(by="finetuned")``) also shows the inherited values.
    """
    from rich.table import Table

    from nasplat.study import objective_names

    names = objective_names(study)
    columns = [c for n in names for c in (n, f"inherited:{n}") if c in front]
    table = Table(title=title)
    for col in ["trial", *columns]:
        table.add_column(col, justify="right")
    table.add_column("arch", overflow="fold")
    for _, row in front.iterrows():
        table.add_row(str(row["trial"]), *(_fmt(row[n]) for n in columns), str(row.get("arch")))
    return table


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)
