"""The Dash app: a read-only view of an Optuna storage that nasplat writes, refreshed live.

Views (tabs): studies overview, Pareto front (2 or 3 metrics, constraint sliders, overlaid fronts,
hypervolume against trials and wall-clock time), trials (server-side sortable and filterable table, parallel
coordinates), one architecture (the family's drawing, choices, measured and predicted metrics, provenance,
export), and supernet training / predictor quality. Every callback reads through :mod:`.data` and draws
through :mod:`.figures`; a failure shows as a one-line message on the page, never as a traceback.

The URL may name what to open: ``/?study=NAME&view=pareto|studies|trials|architecture|training&trial=N``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pandas as pd

from nasplat.errors import NasplatError

from . import data as D
from . import figures as F
from . import scripts as S

log = logging.getLogger("nasplat.dashboard")

VIEWS = ("studies", "pareto", "trials", "architecture", "training")
_VIEW_LABELS = {
    "studies": "Studies",
    "pareto": "Pareto front",
    "trials": "Trials",
    "architecture": "Architecture",
    "training": "Training & predictors",
}
_SLIDER_STEPS = 200
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f6f7f9; color: #222; }
.top { display: flex; align-items: center; gap: 18px; padding: 10px 18px; background: #1f2d3d; color: white; flex-wrap: wrap; }
.top h1 { font-size: 20px; margin: 0; }
.top .storage { font-family: monospace; font-size: 12px; opacity: .85; }
.top .study-picker { min-width: 320px; color: #222; }
.top .refresh { font-size: 12px; opacity: .8; margin-left: auto; }
.page { padding: 12px 18px; }
.message { padding: 10px 14px; margin: 8px 0; border-radius: 6px; font-size: 14px; }
.message.error { background: #fdecea; border: 1px solid #f5c2bd; color: #8a1c13; }
.message.info { background: #eef4fb; border: 1px solid #c9dcf2; color: #1d3f66; }
.controls { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-end; margin: 8px 0; }
.controls > div { min-width: 200px; }
.controls label, .field-label { font-size: 12px; color: #555; display: block; margin-bottom: 3px; }
.controls .choice label { display: flex; align-items: center; gap: 5px; font-size: 13px; color: #222; margin: 3px 0; }
.sliders { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 6px 24px; margin: 8px 0; }
.slider-box { background: white; border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px 10px 2px; }
.slider-label { font-size: 13px; margin-bottom: 2px; }
.card { background: white; border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px 12px; margin: 10px 0; }
.grid2 { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 12px; }
.status { font-size: 13px; color: #333; margin: 4px 0; }
pre.command { background: #272822; color: #f8f8f2; padding: 10px; border-radius: 6px; white-space: pre-wrap; word-break: break-all; }
button.action { background: #1f6feb; color: white; border: 0; border-radius: 6px; padding: 8px 14px; cursor: pointer; }
button.action:disabled { background: #9bb7e0; }
h3 { font-size: 16px; margin: 6px 0; }
"""

_INDEX = """<!DOCTYPE html>
<html>
<head>
{%metas%}
<title>{%title%}</title>
{%favicon%}
{%css%}
<style>""" + _CSS + """</style>
</head>
<body>
{%app_entry%}
<footer>{%config%}{%scripts%}{%renderer%}</footer>
</body>
</html>"""  # fmt: skip


def _message(text: str, kind: str = "error") -> Any:
    from dash import html

    return html.Div(text, className=f"message {kind}", role="alert" if kind == "error" else None)


def _explain(exc: BaseException) -> str:
    """A user-facing line for an exception (full traceback in the server log for unexpected ones)."""
    if isinstance(exc, NasplatError):
        return str(exc)
    log.exception("unexpected error in a dashboard callback")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected error ({type(exc).__name__}{': ' + first if first else ''}); the server log has the details"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
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


def _columns(frame: pd.DataFrame, names: dict[str, str] | None = None) -> list[dict[str, Any]]:
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


def _row_trial(rows: list[dict[str, Any]], cell: dict[str, Any]) -> int | None:
    """The trial number of the DataTable row a clicked cell is in."""
    row = cell.get("row", -1)
    return int(rows[row]["trial"]) if 0 <= row < len(rows) and rows[row].get("trial") is not None else None


def _short(col: str) -> str:
    return col.removeprefix(D.PARAM_PREFIX)


# --------------------------------------------------------------------------------------------------------------
# layout


def _graph(graph_id: str, height: int, **props: Any) -> Any:
    """A plot that follows its container's width (also when drawn in a hidden view) at a fixed height."""
    from dash import dcc

    return dcc.Graph(
        id=graph_id, config={"displaylogo": False}, responsive=True, style={"height": f"{height}px"}, **props
    )


def _layout(storage_url: str, refresh_s: float, init: dict[str, dict[str, Any]] | None = None) -> Any:
    """The page. ``init``: component id -> properties already computed for the first paint (the latest study's
    Pareto view), so that the page shows it without waiting for callback round trips."""
    from dash import dcc, html
    from dash.dash_table.DataTable import DataTable

    init = init or {}

    def p(component: str, **defaults: Any) -> dict[str, Any]:
        return {**defaults, **init.get(component, {})}

    def view(name: str, children: list[Any]) -> Any:
        return html.Div(children, id=f"view-{name}", **p(f"view-{name}", style={"display": "none"}))

    table_style: dict[str, Any] = {
        "style_table": {"overflowX": "auto"},
        "style_cell": {"fontSize": 13, "padding": "4px 8px", "fontFamily": "system-ui, sans-serif", "maxWidth": 420,
                       "overflow": "hidden", "textOverflow": "ellipsis"},
        "style_header": {"fontWeight": "600", "backgroundColor": "#f0f2f5"},
        "style_cell_conditional": [{"if": {"column_type": "text"}, "textAlign": "left"}],
    }  # fmt: skip
    return html.Div(
        [
            dcc.Location(id="url", refresh=False),
            dcc.Interval(id="tick", interval=max(int(refresh_s * 1000), 500)),
            dcc.Store(id="sig", **p("sig")),
            dcc.Store(id="constraint-bounds", **p("constraint-bounds")),
            dcc.Store(id="pareto-studies", **p("pareto-studies")),
            dcc.Store(id="trial-request"),
            html.Div(
                [
                    html.H1("nasplat dashboard"),
                    html.Span(D.safe_url(storage_url), className="storage", id="storage-url"),
                    html.Div(
                        dcc.Dropdown(id="study", **p("study", placeholder="choose a study", clearable=False)),
                        className="study-picker",
                    ),
                    html.Span(id="refresh-status", className="refresh", **p("refresh-status")),
                ],
                className="top",
            ),
            html.Div(
                [
                    html.Div(id="alert"),
                    dcc.Tabs(
                        id="view",
                        value="pareto",
                        children=[dcc.Tab(label=_VIEW_LABELS[v], value=v, id=f"tab-{v}") for v in VIEWS],
                    ),
                    view(
                        "studies",
                        [
                            html.Div(id="studies-message"),
                            html.P(
                                "Every study in the storage; click a row to open its Pareto front.", className="status"
                            ),
                            DataTable(id="studies-table", sort_action="native", page_size=50, **table_style),
                        ],
                    ),
                    view(
                        "pareto",
                        [
                            html.Div(id="pareto-message", **p("pareto-message")),
                            html.Div(
                                [
                                    html.Div(
                                        [
                                            html.Label("x axis"),
                                            dcc.Dropdown(id="axis-x", **p("axis-x", clearable=False)),
                                        ]
                                    ),
                                    html.Div(
                                        [
                                            html.Label("y axis"),
                                            dcc.Dropdown(id="axis-y", **p("axis-y", clearable=False)),
                                        ]
                                    ),
                                    html.Div(
                                        [html.Label("z axis (optional)"), dcc.Dropdown(id="axis-z", **p("axis-z"))]
                                    ),
                                    html.Div(
                                        [
                                            html.Label("device"),
                                            dcc.Dropdown(
                                                id="device",
                                                **p(
                                                    "device",
                                                    value="any",
                                                    clearable=False,
                                                    options=[{"label": "any device", "value": "any"}],
                                                ),
                                            ),
                                        ]
                                    ),
                                    html.Div(
                                        [
                                            html.Label("overlay the fronts of"),
                                            dcc.Dropdown(id="compare", **p("compare", multi=True)),
                                        ],
                                        style={"minWidth": "320px"},
                                    ),
                                    html.Div(
                                        [
                                            html.Label("constrain"),
                                            dcc.Dropdown(id="constrain", **p("constrain", multi=True)),
                                        ],
                                        style={"minWidth": "320px"},
                                    ),
                                    html.Div(
                                        [
                                            html.Label("trials drawn as"),
                                            dcc.RadioItems(
                                                id="pareto-points",
                                                options=[
                                                    {
                                                        "label": f"density above {F.DENSITY_THRESHOLD:,} trials, "
                                                        "points near the front",
                                                        "value": "auto",
                                                    },
                                                    {"label": "points, every trial", "value": "all"},
                                                ],
                                                value="auto",
                                                className="choice",
                                            ),
                                        ]
                                    ),
                                ],
                                className="controls",
                            ),
                            html.Div(id="sliders", className="sliders", **p("sliders")),
                            html.Div(id="pareto-status", className="status", **p("pareto-status")),
                            html.Div(
                                _graph("pareto-graph", 520, **p("pareto-graph")),
                                className="card",
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        _graph("hv-trials", 330, **p("hv-trials")),
                                        className="card",
                                    ),
                                    html.Div(
                                        _graph("hv-time", 330, **p("hv-time")),
                                        className="card",
                                    ),
                                ],
                                className="grid2",
                            ),
                            html.H3("Front trials (click a row to open the architecture)"),
                            DataTable(
                                id="front-table", **p("front-table", sort_action="native", page_size=15, **table_style)
                            ),
                        ],
                    ),
                    view(
                        "trials",
                        [
                            html.Div(id="trials-message"),
                            html.Div(id="trials-status", className="status"),
                            DataTable(
                                id="trials-table",
                                page_action="custom",
                                page_current=0,
                                page_size=20,
                                sort_action="custom",
                                sort_mode="multi",
                                sort_by=[],
                                filter_action="custom",
                                filter_query="",
                                **table_style,
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        [html.Label("colour lines by"), dcc.Dropdown(id="pc-color", clearable=False)]
                                    )
                                ],
                                className="controls",
                            ),
                            html.Div(
                                _graph("parallel-graph", 420),
                                className="card",
                            ),
                        ],
                    ),
                    view(
                        "architecture",
                        [
                            html.Div(id="arch-message"),
                            html.Div(
                                [
                                    html.Div(
                                        [
                                            html.Label("trial (front trials first; type a number)"),
                                            dcc.Dropdown(id="arch-trial", clearable=False),
                                        ],
                                        style={"minWidth": "520px"},
                                    ),
                                ],
                                className="controls",
                            ),
                            html.H3(id="arch-title"),
                            html.Div(
                                [
                                    html.Div(
                                        [
                                            _graph("arch-graph", 400),
                                            html.Div(id="arch-note"),
                                        ],
                                        className="card",
                                    ),
                                    html.Div(
                                        [
                                            html.H3("Choices"),
                                            DataTable(id="arch-choices", **table_style),
                                            html.H3("Metrics: measured and predicted"),
                                            DataTable(id="arch-metrics", **table_style),
                                        ],
                                        className="card",
                                    ),
                                ],
                                className="grid2",
                            ),
                            html.Div(
                                _graph("arch-compare", 300),
                                id="arch-compare-box",
                                className="card",
                                style={"display": "none"},
                            ),
                            html.Div(
                                [html.H3("Provenance"), DataTable(id="arch-provenance", **table_style)],
                                className="card",
                            ),
                            html.Div(
                                [
                                    html.H3("Export"),
                                    html.Label("bundle folder name", className="field-label"),
                                    dcc.Input(id="export-name", type="text", debounce=True, style={"width": "360px"}),
                                    dcc.Checklist(
                                        id="export-overwrite",
                                        options=[{"label": "replace an existing bundle of this name", "value": "yes"}],
                                        value=[],
                                        className="choice",
                                    ),
                                    html.P("The same export from a shell:", className="status"),
                                    html.Pre(id="export-command", className="command"),
                                    html.Button(
                                        "Export and download (.zip)", id="export-button", className="action", n_clicks=0
                                    ),
                                    dcc.Loading(html.Div(id="export-result"), type="dot"),
                                    dcc.Download(id="export-download"),
                                ],
                                className="card",
                            ),
                        ],
                    ),
                    view(
                        "training",
                        [
                            html.Div(id="training-message"),
                            html.Div(
                                _graph("training-graph", 330),
                                className="card",
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        _graph("predictor-graph", 330),
                                        className="card",
                                    ),
                                    html.Div(
                                        _graph("predicted-graph", 330),
                                        className="card",
                                    ),
                                ],
                                className="grid2",
                            ),
                        ],
                    ),
                ],
                className="page",
            ),
        ]
    )


# --------------------------------------------------------------------------------------------------------------
# what the server accepts from clients

#: the Host names the dashboard always answers to (with any port): this machine's loopback
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ALL_INTERFACES = ("0.0.0.0", "::", "")
#: the trials table's page size a client may ask for (anything else is clamped into this range)
PAGE_SIZE_RANGE = (1, 500)
_DEFAULT_PAGE_SIZE = 20


def _host_name(header: str) -> str | None:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``), lower-case; None when malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = header.rpartition(":") if header.count(":") == 1 else (header, "", "")
        if colon and not port.isdigit():
            return None
    return name.rstrip(".")


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(host: str) -> tuple[frozenset[str], bool]:
    """The Host names a dashboard bound to ``host`` answers to, and whether it also answers any IP address.

    Against DNS rebinding (a page on the attacker's domain whose name then resolves to 127.0.0.1) a request
    must name this server: a loopback name, or the ``--host`` it was started with. Bound to every interface
    (``0.0.0.0``, ``::``) it also answers this machine's host names and any IP address: a rebinding attack
    always carries the attacker's domain name, never an address."""
    import socket

    names = {*LOOPBACK_HOSTS, host.strip().lower().strip("[]").rstrip(".")}
    wildcard = host in _ALL_INTERFACES
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(n for n in names if n), wildcard


def _guard_host(server: Any, host: str) -> None:
    """Answer 400 to a request whose Host header names another server (see :func:`allowed_hosts`)."""
    from flask import Response, request

    names, any_ip = allowed_hosts(host)

    @server.before_request
    def check_host() -> Any:
        header = request.headers.get("Host", "")
        name = _host_name(header) if header else host
        if name is not None and (name in names or (any_ip and _is_ip(name))):
            return None
        shown = header.encode("ascii", "replace").decode()[:100]
        return Response(
            f"400 Bad Request: this nasplat dashboard does not answer to the host '{shown}' (it answers to "
            f"{', '.join(sorted(names))}{' and any IP address' if any_ip else ''})\n",
            status=400,
            mimetype="text/plain",
        )


def _page_size(value: Any) -> int:
    """The client's page size as an int within :data:`PAGE_SIZE_RANGE` (the default when it is not a number)."""
    try:
        size = int(value) if value is not None else _DEFAULT_PAGE_SIZE
    except (TypeError, ValueError, OverflowError):
        size = _DEFAULT_PAGE_SIZE
    low, high = PAGE_SIZE_RANGE
    return min(max(size, low), high)


# --------------------------------------------------------------------------------------------------------------
# the app


def make_app(
    storage_url: str, *, refresh_s: float = 5.0, export_dir: Path | str = "nasplat-exports", host: str = "127.0.0.1"
) -> Any:
    """The Dash app for one storage URL. ``export_dir``: where the export action writes bundles; ``host``: the
    address it is served on (requests naming any other host are refused, see :func:`allowed_hosts`)."""
    import dash
    from dash import ALL, Input, Output, State, ctx, html, no_update

    export_root = Path(export_dir).expanduser().resolve()
    app = dash.Dash(
        __name__,
        title="nasplat dashboard",
        update_title=None,  # type: ignore[arg-type]
        suppress_callback_exceptions=True,
        serve_locally=True,
        # the page loads the component code and plotly.js it needs with its scripts, nothing more (.scripts)
        eager_loading=False,
        external_scripts=S.external_scripts(),
    )
    S.configure(app)
    _guard_host(app.server, host)
    app.index_string = _INDEX

    def storage() -> D.Storage:
        return D.open_storage(storage_url)

    def active(view: str | None, name: str) -> bool:
        return view == name

    # ---------------------------------------------------------------------------------- storage, study, refresh
    @app.callback(
        Output("study", "options"),
        Output("study", "value"),
        Output("sig", "data"),
        Output("alert", "children"),
        Output("refresh-status", "children"),
        Output("view", "value"),
        Output("trial-request", "data"),
        Input("tick", "n_intervals"),
        Input("url", "search"),
        State("study", "value"),
        State("sig", "data"),
    )
    def refresh(_n: int | None, search: str | None, current: str | None, old_sig: str | None) -> tuple[Any, ...]:
        query = parse_qs((search or "").lstrip("?"))
        first = ctx.triggered_id in (None, "url")
        view: Any = no_update
        if first and query.get("view"):
            wanted_view = query["view"][0]
            view = wanted_view if wanted_view in VIEWS else no_update
        stamp = time.strftime("%H:%M:%S")
        try:
            st = storage()
            sig = D.storage_signature(st)
            studies = D.studies_frame(st, summary=False) if sig != old_sig or first or current is None else None
            names = D.study_names(st)
        except Exception as exc:
            return [], None, None, _message(_explain(exc)), f"storage unreadable · checked {stamp}", view, no_update
        if not names:
            msg = _message(
                f"the storage '{D.safe_url(storage_url)}' holds no study yet; this page refreshes every few seconds",
                "info",
            )
            return [], None, sig, msg, f"no study yet · checked {stamp}", view, no_update
        options: Any = no_update if studies is None else study_options(studies)
        alert: Any = None
        value: Any = no_update
        if current is None or (first and query.get("study")):
            wanted = query.get("study", [None])[0]
            if wanted is not None and wanted not in names:
                alert = _message(f"no study '{wanted}' in this storage; its studies: {', '.join(names)}")
                value = None if current is None else no_update
            else:
                value = wanted or D.latest_study(st)
        elif current not in names:
            value = D.latest_study(st)
        request: Any = no_update
        wanted_trial = query.get("trial", [""])[0]
        chosen = value if isinstance(value, str) else current
        if first and wanted_trial.isdigit() and isinstance(chosen, str):
            request = {"study": chosen, "trial": int(wanted_trial), "at": time.time()}
        if value == current:
            value = no_update  # already shown (the page came with it): no need to redraw the views
        sig_out = sig if sig != old_sig else no_update
        return options, value, sig_out, alert, live_status(stamp, studies, names), view, request

    def study_options(studies: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {
                "label": f"{row['study']}  ·  {row['space']}  ·  {row['complete']} trials"
                + ("  (unreadable)" if isinstance(row["problem"], str) else ""),
                "value": row["study"],
            }
            for _, row in studies.iterrows()
        ]

    def live_status(stamp: str, studies: pd.DataFrame | None, names: list[str]) -> str:
        n_trials = int(studies["trials"].sum()) if studies is not None else None
        return f"live · checked {stamp}" + (
            f" · {n_trials:,} trials in {len(names)} studies" if n_trials is not None else ""
        )

    @app.callback(*(Output(f"view-{v}", "style") for v in VIEWS), Input("view", "value"))
    def show_view(view: str) -> tuple[dict[str, str], ...]:
        return tuple({"display": "block" if v == view else "none"} for v in VIEWS)

    # ---------------------------------------------------------------------------------- studies overview
    @app.callback(
        Output("studies-table", "data"),
        Output("studies-table", "columns"),
        Output("studies-message", "children"),
        Input("sig", "data"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def studies_view(_sig: str | None, view: str) -> tuple[Any, ...]:
        if not active(view, "studies"):
            return no_update, no_update, no_update
        try:
            frame = D.studies_frame(storage())
        except Exception as exc:
            return [], [], _message(_explain(exc))
        if frame.empty:
            return [], [], _message("no study in this storage yet", "info")
        frame = frame.copy()
        frame["trials"] = [
            f"{c}/{t}" if isinstance(t, (int, np.integer)) else str(c)
            for c, t in zip(frame["complete"], frame["target"], strict=True)
        ]
        frame["problem"] = frame["problem"].fillna("")
        best_cols = [c for c in frame.columns if str(c).startswith("best ")]
        frame["best values"] = [
            " · ".join(f"{c.removeprefix('best ')} {_fmt(row[c])}" for c in best_cols if not pd.isna(row[c])) or "-"
            for _, row in frame.iterrows()
        ]
        frame["hypervolume"] = frame["hypervolume"].map(lambda v: _fmt(v) if v is not None and not pd.isna(v) else "-")
        cols = ["study", "status", "trials", "best values", "hypervolume", "space", "family", "objectives", "devices",
                "sampler", "estimator", "dataset", "running", "failed", "last_update", "hv_reference", "problem"]  # fmt: skip
        frame = frame[cols]
        frame["last_update"] = frame["last_update"].map(
            lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if not pd.isna(t) else "-"
        )
        return _records(frame), _columns(frame), None

    @app.callback(
        Output("study", "value", allow_duplicate=True),
        Output("view", "value", allow_duplicate=True),
        Input("studies-table", "active_cell"),
        State("studies-table", "data"),
        prevent_initial_call=True,
    )
    def pick_study(cell: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> tuple[Any, ...]:
        if not cell or not rows or cell.get("row", -1) >= len(rows):
            return no_update, no_update
        return rows[cell["row"]]["study"], "pareto"

    # ---------------------------------------------------------------------------------- Pareto: controls
    @app.callback(
        Output("axis-x", "options"),
        Output("axis-y", "options"),
        Output("axis-z", "options"),
        Output("axis-x", "value"),
        Output("axis-y", "value"),
        Output("axis-z", "value"),
        Output("constrain", "options"),
        Output("constrain", "value"),
        Output("device", "options"),
        Output("sliders", "children"),
        Output("constraint-bounds", "data"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("constrain", "value"),
        State("axis-x", "value"),
        State("axis-y", "value"),
        State("axis-z", "value"),
        State({"type": "constraint", "metric": ALL}, "value"),
        State({"type": "constraint", "metric": ALL}, "id"),
        State("constraint-bounds", "data"),
        prevent_initial_call=True,
    )
    def pareto_controls(study: str | None, _sig: Any, constrain: list[str] | None, x: str | None, y: str | None,
                        z: str | None, positions: list[Any], ids: list[dict[str, str]],
                        old_bounds: dict[str, Any] | None) -> tuple[Any, ...]:  # fmt: skip
        """Axes, constrainable metrics and devices of the study, and one slider per constrained metric.

        One callback, so that the Pareto view waits for a single round trip before drawing.
        """
        return controls_state(study, ctx.triggered_id, constrain, x, y, z, positions, ids, old_bounds)

    def controls_state(study: str | None, trigger: Any, constrain: list[str] | None, x: str | None, y: str | None,
                       z: str | None, positions: list[Any], ids: list[dict[str, str]],
                       old_bounds: dict[str, Any] | None) -> tuple[Any, ...]:  # fmt: skip
        any_device = [{"label": "any device", "value": "any"}]
        none: tuple[Any, ...] = ([], [], [], None, None, None, [], [], any_device, [], {})
        if not study:
            return none
        try:
            st = storage()
            info = D.study_info(st, study)
            metrics = D.available_metrics(st, study)
            studies = D.studies_frame(st, summary=False)
        except Exception:
            return none  # the main Pareto callback shows the message
        options = [
            {"label": f"{m} ({'max' if info.direction_of(m) == 'maximize' else 'min'})", "value": m} for m in metrics
        ]
        switched = trigger == "study"
        if switched or x not in metrics or y not in metrics:
            x = info.objectives[0] if info.objectives else (metrics[0] if metrics else None)
            y = info.objectives[1] if len(info.objectives) > 1 else (metrics[1] if len(metrics) > 1 else None)
            z = None
        if z is not None and z not in metrics:
            z = None
        if switched or constrain is None:
            constrain = [m for m in info.objectives if m in metrics]
            if "params_count" in metrics and "params_count" not in constrain:
                constrain.append("params_count")
        else:
            constrain = [m for m in constrain if m in metrics]
        devices = sorted({d for ds in studies["devices"] for d in str(ds).split(", ") if d and d != "-"})
        device_options = any_device + [{"label": d, "value": d} for d in devices]
        keep = {} if switched else {i["metric"]: v for i, v in zip(ids, positions, strict=False)}
        try:
            children, bounds = _sliders(st, info, study, constrain, keep, old_bounds or {})
        except Exception:
            children, bounds = [], {}
        if trigger == "sig" and bounds == (old_bounds or {}) and len(ids) == len(children):
            # nothing moved: keep the sliders as they are
            return options, options, options, x, y, z, options, constrain, device_options, no_update, no_update
        return options, options, options, x, y, z, options, constrain, device_options, children, bounds

    def _sliders(st: D.Storage, info: D.StudyInfo, study: str, constrain: list[str], keep: dict[str, Any],
                 old_bounds: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:  # fmt: skip
        from dash import dcc

        if not constrain:
            return [], {}
        trials = D.trials_frame(st, study, params=False, metrics=constrain, identity=False)
        bounds: dict[str, Any] = {}
        children = []
        for m in constrain:
            if m not in trials.columns:
                continue
            col = trials[m].replace([np.inf, -np.inf], np.nan).dropna()
            if col.empty:
                continue
            lo, hi = float(col.min()), float(col.max())
            direction = info.direction_of(m)
            bounds[m] = [lo, hi, direction]
            old = old_bounds.get(m)
            default = 0 if direction == "maximize" else _SLIDER_STEPS
            pos = keep.get(m, default)
            if old and pos is not None and keep.get(m) is not None and old[:2] != [lo, hi]:
                # the data range moved (new trials): keep the same threshold value
                threshold = old[0] + (old[1] - old[0]) * pos / _SLIDER_STEPS
                pos = round((threshold - lo) / (hi - lo) * _SLIDER_STEPS) if hi > lo else default
                pos = min(max(pos, 0), _SLIDER_STEPS)
            children.append(
                html.Div(
                    [
                        html.Div(id={"type": "constraint-label", "metric": m}, className="slider-label"),
                        dcc.Slider(
                            id={"type": "constraint", "metric": m},
                            min=0,
                            max=_SLIDER_STEPS,
                            step=1,
                            value=pos,
                            marks={0: _fmt(lo), _SLIDER_STEPS: _fmt(hi)},
                            updatemode="mouseup",
                            allow_direct_input=False,
                        ),
                    ],
                    className="slider-box",
                )
            )
        return children, bounds

    @app.callback(
        Output("compare", "options"),
        Input("study", "value"),
        Input("device", "value"),
        Input("sig", "data"),
        prevent_initial_call=True,
    )
    def compare_options(study: str | None, device: str | None, _sig: Any) -> Any:
        return compare_state(study, device)

    def compare_state(study: str | None, device: str | None) -> Any:
        try:
            studies = D.studies_frame(storage(), summary=False)
        except Exception:
            return []
        rows = studies[studies["problem"].isna() & (studies["study"] != study)]
        if device and device != "any":
            rows = rows[rows["devices"].map(lambda ds: device in str(ds).split(", "))]
        return [
            {
                "label": f"{r['study']} ({r['sampler']}, {r['space']}"
                + (f", {r['devices']}" if r["devices"] != "-" else "")
                + ")",
                "value": r["study"],
            }
            for _, r in rows.iterrows()
        ]

    # ---------------------------------------------------------------------------------- Pareto: the view
    @app.callback(
        Output("pareto-graph", "figure"),
        Output("hv-trials", "figure"),
        Output("hv-time", "figure"),
        Output("pareto-status", "children"),
        Output("pareto-message", "children"),
        Output("front-table", "data"),
        Output("front-table", "columns"),
        Output({"type": "constraint-label", "metric": ALL}, "children"),
        Output("pareto-studies", "data"),
        Input("axis-x", "value"),
        Input("axis-y", "value"),
        Input("axis-z", "value"),
        Input("compare", "value"),
        Input({"type": "constraint", "metric": ALL}, "value"),
        Input("view", "value"),
        Input("sig", "data"),
        Input("pareto-points", "value"),
        State({"type": "constraint", "metric": ALL}, "id"),
        State("constraint-bounds", "data"),
        State("study", "value"),
        prevent_initial_call=True,
    )
    def pareto_view(x: str | None, y: str | None, z: str | None, compare: list[str] | None, positions: list[Any],
                    view: str, _sig: Any, points: str | None, ids: list[dict[str, str]],
                    bounds: dict[str, Any] | None, study: str | None) -> tuple[Any, ...]:  # fmt: skip
        return pareto_state(x, y, z, compare, positions, view, ids, bounds, study, points)

    def pareto_state(x: str | None, y: str | None, z: str | None, compare: list[str] | None, positions: list[Any],
                     view: str, ids: list[dict[str, str]], bounds: dict[str, Any] | None,
                     study: str | None, points: str | None = "auto") -> tuple[Any, ...]:  # fmt: skip
        labels: list[Any] = [no_update] * len(ids)
        if not active(view, "pareto"):
            return (no_update,) * 7 + (labels, no_update)
        blank = F.message_figure("choose a study above")
        if not study:
            msg = _message("choose a study in the list at the top", "info")
            return blank, blank, blank, None, msg, [], [], labels, []
        try:
            st = storage()
            D.study_info(st, study)  # an unknown or unreadable study says why here
        except Exception as exc:
            blank = F.message_figure("nothing to show")
            return blank, blank, blank, None, _message(_explain(exc)), [], [], labels, []
        if not x or not y:
            return (no_update,) * 7 + (labels, no_update)
        try:
            axes = [a for a in dict.fromkeys([x, y, z]) if a]
            constraints: dict[str, tuple[float | None, float | None]] = {}
            texts = []
            for i, pos in zip(ids, positions, strict=False):
                m = i["metric"]
                b = (bounds or {}).get(m)
                if not b or pos is None:
                    texts.append(m)
                    continue
                lo, hi, direction = float(b[0]), float(b[1]), str(b[2])
                threshold = lo + (hi - lo) * float(pos) / _SLIDER_STEPS
                if direction == "maximize":
                    constraints[m] = (threshold, None) if pos > 0 else (None, None)
                    texts.append(f"{m} ≥ {_fmt(threshold)}")
                else:
                    constraints[m] = (None, threshold) if pos < _SLIDER_STEPS else (None, None)
                    texts.append(f"{m} ≤ {_fmt(threshold)}")
            active_constraints = {k: v for k, v in constraints.items() if v != (None, None)}
            frame = D.pareto_frame(st, study, axes, active_constraints)
            others = [s for s in (compare or []) if s != study]
            fronts = D.fronts_frame(st, others, axes, active_constraints) if others else None
            fig = F.pareto_figure(frame, fronts, points=points if points in F.POINTS else "auto")
            hv = D.hypervolume_frame(st, [study, *others], axes, active_constraints)
            hv_trials = F.hypervolume_figure(hv, "trials")
            hv_time = F.hypervolume_figure(hv, "elapsed_s")
        except Exception as exc:
            blank = F.message_figure("nothing to show")
            return blank, blank, blank, None, _message(_explain(exc)), [], [], labels, []
        n_ok = int(frame["feasible"].sum()) if not frame.empty else 0
        n_front = int(frame["front"].sum()) if not frame.empty else 0
        status = f"{n_ok} of {len(frame)} completed trials within the constraints · {n_front} on the front"
        skipped = (fronts.attrs.get("skipped") if fronts is not None else None) or {}
        msg = _message("not overlaid: " + "; ".join(skipped.values()), "info") if skipped else None
        front = frame[frame["front"].astype(bool)].drop(columns=["feasible", "front"])
        studies_shown = F.trace_studies(fig)
        return (fig, hv_trials, hv_time, status, msg, _records(front), _columns(front), texts, studies_shown)

    @app.callback(
        Output("study", "value", allow_duplicate=True),
        Output("trial-request", "data", allow_duplicate=True),
        Output("view", "value", allow_duplicate=True),
        Input("pareto-graph", "clickData"),
        Input("front-table", "active_cell"),
        Input("trials-table", "active_cell"),
        State("front-table", "data"),
        State("trials-table", "data"),
        State("study", "value"),
        State("pareto-studies", "data"),
        prevent_initial_call=True,
    )
    def open_trial(click: dict[str, Any] | None, front_cell: dict[str, Any] | None, trials_cell: dict[str, Any] | None,
                   front_rows: list[dict[str, Any]] | None, trial_rows: list[dict[str, Any]] | None,
                   study: str | None, shown: list[str] | None) -> tuple[Any, ...]:  # fmt: skip
        who, number = study, None
        if ctx.triggered_id == "pareto-graph" and click and click.get("points"):
            point = click["points"][0]
            if isinstance(point.get("customdata"), (int, float)):
                number = int(point["customdata"])
                curve = int(point.get("curveNumber", -1))
                who = shown[curve] if shown and 0 <= curve < len(shown) and shown[curve] else study
        elif ctx.triggered_id == "front-table" and front_cell and front_rows:
            number = _row_trial(front_rows, front_cell)
        elif ctx.triggered_id == "trials-table" and trials_cell and trial_rows:
            number = _row_trial(trial_rows, trials_cell)
        if number is None:
            return no_update, no_update, no_update
        request = {"study": who, "trial": number, "at": time.time()}
        return (who if who != study else no_update), request, "architecture"

    # ---------------------------------------------------------------------------------- first paint
    painted: dict[str, Any] = {}  # storage signature -> the first paint computed for it (the latest only)

    def first_paint() -> dict[str, dict[str, Any]]:
        """The landing view (the latest study's Pareto front) computed with the page, as the study, controls and
        Pareto callbacks would answer it; empty (the callbacks take over) when anything is missing or unreadable.
        Kept until the storage changes."""
        try:
            sig = D.storage_signature(storage())
        except Exception:
            return {}
        init = painted.get(sig)
        if init is None:
            init = compute_first_paint(sig)
            painted.clear()
            painted[sig] = init
        if not init:
            return {}
        return {**init, "refresh-status": {"children": init["refresh-status"]["children"] % time.strftime("%H:%M:%S")}}

    def compute_first_paint(sig: Any) -> dict[str, dict[str, Any]]:
        try:
            st = storage()
            names = D.study_names(st)
            study = D.latest_study(st) if names else None
            if not study:
                return {}
            studies = D.studies_frame(st, summary=False)
            D.study_info(st, study)
            (ax_opts, _, _, x, y, z, c_opts, constrain, dev_opts, sliders, bounds) = controls_state(
                study, "study", None, None, None, None, [], [], None
            )
            ids = [{"type": "constraint", "metric": m} for m in bounds]
            positions = [0 if b[2] == "maximize" else _SLIDER_STEPS for b in bounds.values()]
            view = pareto_state(x, y, z, None, positions, "pareto", ids, bounds, study)
            compare = compare_state(study, "any")
        except Exception:
            log.debug("first paint not prefilled", exc_info=True)
            return {}
        if any(v is no_update for v in view[:7]) or view[4] is not None:
            return {}  # no axes, or a message to show: the callbacks say it
        fig, hv_trials, hv_time, status, msg, front_rows, front_cols, texts, shown = view
        for child, text in zip(sliders, texts, strict=False):
            child.children[0].children = text
        axis = {"options": ax_opts}
        return {
            "sig": {"data": sig},
            "study": {"options": study_options(studies), "value": study},
            "refresh-status": {"children": live_status("%s", studies, names)},
            "view-pareto": {"style": {"display": "block"}},
            "axis-x": {**axis, "value": x},
            "axis-y": {**axis, "value": y},
            "axis-z": {**axis, "value": z},
            "constrain": {"options": c_opts, "value": constrain},
            "device": {"options": dev_opts},
            "compare": {"options": compare},
            "sliders": {"children": sliders},
            "constraint-bounds": {"data": bounds},
            "pareto-graph": {"figure": fig},
            "hv-trials": {"figure": hv_trials},
            "hv-time": {"figure": hv_time},
            "pareto-status": {"children": status},
            "pareto-message": {"children": msg},
            "front-table": {"data": front_rows, "columns": front_cols},
            "pareto-studies": {"data": shown},
        }

    app.layout = lambda: _layout(storage_url, refresh_s, first_paint())

    # ---------------------------------------------------------------------------------- trials
    @app.callback(
        Output("trials-table", "data"),
        Output("trials-table", "columns"),
        Output("trials-table", "page_count"),
        Output("trials-status", "children"),
        Output("trials-message", "children"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        Input("trials-table", "page_current"),
        Input("trials-table", "page_size"),
        Input("trials-table", "sort_by"),
        Input("trials-table", "filter_query"),
        prevent_initial_call=True,
    )
    def trials_view(study: str | None, _sig: Any, view: str, page: int | None, page_size: int | None,
                    sort_by: list[dict[str, str]] | None, filter_query: str | None) -> tuple[Any, ...]:  # fmt: skip
        if not active(view, "trials"):
            return (no_update,) * 5
        if not study:
            return [], [], 1, None, _message("choose a study in the list at the top", "info")
        try:
            frame = D.trials_frame(storage(), study, states=("COMPLETE", "RUNNING", "FAIL", "PRUNED", "WAITING"))
            shown = frame.drop(
                columns=["arch_key", "datetime_start", "datetime_complete", "elapsed_s"], errors="ignore"
            )
            size = _page_size(page_size)  # the client's number: clamped, never trusted
            rows, total = D.query_trials(
                shown, filter_query=filter_query, sort_by=sort_by, page=max(int(page or 0), 0), page_size=size
            )
        except Exception as exc:
            return [], [], 1, None, _message(_explain(exc))
        names = {c: _short(c) for c in map(str, shown.columns)}
        status = (
            f"{total:,} of {len(frame):,} trials match"
            + (f" the filter {filter_query}" if filter_query else "")
            + " · click a row to open its architecture · filter with e.g. >= 0.8, contains conv"
        )
        page_rows = rows.copy()
        page_rows["id"] = page_rows["trial"]
        return _records(page_rows), _columns(shown, names), max(1, math.ceil(total / size)), status, None

    @app.callback(
        Output("pc-color", "options"),
        Output("pc-color", "value"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        State("pc-color", "value"),
        prevent_initial_call=True,
    )
    def pc_options(study: str | None, _sig: Any, view: str, current: str | None) -> tuple[Any, ...]:
        if not study:
            return [], None
        if not active(view, "trials"):
            return no_update, no_update
        try:
            metrics = D.available_metrics(storage(), study)
        except Exception:
            return [], None
        value = current if current in metrics and ctx.triggered_id != "study" else (metrics[0] if metrics else None)
        return [{"label": m, "value": m} for m in metrics], value

    @app.callback(
        Output("parallel-graph", "figure"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        Input("pc-color", "value"),
        prevent_initial_call=True,
    )
    def parallel_view(study: str | None, _sig: Any, view: str, color: str | None) -> Any:
        if not active(view, "trials"):
            return no_update
        if not study or not color:
            return F.message_figure("choose a study and a metric")
        try:
            info = D.study_info(storage(), study)
            frame = D.trials_frame(storage(), study)
            return F.parallel_figure(frame, D.choice_columns(frame), color, info.direction_of(color))
        except Exception as exc:
            return F.message_figure(_explain(exc))

    # ---------------------------------------------------------------------------------- one architecture
    @app.callback(
        Output("arch-trial", "options"),
        Output("arch-trial", "value"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("arch-trial", "search_value"),
        Input("trial-request", "data"),
        Input("view", "value"),
        State("arch-trial", "value"),
        prevent_initial_call=True,
    )
    def arch_options(study: str | None, _sig: Any, search: str | None, request: dict[str, Any] | None,
                     view: str, current: Any) -> tuple[Any, ...]:  # fmt: skip
        if not study:
            return [], None
        if not active(view, "architecture"):
            return no_update, no_update  # filled when the view opens
        try:
            st = storage()
            info = D.study_info(st, study)
            frame = D.pareto_frame(st, study, list(info.objectives))
        except Exception:
            return [], None
        if frame.empty:
            return [], None
        front = frame[frame["front"]].sort_values(info.objectives[0]).reset_index(drop=True)
        known = set(frame["trial"].astype(int))
        value = current
        asked = None  # a trial asked for (a click, a table row, the URL) for this study
        if request and request.get("study") == study and ctx.triggered_id in ("trial-request", "study", "view", None):
            asked = int(request["trial"]) if int(request["trial"]) in known else None
        if asked is not None:
            value = asked
        elif ctx.triggered_id == "study" or value is None or int(value) not in known:
            if not front.empty:
                from nasplat.pareto import knee_index

                value = int(
                    front.iloc[knee_index(front[list(info.objectives)].to_numpy(dtype=float), list(info.directions))][
                        "trial"
                    ]
                )
            else:
                value = int(frame["trial"].iloc[0])

        def label(row: pd.Series, star: bool) -> str:
            vals = ", ".join(f"{m} {_fmt(row[m])}" for m in info.objectives)
            return f"{'★ front · ' if star else ''}trial {int(row['trial'])} · {vals}"

        options = [{"label": label(r, True), "value": int(r["trial"])} for _, r in front.iterrows()]
        listed = set(front["trial"].astype(int))
        extra = frame[~frame["trial"].isin(listed)]
        if search and search.strip().isdigit():
            extra = extra[extra["trial"].astype(str).str.startswith(search.strip())]
        extra = extra.sort_values("trial").head(300)
        if int(value) not in listed and int(value) not in set(extra["trial"].astype(int)):
            extra = pd.concat([extra, frame[frame["trial"] == int(value)]])
        options += [{"label": label(r, False), "value": int(r["trial"])} for _, r in extra.iterrows()]
        return options, (value if value != current else no_update)

    @app.callback(
        Output("arch-title", "children"),
        Output("arch-graph", "figure"),
        Output("arch-note", "children"),
        Output("arch-choices", "data"),
        Output("arch-choices", "columns"),
        Output("arch-metrics", "data"),
        Output("arch-metrics", "columns"),
        Output("arch-compare", "figure"),
        Output("arch-compare-box", "style"),
        Output("arch-provenance", "data"),
        Output("arch-provenance", "columns"),
        Output("arch-message", "children"),
        Output("export-name", "value"),
        Input("arch-trial", "value"),
        Input("study", "value"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def arch_view(trial: int | None, study: str | None, view: str) -> tuple[Any, ...]:
        if not active(view, "architecture"):
            return (no_update,) * 13
        empty = F.message_figure("")
        hidden = {"display": "none"}
        if not study or trial is None:
            msg = _message("choose a study, then a trial (or click a point of the Pareto front)", "info")
            return None, empty, None, [], [], [], [], empty, hidden, [], [], msg, no_update
        try:
            rec = D.architecture_record(storage(), study, int(trial))
        except Exception as exc:
            return None, empty, None, [], [], [], [], empty, hidden, [], [], _message(_explain(exc)), no_update
        title = f"Trial {rec.trial} of '{rec.study}' · {rec.state}" + (" · on the Pareto front" if rec.on_front else "")
        if rec.arch:
            title += f" · {rec.arch}"
        fig = F.graph_figure(rec.description, f"{rec.family} architecture") if rec.description else None
        note = rec.note
        if fig is None:
            fig = F.message_figure(
                f"the '{rec.family}' family has no drawing here: its choices are listed beside", "Architecture"
            )
        compare = F.metrics_compare_figure(rec.metrics)
        metrics = rec.metrics.copy()
        for c in ("measured", "predicted"):
            metrics[c] = metrics[c].map(lambda v: _fmt(v) if v is not None and not pd.isna(v) else "-")
        metrics["objective"] = metrics["objective"].map(lambda b: "yes" if b else "")
        prov = pd.DataFrame(
            [(k, v if isinstance(v, str) else str(v)) for k, v in sorted(rec.provenance.items())],
            columns=["key", "value"],
        )
        choices = rec.choices.assign(value=rec.choices["value"].map(str))
        name = f"{rec.study}-trial{rec.trial}"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        return (
            title,
            fig,
            _message(note, "info") if note else None,
            _records(choices),
            _columns(choices),
            _records(metrics),
            _columns(metrics),
            compare if compare is not None else empty,
            {"display": "block"} if compare is not None else hidden,
            _records(prov),
            _columns(prov),
            None,
            name,
        )

    def _export_target(name: str | None, study: str, trial: int) -> Path:
        name = (name or "").strip() or f"{study}-trial{trial}"
        if not _NAME_OK.match(name) or ".." in name:
            raise NasplatError(
                f"bundle folder name '{name}' is not allowed: use letters, digits, '.', '_' and '-' only "
                f"(bundles go under {export_root})"
            )
        return export_root / name

    @app.callback(
        Output("export-command", "children"),
        Input("arch-trial", "value"),
        Input("study", "value"),
        Input("export-name", "value"),
        Input("export-overwrite", "value"),
        prevent_initial_call=True,
    )
    def export_command(trial: int | None, study: str | None, name: str | None, replace: list[str] | None) -> str:
        if not study or trial is None:
            return "choose a trial first"
        try:
            target = _export_target(name, study, int(trial))
            return D.export_command(storage_url, study, int(trial), target, overwrite=bool(replace))
        except NasplatError as exc:
            return str(exc)

    @app.callback(
        Output("export-result", "children"),
        Output("export-download", "data"),
        Input("export-button", "n_clicks"),
        State("arch-trial", "value"),
        State("study", "value"),
        State("export-name", "value"),
        State("export-overwrite", "value"),
        prevent_initial_call=True,
        running=[(Output("export-button", "disabled"), True, False)],
    )
    def export_run(n: int, trial: int | None, study: str | None, name: str | None, replace: list[str] | None) -> Any:
        """Write the bundle under the export folder, then send it to the browser as a zip."""
        from dash import dcc

        if not n or not study or trial is None:
            return no_update, no_update
        try:
            target = _export_target(name, study, int(trial))
            if D.bundle_exists(target) and not replace:
                return (
                    _message(
                        f"a bundle named '{target.name}' already exists in {export_root}: tick 'replace an existing "
                        "bundle of this name' to overwrite it, or choose another folder name",
                        "info",
                    ),
                    no_update,
                )
            bundle = D.run_export(storage(), study, int(trial), target, overwrite=bool(replace))
            archive = D.bundle_zip(bundle)
        except Exception as exc:
            return _message(f"export failed: {_explain(exc)}"), no_update
        message = (
            f"exported trial {trial} of '{study}' to {bundle}; downloading {bundle.name}.zip "
            f"({len(archive) / 1024:,.0f} KiB)"
        )
        return _message(message, "info"), dcc.send_bytes(archive, f"{bundle.name}.zip")

    # ---------------------------------------------------------------------------------- training and predictors
    @app.callback(
        Output("training-graph", "figure"),
        Output("predictor-graph", "figure"),
        Output("predicted-graph", "figure"),
        Output("training-message", "children"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def training_view(study: str | None, _sig: Any, view: str) -> tuple[Any, ...]:
        if not active(view, "training"):
            return (no_update,) * 4
        if not study:
            blank = F.message_figure("choose a study above")
            return blank, blank, blank, _message("choose a study in the list at the top", "info")
        try:
            st = storage()
            return (
                F.training_figure(D.training_frame(st, study)),
                F.predictor_figure(D.predictor_frame(st, study)),
                F.predicted_figure(D.predicted_frame(st, study)),
                None,
            )
        except Exception as exc:
            blank = F.message_figure("nothing to show")
            return blank, blank, blank, _message(_explain(exc))

    return app


def preload(storage_url: str) -> str | None:
    """Read what the first page shows (the latest study's trials, front and hypervolume) into the cache.

    Returns the study read, or None (nothing to read, or the storage cannot be read: the page will say why).
    """
    try:
        st = D.open_storage(storage_url)
        name = D.latest_study(st)
        if name is None:
            return None
        info = D.study_info(st, name)
        D.studies_frame(st, summary=False)
        D.available_metrics(st, name)
        axes = list(info.objectives[:2])
        D.pareto_frame(st, name, axes)
        D.hypervolume_frame(st, [name], axes)
    except NasplatError:
        return None
    return name


def serve(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh_s: float = 5.0,
    export_dir: Path | str = "nasplat-exports",
    preload_latest: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard for ``storage_url`` until interrupted (Werkzeug's threaded server).

    With ``preload_latest``, the landing view (the latest study's Pareto front) is read before serving.
    """
    from werkzeug.serving import make_server

    app = make_app(storage_url, refresh_s=refresh_s, export_dir=export_dir, host=host)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        server = make_server(host, port, app.server, threaded=True)
    except OSError as exc:
        raise NasplatError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:  # open the storage now so that an unreachable one is reported on the terminal too
        D.check_storage(storage_url)
    except NasplatError as exc:
        echo(f"warning: {exc} (the page will say so and keep checking)")
    else:
        if preload_latest:
            t0 = time.perf_counter()
            name = preload(storage_url)
            if name:
                echo(f"read study '{name}' in {time.perf_counter() - t0:.1f} s")
    echo(
        f"nasplat dashboard for {D.safe_url(storage_url)} (read-only) on http://{host}:{server.port}/ · Ctrl-C stops it"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
