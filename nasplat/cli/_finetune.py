"""``nasplat finetune``: train a study's finalists as stand-alone networks on Ray Tune (see :mod:`nasplat.finetune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SCHEDULERS = ("asha", "mo-asha", "none")


def finetune(
    storage: Annotated[str, typer.Option("--storage", help="SQLAlchemy URL of the study storage")],
    study: Annotated[str | None, typer.Option("--study", help="study name (default: the most recent one)")] = None,
    trials: Annotated[
        str,
        typer.Option("--trial", "--trials", help="'front' (the study's Pareto front) or trial numbers, e.g. 3,7,12"),
    ] = "front",
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="fresh weights instead of the supernet's inherited ones")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="most epochs per Tune trial (ASHA's max_t)")] = 10,
    samples: Annotated[int, typer.Option(min=1, help="Tune trials (hyper-parameter samples) per architecture")] = 4,
    scheduler: Annotated[
        str,
        typer.Option(
            help="early stopping: 'asha' (per architecture, on accuracy), 'mo-asha' (multi-objective: an "
            "architecture stops when dominated on the study's objectives at its rung) or 'none'"
        ),
    ] = "asha",
    grace_period: Annotated[
        int, typer.Option(min=1, help="epochs before a trial may be stopped (the first rung of either ASHA)")
    ] = 1,
    lr_min: Annotated[float, typer.Option(help="lowest learning rate (log-uniform)")] = 0.005,
    lr_max: Annotated[float, typer.Option(help="highest learning rate")] = 0.1,
    weight_decay_min: Annotated[float, typer.Option(help="lowest weight decay (log-uniform)")] = 1e-5,
    weight_decay_max: Annotated[float, typer.Option(help="highest weight decay")] = 1e-3,
    batch_size: Annotated[int | None, typer.Option(min=1, help="default: the study's dataset batch size")] = None,
    max_steps_per_epoch: Annotated[int | None, typer.Option(min=1, help="cap steps per epoch (short runs)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the configurations, data order and fresh weights")] = 0,
    cpus_per_trial: Annotated[float | None, typer.Option(help="default: the cluster's CPUs shared out")] = None,
    gpus_per_trial: Annotated[float | None, typer.Option(help="default: a share of the cluster's GPUs, if any")] = None,
    name: Annotated[
        str | None, typer.Option(help="run name (default 'finetune', or 'scratch' with --from-scratch)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder for runs (default: <study run dir>/finetune)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="join this Ray cluster instead of a local one")] = None,
    quiet: Annotated[bool, typer.Option(help="no Tune progress tables")] = False,
) -> None:
    """Fine-tune (or retrain) chosen architectures with a small hyper-parameter search per architecture.

    Results go back onto the original trials (finetune:* attributes) and the study records the Kendall tau
    between inherited and stand-alone accuracy. Run the same command again to resume an interrupted run.
    """
    from rich.console import Console
    from rich.markup import escape

    from nasplat.errors import NasplatError
    from nasplat.finetune import FinetuneInterrupted, FinetuneSettings, run_finetune
    from nasplat.search import existing_storage
    from nasplat.study import load_study

    if scheduler not in SCHEDULERS:
        raise NasplatError(f"--scheduler must be one of {', '.join(SCHEDULERS)}; got '{scheduler}'")
    con = Console(highlight=False, soft_wrap=True)
    settings = FinetuneSettings(
        scheduler=scheduler,  # type: ignore[arg-type]  # checked above
        grace_period=grace_period,
        epochs=epochs,
        samples=samples,
        lr_min=lr_min,
        lr_max=lr_max,
        weight_decay_min=weight_decay_min,
        weight_decay_max=weight_decay_max,
        batch_size=batch_size,
        max_steps_per_epoch=max_steps_per_epoch,
        seed=seed,
        from_scratch=from_scratch,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
    )
    st = load_study(existing_storage(storage), study)
    try:
        result = run_finetune(
            st,
            trials,
            settings,
            name=name,
            out_dir=out,
            ray_address=ray_address,
            progress=not quiet,
            log=lambda msg: con.print(escape(msg)),
        )
    except FinetuneInterrupted as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"interrupted: {escape(str(exc))}")
        raise typer.Exit(130) from None
    tau = "n/a" if result.kendall_tau is None else f"{result.kendall_tau:.3f}"
    con.print(
        f"[green]done[/]: {len(result.rows)} architectures of study '{result.study}' fine-tuned in "
        f"{result.seconds:.0f} s; Kendall tau (inherited vs stand-alone {result.metric}): {tau}"
    )
    con.print(f"ranked by stand-alone values: nasplat pareto --storage {storage} --study {result.study} --by finetuned")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
