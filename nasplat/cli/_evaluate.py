"""``nasplat evaluate``: score a list of architectures with any registered estimator, outside a search.

The estimator is built through :func:`nasplat.search.build_estimator` (the one factory a search run uses too:
unknown options are refused, naming the allowed ones). ``--option KEY=VALUE`` values are YAML scalars (flow
lists and mappings are accepted too). The command-line flags fill the estimator's options it takes:
``--checkpoint`` its ``checkpoint`` (the supernet's, required for it; the checkpoint also tells the default
space and dataset), ``--dataset``/``--n-val``/``--n-train``/``--data-seed``/``--batch-size`` its ``data``
(a :class:`~nasplat.datasets.DataSpec`; CIFAR-10 from the shared data folder by default where the estimator
requires data), ``--batch-size`` its ``eval_batch_size`` (else its ``batch_size``), ``--calib-batches`` its ``calib_batches``. A flag
the estimator has no use for is refused, never dropped.

The output is a CSV: ``arch``, ``key``, one column per metric of the estimator, then ``estimator`` and
``options`` (the options as JSON), row by row in the order of the input. Each row is appended and flushed to
disk as soon as it is scored, so a kill loses at most the row in progress (a half-written last line is
dropped on the next run). Running the same command again keeps the rows already there and scores only the
rest; an output written with another estimator, other options or another list of architectures is refused
in one line before any work.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from nasplat.errors import NasplatError

#: Columns every output has, around the estimator's metric columns.
LEAD = ("arch", "key")
TAIL = ("estimator", "options")
DEFAULT_DATASET = "cifar10"


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


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a mapping, each value read as YAML (``3`` int, ``0.5`` float, ``true`` bool,
    anything else a string); one line naming the pair for a malformed one or a key given twice."""
    from nasplat.files import parse_yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise NasplatError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option calib_batches=5")
        if key in options:
            raise NasplatError(f"--option {key}: given more than once")
        options[key] = parse_yaml(text, f"--option {key}") if text.strip() else ""
    return options


def _parameters(component: Any) -> dict[str, inspect.Parameter]:
    """The keyword parameters the component is built with (its options), by name."""
    try:
        params = inspect.signature(component).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _takes_dataspec(param: inspect.Parameter) -> bool:
    return "DataSpec" in str(param.annotation)


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def options_text(options: dict[str, Any]) -> str:
    """The options as they are stored in the output's ``options`` column (JSON, keys sorted)."""
    return json.dumps(options, sort_keys=True, default=_json_default)


def resolve_options(
    name: str,
    options: dict[str, Any],
    *,
    checkpoint: Path | None,
    dataset: str | None,
    n_val: int | None,
    n_train: int | None,
    data_seed: int | None,
    batch_size: int | None,
    calib_batches: int | None,
    space: str | None,
) -> tuple[dict[str, Any], str]:
    """The estimator's options with the flags filled in, and the space to load; every misfit is one line."""
    from nasplat import registry

    component = registry.get("estimator", name)
    registry.check_options("estimator", name, options, fixed=("space",))
    params = _parameters(component)
    params.pop("space", None)
    allowed = ", ".join(params) or "(none)"
    opts = dict(options)

    def fill(flag: str, option: str, value: Any) -> None:
        if value is None:
            return
        if option not in params:
            raise NasplatError(f"{flag}: estimator '{name}' takes no '{option}' option; its options: {allowed}")
        if option in opts:
            raise NasplatError(f"{flag}: the estimator's '{option}' is also given by --option; give it once")
        opts[option] = value

    state: dict[str, Any] = {}
    if checkpoint is not None:
        fill("--checkpoint", "checkpoint", checkpoint)
    ckpt_param = params.get("checkpoint")
    if "checkpoint" in opts:
        from nasplat.model import read_checkpoint_state, resolve_checkpoint

        ckpt = resolve_checkpoint(Path(str(opts["checkpoint"])))
        state = read_checkpoint_state(ckpt)
        opts["checkpoint"] = ckpt.resolve()
    elif ckpt_param is not None and ckpt_param.default is inspect.Parameter.empty:
        raise NasplatError(
            f"--checkpoint: estimator '{name}' needs a supernet checkpoint (a checkpoint folder or a training run "
            "folder); pass --checkpoint PATH"
        )
    fill("--calib-batches", "calib_batches", calib_batches)
    batch_option = next((o for o in ("eval_batch_size", "batch_size") if o in params), None)
    if batch_size is not None and batch_option is not None:
        fill("--batch-size", batch_option, batch_size)
        batch_size_used = True
    else:
        batch_size_used = False

    data_param = params.get("data")
    data_flags = {"--n-val": n_val, "--n-train": n_train, "--data-seed": data_seed}
    if data_param is not None and _takes_dataspec(data_param):
        batch_size_used |= _fill_dataspec(opts, data_param, state, dataset, n_val, n_train, data_seed, batch_size)
    else:
        if data_param is not None and dataset is not None:
            fill("--dataset", "data", dataset)  # an estimator that takes its data by name
            dataset = None
        for flag, value in [("--dataset", dataset), *data_flags.items()]:
            if value is not None:
                why = "takes no data" if data_param is None else "takes its data by name only (--dataset)"
                raise NasplatError(f"{flag}: estimator '{name}' {why}; its options: {allowed}")
    if batch_size is not None and not batch_size_used:
        raise NasplatError(f"--batch-size: estimator '{name}' takes no batch size; its options: {allowed}")
    space_name = space or (str(state["space_name"]) if state.get("space_name") else None)
    if space_name is None:
        raise NasplatError("--space: give the space of the architectures (a registered name or a YAML file)")
    return opts, space_name


def _fill_dataspec(
    opts: dict[str, Any],
    param: inspect.Parameter,
    state: dict[str, Any],
    dataset: str | None,
    n_val: int | None,
    n_train: int | None,
    data_seed: int | None,
    batch_size: int | None,
) -> bool:
    """Set ``opts["data"]`` to a DataSpec from ``--option data=`` (a name or a mapping of its fields), the data
    flags, the checkpoint's dataset and the defaults; False when the estimator keeps its own default data."""
    from pydantic import ValidationError

    from nasplat.datasets import DataSpec

    given = opts.pop("data", None)
    flags = {"name": dataset, "n_val": n_val, "n_train": n_train, "seed": data_seed, "batch_size": batch_size}
    flags = {k: v for k, v in flags.items() if v is not None}
    if isinstance(given, DataSpec):
        given = given.model_dump()
    if given is None and not flags and param.default is not inspect.Parameter.empty:
        return False
    if given is not None and not isinstance(given, (str, dict)):
        raise NasplatError(f"--option data: expected a dataset name or a mapping of its fields, got {given!r}")
    if isinstance(given, str) and dataset is not None:
        raise NasplatError("--dataset: the dataset is also given by --option data; give it once")
    fields = {"name": given} if isinstance(given, str) else dict(given or {})
    fields.setdefault("name", str((state.get("data") or {}).get("name") or DEFAULT_DATASET))
    try:
        opts["data"] = DataSpec.model_validate({"n_val": 1000, "batch_size": 256, **fields, **flags})
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise NasplatError(f"--option data: at '{where}': {e['msg']}") from None
    return True


# -------------------------------------------------------------------------------------------------- the output
def _read_output(out: Path) -> tuple[list[str] | None, list[list[str]], bool]:
    """(header, complete rows, whether a half-written last line was dropped) of an earlier output."""
    if not out.is_file():
        return None, [], False
    try:
        text = out.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise NasplatError(f"--out {out}: exists and is not a CSV written by nasplat evaluate (not UTF-8)") from None
    cut = text.rfind("\n") + 1
    partial = cut < len(text)
    try:
        table = list(csv.reader(io.StringIO(text[:cut])))
    except csv.Error as exc:
        raise NasplatError(f"--out {out}: cannot read it as CSV ({exc}); delete it to start over") from None
    if not table:
        return None, [], partial
    header, rows = table[0], table[1:]
    return header, rows, partial


def check_output(
    out: Path, header: list[str] | None, rows: list[list[str]], name: str, opts_text: str, archs: Sequence[Any]
) -> None:
    """An earlier output must be of this estimator, these options and (a prefix of) these architectures."""
    if header is None:
        return
    if tuple(header[: len(LEAD)]) != LEAD or tuple(header[-len(TAIL) :]) != TAIL:
        raise NasplatError(
            f"--out {out}: exists and is not an output of nasplat evaluate (columns: {', '.join(header)}; "
            f"expected {', '.join(LEAD)}, the metrics, {', '.join(TAIL)}); pass another --out or delete it"
        )
    if len(rows) > len(archs):
        raise NasplatError(
            f"--out {out}: holds {len(rows)} rows but --archs lists {len(archs)} architectures; it is the output "
            "of another list: pass another --out or delete it"
        )
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise NasplatError(
                f"--out {out}: row {i + 2} has {len(row)} fields, the header {len(header)}; the file is damaged: "
                "delete it to start over"
            )
        if row[-2] != name or row[-1] != opts_text:
            raise NasplatError(
                f"--out {out}: row {i + 2} holds scores of estimator '{row[-2]}' with options {row[-1]}, not of "
                f"'{name}' with {opts_text}; pass another --out, or delete it to start over"
            )
        if row[1] != archs[i].key:
            raise NasplatError(
                f"--out {out}: row {i + 2} is architecture '{row[0]}' but row {i + 2} of --archs is another; it is "
                "the output of another list: pass another --out or delete it"
            )


def check_metrics(out: Path, header: list[str] | None, metrics: Sequence[str], name: str) -> None:
    if header is None:
        return
    have = header[len(LEAD) : -len(TAIL)]
    if list(have) != list(metrics):
        raise NasplatError(
            f"--out {out}: has metric columns {', '.join(have) or '(none)'} but estimator '{name}' gives "
            f"{', '.join(metrics)}; pass another --out or delete it"
        )


def _write_atomically(out: Path, rows: Sequence[Sequence[str]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))


def _progress(total: int) -> Any:
    import sys

    if not sys.stdout.isatty():
        from nasplat.train import LineProgress

        return LineProgress(unit="architectures")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


# -------------------------------------------------------------------------------------------------- the command
class _EvaluateCommand(TyperCommand):
    """Lists the registered estimators in ``--help`` (read when help is shown, so other commands load no plugin)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from nasplat import registry

        names = ", ".join(registry.available("estimator"))
        for param in self.params:
            if param.name == "estimator" and hasattr(param, "help"):
                param.help = f"registered estimator: {names}"
        super().format_help(ctx, formatter)


def evaluate_cmd(
    archs: Annotated[Path, typer.Option(help="CSV with an 'arch' column (family strings or keys) or a YAML list")],
    out: Annotated[Path, typer.Option(help="CSV to write: arch, key, a column per metric, estimator, options")],
    estimator: Annotated[str, typer.Option(help="registered estimator")] = "supernet",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="estimator option KEY=VALUE (value read as YAML), repeatable"),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="supernet checkpoint folder, or a training run folder (its latest); required by supernet, combined"
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="dataset (default: the checkpoint's, else cifar10 where the estimator needs data)"),
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="space name or YAML (default: the checkpoint's space by name)")
    ] = None,
    n_val: Annotated[int | None, typer.Option(min=1, help="validation images held out of the train split")] = None,
    n_train: Annotated[int | None, typer.Option(min=1, help="train-split images (as in the run file)")] = None,
    data_seed: Annotated[int | None, typer.Option(help="seed of the train/val split (as in the run file)")] = None,
    calib_batches: Annotated[
        int | None, typer.Option(min=0, help="BatchNorm recalibration batches per subnet (supernet: 10)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="evaluation batch size (default 256)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors (each builds the estimator once)")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="join this Ray cluster")] = None,
    column: Annotated[str, typer.Option(help="CSV column holding the architectures")] = "arch",
) -> None:
    """Score architectures with a registered estimator (default: weights inherited from a supernet checkpoint);
    write a row per architecture, a column per metric. Run it again to continue an interrupted run."""
    import time

    from rich.console import Console

    from nasplat import registry
    from nasplat.files import check_output_file
    from nasplat.search import build_estimator
    from nasplat.space import load_space

    console = Console()
    check_output_file(out, "--out")
    opts, space_name = resolve_options(
        estimator, parse_options(option or []), checkpoint=checkpoint, dataset=dataset, n_val=n_val,
        n_train=n_train, data_seed=data_seed, batch_size=batch_size, calib_batches=calib_batches, space=space,
    )  # fmt: skip
    sp = load_space(space_name)
    if "checkpoint" in opts:
        from nasplat.model import read_checkpoint_state

        state = read_checkpoint_state(opts["checkpoint"])
        if state.get("space_hash") is not None and sp.hash != state.get("space_hash"):
            raise NasplatError(
                f"{opts['checkpoint']}: checkpoint is of space '{state.get('space_name')}' (hash "
                f"{state.get('space_hash')}), not '{sp.name}' (hash {sp.hash}); pass --space with the file it "
                "was trained on"
            )
    todo = read_archs(sp, archs, column)
    opts_text = options_text(opts)
    header, rows, partial = _read_output(out)
    check_output(out, header, rows, estimator, opts_text, todo)
    declared = registry.get("estimator", estimator).declared_metrics(sp, opts)
    if declared is not None:
        check_metrics(out, header, list(declared), estimator)
    done = len(rows)
    if done:
        console.print(f"resuming: {done} of {len(todo)} done (kept in {out})", highlight=False)
    if done == len(todo):
        console.print(f"all {len(todo)} architectures are already scored in {out}", highlight=False)
        return

    t0 = time.perf_counter()
    est = build_estimator(sp, estimator, opts, workers=workers, ray_address=ray_address)
    try:
        metrics = list(est.metrics())
        check_metrics(out, header, metrics, estimator)
        if header is None or partial:
            _write_atomically(out, [[*LEAD, *metrics, *TAIL], *rows])
        chunk = max(1, workers)
        with out.open("a", encoding="utf-8", newline="") as f, _progress(len(todo)) as bar:
            writer = csv.writer(f, lineterminator="\n")
            task = bar.add_task(f"{estimator}", total=len(todo), completed=done)
            for start in range(done, len(todo), chunk):
                batch = todo[start : start + chunk]
                for arch, scores in zip(batch, est.evaluate(batch), strict=True):
                    writer.writerow(
                        [sp.to_string(arch), arch.key, *(_number(scores.get(m)) for m in metrics), estimator, opts_text]
                    )
                f.flush()
                os.fsync(f.fileno())
                bar.update(task, completed=start + len(batch))
    finally:
        if hasattr(est, "close"):
            est.close()
    seconds = time.perf_counter() - t0
    console.print(
        f"{len(todo) - done} architectures evaluated in {seconds:.1f} s"
        + (f" ({done} kept from the earlier run)" if done else "")
        + f", written to {out}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=_EvaluateCommand)(evaluate_cmd)
