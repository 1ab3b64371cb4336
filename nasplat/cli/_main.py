"""The ``nasplat`` command line. Every user error prints one line (no traceback) and exits non-zero."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    import pandas as pd

    from nasplat.search import RunSpec

app = typer.Typer(
    help="nasplat: neural architecture search with search spaces as data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
spaces_app = typer.Typer(help="List, show, validate and sample search spaces.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
studies_app = typer.Typer(help="The studies in a storage: list them (--storage URL), or delete one.")
app.add_typer(studies_app, name="studies")

# piped or redirected output gets whole table rows, not rows cut at rich's default 80 columns
_PIPED_WIDTH = 400
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else _PIPED_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else _PIPED_WIDTH)

StorageOpt = Annotated[
    str, typer.Option("--storage", help="SQLAlchemy URL of the study storage, e.g. sqlite:///study.db")
]
StudyOpt = Annotated[str | None, typer.Option("--study", help="study name (default: the most recent one)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout instead of a table")]


def _print_version(value: bool) -> None:
    if value:
        import nasplat

        typer.echo(f"nasplat {nasplat.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """nasplat: neural architecture search with search spaces as data."""


# ---------------------------------------------------------------------------------------------------- spaces
@spaces_app.command("list")
def spaces_list(as_json: JsonOpt = False) -> None:
    """Every registered space: shipped ones and those of installed plugins."""
    from nasplat.space import list_spaces, load_space

    table = Table("name", "family", "dimensions", "size", "file")
    rows: list[dict[str, Any]] = []
    for name, path in list_spaces().items():
        space = load_space(path)
        rows.append(
            {"name": name, "space": space.name, "family": space.spec.family, "dimensions": len(space.dimensions),
             "size": space.size(), "hash": space.hash, "file": str(path)}
        )  # fmt: skip
        table.add_row(name, space.spec.family, str(len(space.dimensions)), f"{space.size():,}", str(path))
    if as_json:
        _print_json({"spaces": rows})
        return
    out.print(table)


@spaces_app.command("show")
def spaces_show(name: Annotated[str, typer.Argument(help="space name or YAML file")]) -> None:
    """A space's declaration, size and hash."""
    import yaml

    from nasplat.space import load_space

    space = load_space(name)
    out.print(f"[bold]{space.name}[/] v{space.spec.version} · family {space.spec.family} · hash {space.hash}")
    if space.path:
        out.print(f"file: {space.path}")
    out.print(f"size: {space.size():,} architectures")
    table = Table("label", "type", "choices")
    for d in space.dimensions:
        table.add_row(d.label, d.kind, ", ".join(map(str, d.choices)))
    out.print(table)
    out.print("macro:", yaml.safe_dump(space.macro.model_dump(mode="json"), sort_keys=False).strip())
    for c in space.constraints:
        out.print(f"constraint: {c.text}")


@spaces_app.command("validate")
def spaces_validate(files: Annotated[list[Path], typer.Argument(help="space YAML files")]) -> None:
    """Check space files without running anything; exits 1 if any is invalid."""
    from nasplat.space import load_space

    bad = 0
    for f in files:
        try:
            space = load_space(f)
        except NasplatError as exc:
            bad += 1
            err.print(f"[red]invalid[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        else:
            out.print(
                f"[green]ok[/] {f}: space '{space.name}', {len(space.dimensions)} dimensions, {space.size():,} architectures",
                highlight=False,
            )
    if bad:
        raise typer.Exit(1)


@spaces_app.command("sample")
def spaces_sample(
    name: Annotated[str, typer.Argument(help="space name or YAML file")],
    n: Annotated[int, typer.Option("--n", min=1, help="how many")] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Print N seeded random architectures in the family's string form, one per line."""
    import numpy as np

    from nasplat.space import load_space

    space = load_space(name)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        print(space.to_string(space.sample(rng)))


# ---------------------------------------------------------------------------------------------------- search
@app.command()
def search(
    run_file: Annotated[Path, typer.Argument(help="run file (YAML)")],
    resume: Annotated[bool, typer.Option("--resume", help="continue an existing study (it must exist)")] = False,
    trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials", "--trials", min=1, help="completed trials wanted in the study (overrides the run file's)"
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray actors evaluating batches (override)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="join this Ray cluster instead of a local one")] = None,
) -> None:
    """Run the search a run file declares; running it again continues the same study.

    The run file is checked first (as `nasplat check` does): every problem is listed and nothing runs."""
    from nasplat.search import run_search

    run = _checked_run(run_file)
    if resume and not (Path(run.run_dir) / "supernet").is_dir():  # a kill while training: no study yet
        _require_study(run.storage_url, run.study)
    result = run_search(run, run_file=run_file, log=_log, trials=trials, workers=workers, ray_address=ray_address)
    out.print(
        f"[green]done[/]: {result.completed} trials in study '{result.study_name}' ({result.storage_url}), {result.seconds:.0f} s"
    )
    _print_pareto(result.storage_url, result.study_name, None)


@app.command("train-supernet")
def train_supernet_cmd(
    run_file: Annotated[Path, typer.Argument(help="run file (YAML)")],
    workers: Annotated[
        int | None, typer.Option(help="Ray Train workers (DDP); default: the run file's supernet.workers, else 1")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="join this Ray cluster (default: start a local one sized to the machine)")
    ] = None,
    in_process: Annotated[bool, typer.Option(help="train in this process, without Ray")] = False,
) -> None:
    """Train (or resume training) the run file's supernet on Ray Train workers.

    The run file is checked first (as `nasplat check` does): every problem is listed and nothing runs."""
    from nasplat.search import prepare_supernet
    from nasplat.space import load_space

    run = _checked_run(run_file, training=True)
    if in_process and (workers or ray_address):
        raise NasplatError("--in-process cannot be combined with --workers or --ray-address")
    if in_process:
        run = run.model_copy(
            update={"supernet": run.supernet.model_copy(update={"workers": None, "ray_address": None})}
        )
    else:
        workers = workers or run.supernet.workers or 1
    ckpt = prepare_supernet(
        run, load_space(run.space), _log, run_file=str(run_file), workers=workers, ray_address=ray_address
    )
    out.print(f"[green]checkpoint[/]: {ckpt}")


# ---------------------------------------------------------------------------------------------------- results
@studies_app.callback(invoke_without_command=True)
def studies(
    ctx: typer.Context,
    storage: Annotated[
        str | None, typer.Option("--storage", help="SQLAlchemy URL of the study storage, e.g. sqlite:///study.db")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The studies in a storage (`nasplat studies --storage URL`); `nasplat studies delete` removes one."""
    import pandas as pd

    from nasplat.search import existing_storage
    from nasplat.study import frames as study_frames
    from nasplat.study import normalise_url, redact_url

    if ctx.invoked_subcommand is not None:
        return
    if storage is None:
        raise NasplatError(
            "missing option '--storage': the storage's URL, e.g. sqlite:///nasplat-runs/quickstart/study.db"
        )
    existing_storage(storage)  # a missing or unreadable storage is reported as every command reports it
    url = normalise_url(storage)
    table = Table("study", "space", "objectives", "trials")
    rows: list[dict[str, Any]] = []
    overview = study_frames.studies_frame(url, summary=False, fresh=True)
    for name, n_trials, created in zip(overview.get("study", []), overview.get("trials", []),
                                       overview.get("created", []), strict=True):  # fmt: skip
        info = study_frames.study_info(url, str(name), readable=False)
        objs = info.attrs.get("objectives")
        if not isinstance(objs, list):  # a study nasplat did not write: its objectives as Optuna names them
            objs = [{"metric": m, "direction": d} for m, d in zip(info.objectives, info.directions, strict=True)]
        rows.append(
            {"study": info.name, "space": info.attrs.get("space"), "space_hash": info.attrs.get("space_hash"),
             "objectives": objs, "trials": int(n_trials), "run_dir": info.attrs.get("run_dir"),
             "created": None if pd.isna(created) else pd.Timestamp(created).isoformat()}
        )  # fmt: skip
        table.add_row(
            info.name,
            str(info.attrs.get("space", "?")),
            ", ".join(f"{o['metric']} ({o['direction'][:3]})" for o in objs),
            str(int(n_trials)),
        )
    if as_json:
        _print_json({"storage": redact_url(storage), "studies": rows})
        return
    out.print(table)


@studies_app.command("delete")
def studies_delete(
    storage: StorageOpt,
    study: Annotated[str, typer.Option("--study", help="name of the study to delete")],
    yes: Annotated[bool, typer.Option("--yes", help="really delete it (its trials cannot be recovered)")] = False,
) -> None:
    """Delete a study and all its trials from a storage (files in its run folder are kept)."""
    import optuna

    from nasplat.search import existing_storage
    from nasplat.study import load_study

    st = existing_storage(storage)
    found = load_study(st, study)
    n = len(found.get_trials(deepcopy=False))
    if not yes:
        raise NasplatError(f"not deleting study '{study}' ({n} trials): add --yes to delete it for good")
    run_dir = found.user_attrs.get("run_dir")
    optuna.delete_study(study_name=study, storage=st)
    kept = f"; files in {run_dir} are kept" if run_dir else ""
    out.print(f"deleted study '{escape(study)}' ({n} trials) from {escape(storage)}{escape(kept)}", highlight=False)


@app.command()
def pareto(
    storage: StorageOpt,
    study: StudyOpt = None,
    reference: Annotated[
        str | None, typer.Option(help="hypervolume reference point, comma-separated, e.g. 0,5e6")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="also write the front to this CSV file")] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="rank by 'inherited' (the search's values) or 'finetuned' (stand-alone, after nasplat finetune)",
        ),
    ] = "inherited",
    as_json: JsonOpt = False,
) -> None:
    """The Pareto front of a study as a table (and its hypervolume given a reference point)."""
    if csv is not None:
        from nasplat.files import check_output_file

        check_output_file(csv, "--csv")
    ref = _parse_floats(reference) if reference else None
    if as_json:
        st, front, hv = _pareto(storage, study, ref, by)
        from nasplat.study import FINETUNE_SUMMARY, objective_names, trust_line

        trust = st.user_attrs.get(FINETUNE_SUMMARY) or {}
        _print_json(
            {"study": st.study_name, "by": by, "objectives": objective_names(st),
             "directions": [d.name.lower() for d in st.directions], "reference": ref, "hypervolume": hv,
             "estimate": "inherited" if by == "inherited" else "finetuned",
             "trust": {"kendall_tau": trust.get("kendall_tau"), "spearman": trust.get("spearman"),
                       "n": len(trust.get("trials") or []), "metric": trust.get("metric"),
                       "from_scratch": trust.get("from_scratch"), "line": trust_line(st.user_attrs)},
             "front": _records(front)}
        )  # fmt: skip
    else:
        front = _print_pareto(storage, study, ref, by)
    if csv is not None:
        front.to_csv(csv, index=False)
        (err if as_json else out).print(f"written: {csv}")


@app.command()
def export(
    storage: StorageOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="bundle folder to write")],
    study: StudyOpt = None,
    trial: Annotated[str, typer.Option(help="trial number, or 'knee' for the front's balanced trade-off")] = "knee",
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle folder")] = False,
) -> None:
    """Export a trial as a stand-alone bundle: weights, spec, metrics, ONNX and a loader."""
    from nasplat.export import export_trial, pick_trial
    from nasplat.files import check_output_dir
    from nasplat.search import existing_storage
    from nasplat.study import load_study

    check_output_dir(out_dir, "--out")
    st = load_study(existing_storage(storage), study)
    t = pick_trial(st, trial)
    result = export_trial(st, t, out_dir, overwrite=overwrite)
    out.print(f"[green]exported[/] trial {t.number} ({t.user_attrs.get('arch_string')}) to {result.bundle_dir}")


# ---------------------------------------------------------------------------------------------------- quickstart
@app.command()
def quickstart(
    out_dir: Annotated[Path, typer.Option("--out", help="where the run, study and bundle go")] = Path(
        "nasplat-runs/quickstart"
    ),
    epochs: Annotated[
        int | None, typer.Option(help="supernet training epochs (default: the built-in run file's)")
    ] = None,
    trials: Annotated[int | None, typer.Option(help="search trials (default: the built-in run file's)")] = None,
    n_train: Annotated[int | None, typer.Option(help="training images (default: the built-in run file's)")] = None,
    dataset: Annotated[str | None, typer.Option(help="fashion_mnist (default) or digits")] = None,
    space: Annotated[str | None, typer.Option(help="space name or file (default: nb201-cpu)")] = None,
    trust_archs: Annotated[
        int, typer.Option(min=0, help="architectures trained from scratch to check the estimate (0: skip the check)")
    ] = 6,
) -> None:
    """Train a small cell supernet on Fashion-MNIST, search, print the Pareto front, export the knee and check
    how well the inherited accuracy ranks (a few architectures trained from scratch)."""
    from ._quickstart import run_quickstart

    run_quickstart(
        out_dir,
        epochs=epochs,
        trials=trials,
        n_train=n_train,
        dataset=dataset,
        space=space,
        log=_log,
        console=out,
        trust_archs=trust_archs,
    )


# ---------------------------------------------------------------------------------------------------- more groups
# Command groups that live in their own modules (each defines ``register(app)``; heavy imports stay inside
# the commands so that ``nasplat --help`` stays fast).
_GROUPS = (
    "nasplat.cli._check",
    "nasplat.cli._predictor",
    "nasplat.cli._costs",
    "nasplat.cli._dashboard",
    "nasplat.cli._bench",
    "nasplat.cli._evaluate",
    "nasplat.cli._finetune",
)


def _register_groups() -> None:
    import importlib

    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_groups()


# ---------------------------------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    out.print(escape(msg), highlight=False, soft_wrap=True)


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise NasplatError(f"expected comma-separated numbers, got '{text}'") from None


def _checked_run(run_file: Path, *, training: bool = False) -> RunSpec:
    """The run file, checked as `nasplat check` does: every problem on its own line (stderr), exit 2."""
    from nasplat.search import check_run_file

    problems, run = check_run_file(run_file, training=training)
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems or run is None:
        raise typer.Exit(2)
    return run


def _require_study(storage_url: str, study: str) -> None:
    from nasplat.search import existing_storage
    from nasplat.study import load_study

    load_study(existing_storage(storage_url), study)


def _print_json(doc: Any) -> None:
    """One JSON document on stdout (never wrapped or coloured)."""
    typer.echo(json.dumps(doc, indent=2, default=str))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-able dicts (NaN as null)."""
    return json.loads(frame.to_json(orient="records", default_handler=str)) if len(frame) else []  # type: ignore[no-any-return]


def _pareto(storage: str, study_name: str | None, reference: list[float] | None, by: str):  # type: ignore[no-untyped-def]
    from nasplat.search import existing_storage
    from nasplat.study import load_study, pareto_frame

    st = load_study(existing_storage(storage), study_name)
    front, hv = pareto_frame(st, reference, by=by)
    return st, front, hv


def _print_pareto(storage: str, study_name: str | None, reference: list[float] | None, by: str = "inherited"):  # type: ignore[no-untyped-def]
    from nasplat.export import front_table

    st, front, hv = _pareto(storage, study_name, reference, by)
    ranked = " by fine-tuned values" if by == "finetuned" else ""
    out.print(front_table(st, front, f"Pareto front of '{st.study_name}'{ranked} ({len(front)} trials)"))
    if hv is not None:
        out.print(f"hypervolume: {hv:.6g}")
    from nasplat.study import trust_line

    out.print(trust_line(st.user_attrs), highlight=False)
    return front


def main() -> None:
    try:
        app()
    except NasplatError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:  # settings validated outside a file (should name their file; this is the net)
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        err.print(f"[red]error:[/] {escape(exc.title)} at '{escape(where)}': {escape(e['msg'])}", highlight=False)
        sys.exit(2)
    except OSError as exc:  # the net for a file that could not be read or written (most are checked up front)
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[red]error:[/] {escape(where + (exc.strerror or str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished trials and checkpoints are kept; run the same command again to continue")
        sys.exit(130)
    except SystemExit as exc:  # typer turns Ctrl+C into a silent exit 130
        if exc.code == 130:
            err.print("interrupted: finished trials and checkpoints are kept; run the same command again to continue")
        raise


if __name__ == "__main__":
    main()
