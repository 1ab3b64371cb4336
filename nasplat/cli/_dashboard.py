"""``nasplat dashboard``: serve the dashboards of a study storage in a browser (read-only).

The app itself lives in a plugin (``nasplat_dashboards`` registers the ``dashboard`` named ``dash``); the core
reaches it through the registry only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        storage: Annotated[
            str, typer.Option("--storage", help="SQLAlchemy URL of the study storage, e.g. sqlite:///study.db")
        ],
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="port to serve on")] = 8050,
        host: Annotated[
            str,
            typer.Option("--host", help="address to bind; the default serves this machine only (no authentication!)"),
        ] = "127.0.0.1",
        refresh: Annotated[
            float, typer.Option("--refresh", min=0.5, help="seconds between checks for new results")
        ] = 5.0,
        export_dir: Annotated[
            Path, typer.Option("--export-dir", help="folder the page's export action writes bundles into")
        ] = Path("nasplat-exports"),
        preload: Annotated[
            bool, typer.Option("--preload/--no-preload", help="read the latest study before serving the first page")
        ] = True,
    ) -> None:
        """Serve the dashboards of a storage (read-only, refreshed live): studies, Pareto fronts, trials, export."""
        from nasplat import registry
        from nasplat.errors import NasplatError, UnknownNameError
        from nasplat.search import require_existing_storage

        require_existing_storage(storage)  # read-only: never create an empty database for a mistyped path
        try:
            serve = registry.get("dashboard", "dash")
        except UnknownNameError as exc:
            if exc.allowed:
                raise
            raise NasplatError(
                "no dashboard is installed (the nasplat_dashboards plugin registers one); "
                "install nasplat with its 'dashboard' extra"
            ) from None
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(
                f"warning: serving on {host}: anyone who can reach it sees every study and can write export bundles "
                f"into {export_dir} (there is no authentication)",
                err=True,
            )
        serve(
            storage, host=host, port=port, refresh_s=refresh, export_dir=export_dir, preload_latest=preload,
            echo=typer.echo,
        )  # fmt: skip
