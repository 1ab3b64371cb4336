"""``nasplat bench``: searches on tabular benchmarks, for comparing samplers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmark samplers on tabular benchmarks.", no_args_is_help=True)


@bench_app.command("tabular")
def tabular(
    table: Annotated[
        list[Path], typer.Option("--table", help="CSV of architectures and metrics (repeat to join tables)")
    ],
    space: Annotated[str, typer.Option(help="space the table's architectures belong to (name or YAML)")],
    objective: Annotated[list[str], typer.Option("--objective", help="COLUMN:max or COLUMN:min (repeat)")],
    out: Annotated[Path, typer.Option(help="trajectories, one JSON line per evaluation")],
    arch_column: Annotated[str, typer.Option(help="column holding the architecture strings")] = "arch",
    sampler: Annotated[str, typer.Option(help="sampler name (nasplat's best by default)")] = "guided",
    budget: Annotated[int, typer.Option(min=1, help="distinct architectures evaluated per seed")] = 100,
    seeds: Annotated[str, typer.Option(help="e.g. 0-19")] = "0-4",
    storage: Annotated[str | None, typer.Option(help="also keep each seed's run as a study here")] = None,
) -> None:
    """Run a sampler on a table for several seeds and write every evaluation it makes."""
    from rich.console import Console

    from nasplat.search import BenchObjective, joined_table, parse_seeds, run_tabular, temp_dir, write_jsonl
    from nasplat.space import load_space

    sp = load_space(space)
    objs = [BenchObjective.parse(o) for o in objective]
    seed_list = parse_seeds(seeds)
    path = joined_table(table, arch_column, temp_dir())
    records = run_tabular(sp, path, arch_column, objs, sampler, budget, seed_list, storage=storage)
    n = write_jsonl(records, out)
    Console().print(f"{n} evaluations ({len(seed_list)} seeds × {budget}) written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
