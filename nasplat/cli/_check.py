"""``nasplat check`` (run and space files, every problem at once), ``nasplat init`` (a starter run file) and
``nasplat samplers`` (the registered samplers and their options): what a first real run needs to go right."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasplat.errors import NasplatError

#: the starter run file ``nasplat init`` writes (the quickstart's search, with comments on every section)
STARTER = "defaults/starter.yaml"


def check(
    files: Annotated[list[Path], typer.Argument(help="run files and space files (told apart by their keys)")],
) -> None:
    """Check run files and space files without loading data or training anything.

    Lists every problem, one line each (file, key, what was expected); exits 2 if there is any, else prints
    one line per file saying what it declares.
    """
    from nasplat.search import check_file

    n_problems = bad_files = 0
    for f in files:
        report = check_file(f)
        for problem in report.problems:
            typer.echo(str(problem), err=True)
        if report.ok:
            typer.echo(report.summary)
        else:
            n_problems += len(report.problems)
            bad_files += 1
    if n_problems:
        typer.echo(f"{n_problems} problem{'s' if n_problems > 1 else ''} in {bad_files} of {len(files)} file(s)")
        raise typer.Exit(2)


def init(
    path: Annotated[Path, typer.Argument(help="run file to write")] = Path("run.yaml"),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter run file (the quickstart's search) to edit, check and run."""
    from importlib import resources

    if path.exists() and not force:
        raise NasplatError(f"{path} already exists; add --force to overwrite it, or give another path")
    if path.parent != Path() and not path.parent.is_dir():
        raise NasplatError(f"{path.parent}: no such folder")
    path.write_text(resources.files("nasplat").joinpath(STARTER).read_text())
    typer.echo(f"written: {path}; check it with `nasplat check {path}`, run it with `nasplat search {path}`")


def samplers() -> None:
    """Every registered sampler with a one-line description and the options a run file may give it."""
    from nasplat import registry
    from nasplat.search import FIXED_OPTIONS, load_components

    load_components()
    rows: list[tuple[str, str, str]] = []
    for name in registry.available("sampler"):
        component = registry.get("sampler", name)
        options = registry.option_names(component, fixed=FIXED_OPTIONS["sampler"])
        rows.append((name, _description(component), "any" if options is None else ", ".join(options) or "(none)"))
    width = max(len(r[0]) for r in rows)
    for name, description, accepted in rows:
        typer.echo(f"{name:<{width}}  {description}")
        typer.echo(f"{'':<{width}}  options: {accepted}")


def _description(component: Any) -> str:
    """The first line of the component's docstring, or of the class its options come from."""
    from nasplat.registry import OPTIONS_OF

    targets = [component]
    if callable(getattr(component, OPTIONS_OF, None)):
        targets.append(getattr(component, OPTIONS_OF)())
    for target in targets:
        doc = (getattr(target, "__doc__", None) or "").strip()
        if doc:
            return doc.splitlines()[0].strip()
    return "(no description)"


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("init")(init)
    app.command("samplers")(samplers)
