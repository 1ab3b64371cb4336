"""``nasplat profile``, ``nasplat cost`` and ``nasplat cost-models``: hardware cost models from the command line.

The cost models are looked up in the registry by name (the core never imports a plugin folder); ``profile``
asks the ``lut`` cost model to build a lookup table (its class has a ``build`` method).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nasplat.errors import NasplatError


def _parse_options(options: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars or lists (``3``, ``0.5``, ``true``, ``[a, b]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NasplatError(f"--option expects KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def make_cost_model(name: str, options: dict[str, Any]) -> Any:
    """The registered cost model ``name`` built with ``options``; unknown options list the allowed ones."""
    from nasplat import registry

    return registry.build("cost_model", name, options=options)


def check_device_option(cm: Any, model: str, device: str | None) -> None:
    """``--device`` must name one of the model's devices, and is refused for a model whose costs have none."""
    try:
        cm.check_device(device)
    except NasplatError as exc:
        raise NasplatError(f"--device {device}: {exc}") from None


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile(
        space: Annotated[str, typer.Option(help="space name or YAML file")],
        device: Annotated[str, typer.Option(help="name to file this machine's table under, e.g. local-cpu")] = (
            "local-cpu"
        ),
        out: Annotated[
            Path | None, typer.Option(help="CSV to write (default: the lut model's table folder, $NASPLAT_LUT_DIR)")
        ] = None,
        engine: Annotated[str, typer.Option(help="eager (PyTorch) or onnxruntime")] = "eager",
        threads: Annotated[int, typer.Option(min=1, help="intra-op threads")] = 1,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 1,
        warmup: Annotated[int, typer.Option(min=0, help="untimed runs per layer")] = 5,
        repeats: Annotated[int, typer.Option(min=1, help="timed blocks per layer")] = 15,
        networks: Annotated[
            int, typer.Option(min=0, help="whole networks measured to fit the per-network overhead")
        ] = 10,
        seed: Annotated[int, typer.Option(help="seed of the sampled networks")] = 0,
    ) -> None:
        """Time every distinct layer configuration of a space on this machine and write a lookup table (CSV)."""
        from rich.console import Console
        from rich.markup import escape

        from nasplat import registry
        from nasplat.space import load_space

        if out is not None:
            from nasplat.files import check_output_file

            check_output_file(out, "--out")
        console = Console()
        sp = load_space(space)
        lut = registry.get("cost_model", "lut")
        path = lut.build(
            sp,
            device,
            out=out,
            engine=engine,
            threads=threads,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            networks=networks,
            seed=seed,
            log=lambda msg: console.print(escape(msg), highlight=False),
        )
        console.print(f"[green]written[/]: {escape(str(path))}", highlight=False)

    @app.command("cost")
    def cost(
        arch: Annotated[str, typer.Argument(help="architecture in the family's string form (or key or JSON)")],
        space: Annotated[str, typer.Option(help="space name or YAML file")],
        model: Annotated[
            str, typer.Option(help="cost model: analytical, measured, measured_onnx, lut, roofline, ...")
        ] = "analytical",
        device: Annotated[str | None, typer.Option(help="device (see `nasplat cost-models`)")] = None,
        table: Annotated[
            list[Path] | None, typer.Option(help="lookup table CSV for the lut model (repeatable)")
        ] = None,
        option: Annotated[
            list[str] | None, typer.Option("--option", help="KEY=VALUE passed to the cost model (repeatable)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Print an architecture's costs from a chosen cost model and device."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from nasplat.space import load_space

        sp = load_space(space)
        a = sp.from_string(arch)
        options = _parse_options(option or [])
        if table:
            options["tables"] = [str(t) for t in table]
        cm = make_cost_model(model, options)
        check_device_option(cm, model, device)
        costs = cm.estimate(sp, a, device)
        if as_json:
            print(json.dumps({"space": sp.name, "arch": sp.to_string(a), "model": model, "device": device, **costs}))
            return
        console = Console()
        console.print(f"{sp.name}: {escape(sp.to_string(a))}", highlight=False, soft_wrap=True)
        t = Table(title=f"{model} · {device or 'any device'}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k, v in costs.items():
            t.add_row(k, f"{v:,.6g}" if abs(v) < 1e6 else f"{v:,.0f}")
        console.print(t)

    @app.command("cost-models")
    def cost_models() -> None:
        """Every registered cost model with its metrics, devices and number formats."""
        from rich.console import Console
        from rich.table import Table

        from nasplat import registry

        t = Table("cost model", "metrics", "devices", "formats")
        for name in registry.available("cost_model"):
            try:
                cm = registry.get("cost_model", name)()
                devices = cm.devices()
                formats = cm.formats(devices[0] if devices else None)
                dev_text = "any" if devices is None else ", ".join(devices) or "(none yet)"
                fmt_text = "any" if formats is None else ", ".join(formats)
                if devices and len(devices) > 1 and formats is not None:
                    per = {d: cm.formats(d) for d in devices}
                    if any(f != formats for f in per.values()):
                        fmt_text = "; ".join(f"{d}: {', '.join(f or ['any'])}" for d, f in per.items())
                t.add_row(name, ", ".join(cm.metrics), dev_text, fmt_text)
            except NasplatError as exc:
                t.add_row(name, "?", f"unavailable: {exc}", "?")
        Console().print(t)
