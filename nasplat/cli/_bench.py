"""``nasplat bench``: searches on tabular benchmarks, for comparing samplers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

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

    from nasplat.search import (
        BenchObjective,
        TableFront,
        joined_table,
        mean_sem,
        parse_seeds,
        run_tabular,
        score_runs,
        temp_dir,
        write_jsonl,
    )
    from nasplat.space import load_space

    sp = load_space(space)
    objs = [BenchObjective.parse(o) for o in objective]
    seed_list = parse_seeds(seeds)
    path = joined_table(table, arch_column, temp_dir())
    front = TableFront.of_table(sp, path, arch_column, objs) if len(objs) > 1 else None
    kept: list[dict[str, Any]] = []

    def keep(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for r in records:
            kept.append(r)
            yield r

    records = run_tabular(sp, path, arch_column, objs, sampler, budget, seed_list, storage=storage)
    n = write_jsonl(keep(records), out)
    console = Console()
    console.print(f"{n} evaluations ({len(seed_list)} seeds × {budget}) written to {out}")
    if front is not None:
        scores = score_runs(front, sp, kept, [budget])[budget]
        hv, hv_sem = mean_sem(scores["hv_ratio"])
        share, share_sem = mean_sem(scores["front_share"])
        ref = ", ".join(f"{c} {v:g}" for c, v in zip(front.columns, front.reference, strict=True))
        console.print(
            f"after {budget} evaluations, mean ± sem over {len(scores['hv_ratio'])} seeds:\n"
            f"  hypervolume ratio (median reference: {ref}): {hv:.4f} ± {hv_sem:.4f}\n"
            f"  share of the true front found ({len(front.front_keys)} cells): "
            f"{100 * share:.1f} % ± {100 * share_sem:.1f} %",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
