"""The README's main job: a small end-to-end search on the built-in defaults, from a YAML space to a bundle."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console


def default_run(out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The built-in quickstart run file as a mapping, pointed at ``out_dir`` and with overrides applied."""
    text = resources.files("nasplat").joinpath("defaults/quickstart.yaml").read_text()
    run: dict[str, Any] = yaml.safe_load(text)
    run["run_dir"] = str(out_dir)
    if overrides.get("epochs") is not None:
        run["supernet"]["train"]["epochs"] = overrides["epochs"]
    if overrides.get("trials") is not None:
        run["trials"] = overrides["trials"]
    if overrides.get("n_train") is not None:
        run["dataset"]["n_train"] = overrides["n_train"]
    if overrides.get("dataset") is not None:
        run["dataset"]["name"] = overrides["dataset"]
    if overrides.get("n_val") is not None:
        run["dataset"]["n_val"] = overrides["n_val"]
    if overrides.get("space") is not None:
        run["space"] = overrides["space"]
    return run


def pick_real_knee(study: Any, front: Any) -> Any:
    """The knee of the front among the networks that learn something in their searchable part: more parameters
    than the space's smallest architecture (a cell of only skips and zeros computes the identity, whatever its
    accuracy). Falls back to the plain knee when no front member does."""
    import optuna

    from nasplat import registry
    from nasplat.errors import NasplatError
    from nasplat.export import pick_trial, study_space
    from nasplat.pareto import knee_index
    from nasplat.study import objective_names

    try:
        space = study_space(study)
        cost = registry.build("cost_model", "analytical")
        smallest = space.family.extremes(space)[1]
        floor = cost.estimate(space, smallest)["params_count"]
    except NasplatError:
        return pick_trial(study, "knee")
    real = front[[cost.estimate(space, space.from_key(str(k)))["params_count"] > floor for k in front["arch_key"]]]
    if real.empty:
        return pick_trial(study, "knee")
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    number = int(real.iloc[knee_index(real[names].to_numpy(dtype=float), directions)]["trial"])
    return next(
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.number == number
    )


def run_quickstart(
    out_dir: Path,
    *,
    log: Callable[[str], None] = print,
    console: Console | None = None,
    trust_archs: int = 6,
    trust_steps: int = 40,
    **overrides: Any,
) -> dict[str, Any]:
    """Train, search, print the front, export the knee trial, then check the estimate: ``trust_archs``
    architectures (front members, the exported one among them, and off-front ones) trained from scratch for two
    epochs of ``trust_steps`` steps; their rank agreement with the inherited accuracy is stored in the study and
    printed. Returns where everything is."""
    from nasplat.export import export_trial, front_table
    from nasplat.search import load_run, run_search
    from nasplat.study import load_study, make_storage, pareto_frame

    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / "run.yaml"
    data = default_run(out_dir, **overrides)
    data["run_dir"] = "."  # relative to the run file: the folder can be moved or copied whole
    run_file.write_text(yaml.safe_dump(data, sort_keys=False))
    run = load_run(run_file)
    log(f"quickstart: run file {run_file}")
    result = run_search(run, run_file=run_file, log=log)

    study = load_study(make_storage(result.storage_url), result.study_name)
    front, _ = pareto_frame(study)
    console.print(front_table(study, front, f"Pareto front ({len(front)} of {result.completed} trials)"))

    trial = pick_real_knee(study, front)
    bundle = export_trial(study, trial, out_dir / "bundle", overwrite=True)
    summary = {
        "run_file": run_file,
        "storage": result.storage_url,
        "study": result.study_name,
        "checkpoint": result.checkpoint,
        "bundle": bundle.bundle_dir,
        "exported_trial": trial.number,
        "front_size": len(front),
    }
    log(f"exported trial {trial.number} ({trial.user_attrs.get('arch_string')}) to {bundle.bundle_dir}")
    if trust_archs > 0:
        summary["trust"] = _check_trust(study, front, trial.number, trust_archs, trust_steps, out_dir, log)
    from nasplat.study import trust_line

    log(trust_line(study.user_attrs))
    log("where everything is:")
    log(f"  run file     {run_file}   (rerun or continue: nasplat search {run_file})")
    log(f"  study        {result.storage_url}  (nasplat pareto --storage {result.storage_url})")
    log(f"  supernet     {result.checkpoint}")
    log(f"  bundle       {bundle.bundle_dir}   (python {bundle.bundle_dir}/load.py)")
    return summary


def _check_trust(
    study: Any, front: Any, exported: int, n_archs: int, steps: int, out_dir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train ``n_archs`` architectures from scratch (about two thirds from the front, the exported one first, the
    rest off the front), write the rank agreement to the study (``nasplat finetune``'s summary) and print the
    exported architecture's inherited and stand-alone accuracy side by side."""
    import numpy as np

    from nasplat.finetune import FinetuneSettings, off_front_trials, run_finetune
    from nasplat.study import trials_frame

    members = [exported] + [int(t) for t in front["trial"] if int(t) != exported]
    n_front = min(len(members), max(2, (2 * n_archs + 2) // 3))
    spread = np.linspace(0, len(members) - 1, n_front).round().astype(int).tolist()
    chosen = list(dict.fromkeys([exported] + [members[i] for i in spread]))[:n_front]
    chosen += off_front_trials(
        trials_frame(study), [int(t) for t in front["trial"]], study.metric_names or [], n_archs - len(chosen)
    )
    settings = FinetuneSettings(
        epochs=2, epoch_choices=(2,), samples=1, from_scratch=True, max_steps_per_epoch=steps, grace_period=2
    )
    log(f"checking the estimate: {len(chosen)} architectures trained from scratch ({2 * steps} steps each)")
    result = run_finetune(
        study,
        ",".join(str(n) for n in chosen),
        settings,
        name="trust",
        out_dir=out_dir / "trust",
        progress=False,
        log=log,
    )
    row = next(r for r in result.rows if int(r["trial"]) == exported)
    stand_alone = row["val"].get(result.metric)
    log(
        f"exported trial {exported}: inherited {result.metric} {row['inherited']:.2f} (supernet weights), "
        f"stand-alone {stand_alone:.2f} (trained from scratch for {2 * steps} steps)"
    )
    return {"kendall_tau": result.kendall_tau, "n": len(result.rows), "exported_inherited": row["inherited"],
            "exported_stand_alone": stand_alone}  # fmt: skip
