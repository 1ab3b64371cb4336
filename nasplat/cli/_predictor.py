"""``nasplat predictor fit`` and ``nasplat predictor predict``: predictors from tables, on the command line.

Predictors are looked up in the registry by name (the core never imports a plugin folder). A fitted
predictor is a folder (see :mod:`nasplat.measure._predictor`); ``predict`` needs nothing else, since the folder holds
the space's declaration and, when ``--prior`` was given, a copy of the prior table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from nasplat.errors import NasplatError


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False)


def _check_out_dir(out: Path) -> None:
    """A new or empty folder, or one holding a saved predictor (which is replaced)."""
    from nasplat.files import check_output_dir
    from nasplat.measure import MANIFEST

    if out.exists() and not out.is_dir():
        raise NasplatError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise NasplatError(f"--out {out}: folder is not empty and holds no saved predictor; choose another folder")
    check_output_dir(out.parent if out.is_dir() else out, "--out")  # replacing it needs its parent writable


def _check_varies(y: Any, table: Path, target: str) -> None:
    """A target that is the same in every row gives a predictor nothing to learn (and rank metrics no order)."""
    if len(y) > 1 and float(y.min()) == float(y.max()):
        raise NasplatError(
            f"{table}: column '{target}' holds the same value ({y[0]:g}) in all {len(y)} rows; "
            "a predictor needs targets that vary"
        )


def read_priors(space: Any, paths: Sequence[Path], arch_column: str, target: str, needed: Sequence[Any]) -> Any:
    """One :class:`~nasplat.measure.PriorTable` from one or more ``--prior`` tables, joined on ``arch_column``.

    Every column but the architecture column and the target must be numeric (a non-numeric one is an error, not
    skipped); a column name may appear in only one table; the join keeps the architectures every table holds,
    and it must hold every measured architecture (``needed``), since the predictors price a measured cell
    against the prior devices' values of that cell.
    """
    import pandas as pd

    from nasplat.files import read_csv
    from nasplat.measure import PriorTable, archs_from_column

    joined: pd.DataFrame | None = None
    owner: dict[str, Path] = {}
    for path in paths:
        frame = read_csv(path, [arch_column])
        cols = [c for c in frame.columns if c not in (arch_column, target)]
        for c in cols:
            values = pd.to_numeric(frame[c], errors="coerce")
            bad = values.isna() & frame[c].notna()
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise NasplatError(
                    f"{path}: prior column '{c}' must hold numbers; row {row + 2} holds {frame[c].iloc[row]!r}"
                )
            if c in owner:
                raise NasplatError(f"{path}: prior column '{c}' is also in {owner[c]}; give each device once")
            owner[c] = path
            frame[c] = values
        frame = frame[[arch_column, *cols]]
        if frame[arch_column].duplicated().any():
            dup = frame[arch_column][frame[arch_column].duplicated()].iloc[0]
            raise NasplatError(f"{path}: architecture {dup!r} appears more than once")
        joined = frame if joined is None else joined.merge(frame, on=arch_column, how="inner")
    assert joined is not None
    source = " + ".join(map(str, paths))
    if joined.empty:
        raise NasplatError(f"{source}: the prior tables have no architecture in common")
    columns = [c for c in joined.columns if c != arch_column]
    prior = PriorTable(space, joined, arch_column, columns, source)
    known = set(archs_from_column(space, list(joined[arch_column]), source))
    missing = [a for a in needed if a not in known]
    if missing:
        raise NasplatError(
            f"{source}: {len(missing)} of the {len(needed)} measured architectures are not in the prior table, "
            f"e.g. '{space.to_string(missing[0])}'; the prior must hold every measured architecture"
        )
    return prior


def fit_from_table(
    space_name: str,
    table: Path,
    arch_column: str,
    target: str,
    model: str,
    out: Path,
    prior: Path | Sequence[Path] | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """What ``nasplat predictor fit`` does; returns a summary (also usable from Python)."""
    import shutil

    from nasplat import registry
    from nasplat.files import read_csv
    from nasplat.measure import archs_from_column, target_values, update_manifest
    from nasplat.space import load_space

    cls = registry.get("predictor", model)  # unknown names list the registered ones
    _check_out_dir(out)
    space = load_space(space_name)
    frame = read_csv(table, [arch_column, target])
    y = target_values(frame, target, str(table))
    _check_varies(y, table, target)
    archs = archs_from_column(space, list(frame[arch_column]), f"{table}: column '{arch_column}'")
    prior_table = None
    extra = None
    predictor = cls()
    t0 = time.perf_counter()
    priors = [prior] if isinstance(prior, Path | str) else list(prior or [])
    if priors:
        prior_table = read_priors(space, [Path(p) for p in priors], arch_column, target, archs)
        if cls.pretrains_on_prior:
            prior_archs, prior_values = prior_table.rows()
            predictor.pretrain(space, prior_archs, prior_values, prior_table.columns)
        else:
            extra = prior_table.features(archs)
    predictor.fit(space, archs, y, seed=seed, extra=extra)
    seconds = time.perf_counter() - t0
    if out.is_dir():  # replace a previous predictor completely (stale member folders, prior copies)
        shutil.rmtree(out)
    predictor.save(out)
    entries: dict[str, object] = {
        "target": target,
        "table": str(table),
        "arch_column": arch_column,
        "fit_seconds": seconds,
        "prior": prior_table.save(out) if prior_table is not None else None,
        "prior_use": ("pretrained" if cls.pretrains_on_prior else "features") if prior_table is not None else None,
    }
    update_manifest(out, **entries)
    summary: dict[str, object] = {"model": model, "rows": len(y), "target": target, "seconds": seconds, "out": str(out)}
    chosen = getattr(predictor, "chosen_label", None)
    if chosen:
        summary["chosen"] = chosen
    if prior_table is not None:
        summary["prior_columns"] = prior_table.columns
    return summary


def predict_from_table(model_dir: Path, table: Path, arch_column: str, out: Path) -> dict[str, object]:
    """What ``nasplat predictor predict`` does; returns a summary (with rank quality when the query table
    holds the target column the predictor was fitted on)."""
    from nasplat.files import check_output_file, read_csv
    from nasplat.measure import (
        PriorTable,
        archs_from_column,
        load_predictor,
        prediction_quality,
        read_manifest,
        space_from_manifest,
    )

    check_output_file(out, "--out")
    manifest = read_manifest(model_dir)
    space = space_from_manifest(model_dir)
    predictor = load_predictor(model_dir)
    frame = read_csv(table, [arch_column])
    archs = archs_from_column(space, list(frame[arch_column]), f"{table}: column '{arch_column}'")
    extra = None
    if manifest.get("prior") and manifest.get("prior_use") != "pretrained":
        extra = PriorTable.load(space, model_dir, manifest["prior"]).features(archs)
    mean, std = predictor.predict(space, archs, extra=extra)
    result = frame.copy()
    result["predicted"] = mean
    if std is not None:
        result["predicted_std"] = std
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    summary: dict[str, object] = {"rows": len(result), "out": str(out), "model": manifest.get("model")}
    target = manifest.get("target")
    if isinstance(target, str) and target in frame.columns:
        import pandas as pd

        truth = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=float)
        summary["quality"] = {"target": target, **prediction_quality(truth, mean)}
    return summary


def register(app: typer.Typer) -> None:
    predictor_app = typer.Typer(
        help="Fit accuracy/latency predictors on tables of measured architectures, and predict with them.",
        no_args_is_help=True,
    )
    app.add_typer(predictor_app, name="predictor")

    @predictor_app.command("fit")
    def fit(
        space: Annotated[str, typer.Option("--space", help="space name or YAML file the architectures belong to")],
        table: Annotated[Path, typer.Option("--table", help="training table (CSV)")],
        target: Annotated[str, typer.Option("--target", help="column to predict (e.g. val_acc, latency_ms)")],
        model: Annotated[str, typer.Option("--model", help="predictor name, e.g. auto, gbdt, mlp, mlp_rank, gp")],
        out: Annotated[Path, typer.Option("--out", help="folder to write the fitted predictor into")],
        arch_column: Annotated[str, typer.Option("--arch-column", help="column holding architecture strings")] = "arch",
        prior: Annotated[
            list[Path] | None,
            typer.Option(
                "--prior",
                help="table of prior measurements per architecture (e.g. latency on other devices), every column "
                "but the target numeric; give it more than once to join tables on the architecture column. "
                "fewshot_latency pre-trains on every row; other predictors take the log values as features",
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="seed of the fit")] = 0,
    ) -> None:
        """Fit a predictor of TARGET from a table of architectures and save it into a folder."""
        s = fit_from_table(space, table, arch_column, target, model, out, prior, seed)
        con = _console()
        chosen = f" (chose {s['chosen']})" if "chosen" in s else ""
        priors = f", prior columns: {', '.join(map(str, s['prior_columns']))}" if "prior_columns" in s else ""  # type: ignore[call-overload]
        con.print(
            f"fitted '{s['model']}'{chosen} on {s['rows']} rows of '{s['target']}'{priors} in {s['seconds']:.1f} s"
        )
        con.print(f"saved: {s['out']}")

    @predictor_app.command("predict")
    def predict(
        model: Annotated[Path, typer.Option("--model", help="folder written by 'nasplat predictor fit'")],
        table: Annotated[Path, typer.Option("--table", help="query table (CSV)")],
        out: Annotated[
            Path, typer.Option("--out", help="CSV to write: the query rows plus predicted (and predicted_std)")
        ],
        arch_column: Annotated[str, typer.Option("--arch-column", help="column holding architecture strings")] = "arch",
    ) -> None:
        """Predict for every row of a table; writes the rows with 'predicted' (and 'predicted_std')."""
        s = predict_from_table(model, table, arch_column, out)
        con = _console()
        con.print(f"predicted {s['rows']} rows with '{s['model']}': {s['out']}")
        q = s.get("quality")
        if isinstance(q, dict):
            con.print(
                f"rank agreement with '{q['target']}' in the table: Kendall tau {q['kendall_tau']:.3f}, "
                f"Spearman {q['spearman']:.3f}"
            )
