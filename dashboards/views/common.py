"""What every view shares: the environment its callbacks read (:class:`ViewEnv`), messages, number formats,
table rows and columns, and the plot container."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nasplat.errors import NasplatError

from .. import data as D

log = logging.getLogger("nasplat.dashboard")

#: builds a component's properties: its defaults, overridden by what the first paint computed
Props = Callable[..., dict[str, Any]]

#: the trials table's page size a client may ask for (anything else is clamped into this range)
PAGE_SIZE_RANGE = (1, 500)
DEFAULT_PAGE_SIZE = 20

TABLE_STYLE: dict[str, Any] = {
    "style_table": {"overflowX": "auto"},
    "style_cell": {"fontSize": 13, "padding": "4px 8px", "fontFamily": "system-ui, sans-serif", "maxWidth": 420,
                   "overflow": "hidden", "textOverflow": "ellipsis"},
    "style_header": {"fontWeight": "600", "backgroundColor": "#f0f2f5"},
    "style_cell_conditional": [{"if": {"column_type": "text"}, "textAlign": "left"}],
}  # fmt: skip


@dataclass(frozen=True)
class ViewEnv:
    """What a view's callbacks read: the storage (read-only), and where the export action writes."""

    storage_url: str
    export_root: Path

    def storage(self) -> D.Storage:
        return D.open_storage(self.storage_url)


def no_props(component: str, **defaults: Any) -> dict[str, Any]:
    """:data:`Props` for a page without a first paint: the defaults."""
    return dict(defaults)


def page_size(value: Any) -> int:
    """The client's page size as an int within :data:`PAGE_SIZE_RANGE` (the default when it is not a number)."""
    try:
        size = int(value) if value is not None else DEFAULT_PAGE_SIZE
    except (TypeError, ValueError, OverflowError):
        size = DEFAULT_PAGE_SIZE
    low, high = PAGE_SIZE_RANGE
    return min(max(size, low), high)


def message(text: str, kind: str = "error") -> Any:
    from dash import html

    return html.Div(text, className=f"message {kind}", role="alert" if kind == "error" else None)


def explain(exc: BaseException) -> str:
    """A user-facing line for an exception (full traceback in the server log for unexpected ones)."""
    if isinstance(exc, NasplatError):
        return str(exc)
    log.exception("unexpected error in a dashboard callback")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected error ({type(exc).__name__}{': ' + first if first else ''}); the server log has the details"


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataTable rows: NaN/inf to None, timestamps to text, other objects to text."""
    out = frame.copy()
    for c in out.columns:
        col = out[c]
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col):
            out[c] = col.dt.strftime("%Y-%m-%d %H:%M:%S").astype(object).where(col.notna(), None)
        elif pd.api.types.is_float_dtype(col):
            out[c] = col.astype(object).where(np.isfinite(col.to_numpy(dtype=float)), None)
        elif col.dtype == object:
            out[c] = col.map(lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else str(v))
    return out.to_dict("records")  # type: ignore[return-value]


def columns(frame: pd.DataFrame, names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    from dash.dash_table.Format import Format, Scheme, Trim

    cols = []
    for c in frame.columns:
        spec: dict[str, Any] = {"name": (names or {}).get(str(c), str(c)), "id": str(c)}
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]):
            spec["type"] = "numeric"
            if pd.api.types.is_float_dtype(frame[c]):
                spec["format"] = Format(precision=6, scheme=Scheme.decimal_or_exponent, trim=Trim.yes)
        else:
            spec["type"] = "text"
        cols.append(spec)
    return cols


def row_trial(rows: list[dict[str, Any]], cell: dict[str, Any]) -> int | None:
    """The trial number of the DataTable row a clicked cell is in."""
    row = cell.get("row", -1)
    return int(rows[row]["trial"]) if 0 <= row < len(rows) and rows[row].get("trial") is not None else None


def short(col: str) -> str:
    return col.removeprefix(D.PARAM_PREFIX)


#: what a plot shows until its view draws it: no axes (plotly lays out and measures empty axes' ticks, about
#: 50 ms a plot in software rendering, for each plot of the hidden views when the page opens)
BLANK_FIGURE: dict[str, Any] = {
    "data": [],
    "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False}, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}},
}


def graph(graph_id: str, height: int, **props: Any) -> Any:
    """A plot that follows its container's width (also when drawn in a hidden view) at a fixed height."""
    from dash import dcc

    props.setdefault("figure", BLANK_FIGURE)
    return dcc.Graph(
        id=graph_id, config={"displaylogo": False}, responsive=True, style={"height": f"{height}px"}, **props
    )


def view(name: str, children: list[Any], p: Props) -> Any:
    """A view's container (hidden until its tab is chosen)."""
    from dash import html

    return html.Div(children, id=f"view-{name}", **p(f"view-{name}", style={"display": "none"}))
