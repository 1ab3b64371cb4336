"""``nasplat evaluate``: inherited-weight metrics of a list of architectures from a supernet checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasplat.errors import NasplatError


def read_archs(space: Any, path: Path, column: str = "arch") -> list[Any]:
    """Architectures from a CSV (a column of the family's strings or keys) or a YAML list (choice mappings or
    strings). Read through :mod:`nasplat.files`; errors name the file and the row; an empty list is an error."""
    from nasplat.files import read_csv, read_yaml

    archs = []
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(path)
        if not isinstance(data, list):
            raise NasplatError(f"{path}: expected a list of architectures (choice mappings or strings)")
        if not data:
            raise NasplatError(f"{path}: the list is empty; expected at least one architecture")
        for i, item in enumerate(data):
            try:
                archs.append(space.make(item) if isinstance(item, dict) else space.from_string(str(item)))
            except NasplatError as exc:
                raise NasplatError(f"{path}: item {i}: {exc}") from None
        return archs
    frame = read_csv(path, [column], as_text=True)
    for i, text in enumerate(frame[column]):
        try:
            archs.append(space.from_string(text))
        except NasplatError as exc:
            raise NasplatError(f"{path}: row {i + 2}: {exc}") from None
    return archs


def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint folder, or a training run folder (its latest)")],
    archs: Annotated[Path, typer.Option(help="CSV with an 'arch' column (family strings or keys) or a YAML list")],
    out: Annotated[Path, typer.Option(help="CSV to write: arch, key, then every metric")],
    dataset: Annotated[
        str | None, typer.Option(help="dataset (default: the one the checkpoint was trained on)")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="space name or YAML (default: the checkpoint's space by name)")
    ] = None,
    n_val: Annotated[int, typer.Option(min=1, help="validation images held out of the train split")] = 1000,
    n_train: Annotated[int | None, typer.Option(min=1, help="train-split images (as in the run file)")] = None,
    data_seed: Annotated[int, typer.Option(help="seed of the train/val split (as in the run file)")] = 0,
    calib_batches: Annotated[int, typer.Option(min=0, help="BatchNorm recalibration batches per subnet")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="evaluation batch size")] = 256,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors (each loads the checkpoint once)")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="join this Ray cluster")] = None,
    column: Annotated[str, typer.Option(help="CSV column holding the architectures")] = "arch",
) -> None:
    """Evaluate architectures with weights inherited from a supernet checkpoint; write their metrics as CSV."""
    import time

    import pandas as pd
    from rich.console import Console

    from nasplat.datasets import DataSpec
    from nasplat.files import check_output_file
    from nasplat.model import read_checkpoint_state, resolve_checkpoint
    from nasplat.space import load_space

    check_output_file(out, "--out")
    ckpt = resolve_checkpoint(checkpoint)
    state = read_checkpoint_state(ckpt)
    sp = load_space(space or str(state.get("space_name")))
    if sp.hash != state.get("space_hash"):
        raise NasplatError(
            f"{ckpt}: checkpoint is of space '{state.get('space_name')}' (hash {state.get('space_hash')}), "
            f"not '{sp.name}' (hash {sp.hash}); pass --space with the file it was trained on"
        )
    data = DataSpec(
        name=dataset or str((state.get("data") or {}).get("name")),
        n_val=n_val,
        n_train=n_train,
        seed=data_seed,
        batch_size=batch_size,
    )
    todo = read_archs(sp, archs, column)
    options = {"checkpoint": ckpt, "data": data, "calib_batches": calib_batches, "eval_batch_size": batch_size}
    t0 = time.perf_counter()
    if workers > 1 or ray_address:
        from nasplat.measure import RayPoolEstimator

        estimator: Any = RayPoolEstimator(sp, "supernet", options, workers=workers, address=ray_address)
    else:
        from nasplat import registry

        estimator = registry.get("estimator", "supernet")(sp, **options)
    try:
        rows = estimator.evaluate(todo)
    finally:
        if hasattr(estimator, "close"):
            estimator.close()
    frame = pd.DataFrame([{"arch": sp.to_string(a), "key": a.key, **r} for a, r in zip(todo, rows)])
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    seconds = time.perf_counter() - t0
    Console().print(f"{len(todo)} architectures evaluated in {seconds:.1f} s, written to {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_cmd)
