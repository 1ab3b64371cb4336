"""nasplat's Dash dashboards (package ``nasplat_dashboards``): data extraction and figures, kept apart.

Registered through the ``nasplat.plugins`` entry point as the ``dashboard`` named ``dash``; the core (``nasplat
dashboard``) reaches it through the registry. Importing this package stays light: Dash and plotly are imported
only when the app is built.

- :mod:`.data`: read-only extraction from an Optuna storage (``*_frame(storage, ...) -> DataFrame``);
- :mod:`.figures`: plotly figures from those frames (``*_figure(frame)``);
- :mod:`.app`: the Dash app and its server; :mod:`.demo`: a small real search to look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasplat.registry import register


@register("dashboard", "dash")
def serve(storage_url: str, *, host: str = "127.0.0.1", port: int = 8050, refresh_s: float = 5.0,
          export_dir: Path | str = "nasplat-exports", preload_latest: bool = True,
          echo: Any = print) -> None:  # fmt: skip
    """Serve the Dash dashboard for ``storage_url`` (read-only) until interrupted."""
    from nasplat.errors import NasplatError

    try:
        from .app import serve as _serve
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("dash", "plotly", "flask", "werkzeug"):
            raise NasplatError(
                f"the dashboard needs '{exc.name}', which is not installed: pip install 'nasplat[dashboard]'"
            ) from None
        raise
    _serve(storage_url, host=host, port=port, refresh_s=refresh_s, export_dir=export_dir,
           preload_latest=preload_latest, echo=echo)  # fmt: skip
