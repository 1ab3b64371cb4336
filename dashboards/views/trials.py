"""The trials view: a server-side sortable, filterable and paged table of every trial, and parallel
coordinates of the choices coloured by a metric."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import pandas as pd

from .. import data as D
from .. import figures as F
from .common import (
    DEFAULT_PAGE_SIZE,
    TABLE_STYLE,
    Props,
    ViewEnv,
    columns,
    explain,
    graph,
    message,
    no_props,
    page_size,
    records,
    short,
    view,
)

STATES = ("COMPLETE", "RUNNING", "FAIL", "PRUNED", "WAITING")
_HIDDEN = ["arch_key", "datetime_start", "datetime_complete", "elapsed_s"]


def layout(p: Props = no_props) -> Any:
    from dash import dcc, html
    from dash.dash_table.DataTable import DataTable

    return view(
        "trials",
        [
            html.Div(id="trials-message"),
            html.Div(id="trials-status", className="status"),
            DataTable(
                id="trials-table",
                page_action="custom",
                page_current=0,
                page_size=DEFAULT_PAGE_SIZE,
                sort_action="custom",
                sort_mode="multi",
                sort_by=[],
                filter_action="custom",
                filter_query="",
                **TABLE_STYLE,
            ),
            html.Div(
                [html.Div([html.Label("colour lines by"), dcc.Dropdown(id="pc-color", clearable=False)])],
                className="controls",
            ),
            html.Div(graph("parallel-graph", 420), className="card"),
        ],
        p,
    )


_tables: OrderedDict[tuple[Any, ...], tuple[pd.DataFrame, int]] = OrderedDict()
_tables_lock = threading.Lock()


def table_frame(env: ViewEnv, study: str) -> tuple[pd.DataFrame, int]:
    """The columns the trials table shows, of every trial of ``study``, and how many trials there are.

    Kept (for the last few studies shown) until the storage changes: a sort, a filter or a page of a large study
    then only queries this frame, without assembling every column of every trial again (0.8 s at 50,000 trials).
    """
    st = env.storage()
    key = (st.url, study, D.storage_signature(st))
    with _tables_lock:
        hit = _tables.get(key)
        if hit is not None:
            _tables.move_to_end(key)
            return hit
    frame = D.trials_frame(st, study, states=STATES, attributes=True)
    hit = (frame.drop(columns=_HIDDEN, errors="ignore"), len(frame))
    with _tables_lock:
        _tables[key] = hit
        while len(_tables) > 4:
            _tables.popitem(last=False)
    return hit


def trials_state(env: ViewEnv, study: str | None, page: int | None, size: Any,
                 sort_by: list[dict[str, str]] | None, filter_query: str | None) -> tuple[Any, ...]:  # fmt: skip
    """The table's page (rows, columns, page count), the status line and a message."""
    if not study:
        return [], [], 1, None, message("choose a study in the list at the top", "info")
    try:
        shown, n_all = table_frame(env, study)
        n = page_size(size)  # the client's number: clamped, never trusted
        rows, total = D.query_trials(
            shown, filter_query=filter_query, sort_by=sort_by, page=max(int(page or 0), 0), page_size=n
        )
    except Exception as exc:
        return [], [], 1, None, message(explain(exc))
    names = {c: short(c) for c in map(str, shown.columns)}
    status = (
        f"{total:,} of {n_all:,} trials match"
        + (f" the filter {filter_query}" if filter_query else "")
        + " · click a row to open its architecture · filter with e.g. >= 0.8, contains conv"
    )
    page_rows = rows.copy()
    page_rows["id"] = page_rows["trial"]
    return records(page_rows), columns(shown, names), max(1, math.ceil(total / n)), status, None


def color_options(env: ViewEnv, study: str | None, current: str | None, switched: bool) -> tuple[Any, ...]:
    """The metrics to colour the parallel coordinates by, and the one chosen."""
    if not study:
        return [], None
    try:
        metrics = D.available_metrics(env.storage(), study)
    except Exception:
        return [], None
    value = current if current in metrics and not switched else (metrics[0] if metrics else None)
    return [{"label": m, "value": m} for m in metrics], value


def parallel_state(env: ViewEnv, study: str | None, color: str | None) -> Any:
    """The parallel coordinates figure of the study's choices, coloured by ``color``."""
    if not study or not color:
        return F.message_figure("choose a study and a metric")
    try:
        info = D.study_info(env.storage(), study)
        frame = D.trials_frame(env.storage(), study)
        return F.parallel_figure(frame, D.choice_columns(frame), color, info.direction_of(color))
    except Exception as exc:
        return F.message_figure(explain(exc))


def register_callbacks(app: Any, env: ViewEnv) -> None:
    from dash import Input, Output, State, ctx, no_update

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
    def trials_view(study: str | None, _sig: Any, current: str, page: int | None, size: int | None,
                    sort_by: list[dict[str, str]] | None, filter_query: str | None) -> tuple[Any, ...]:  # fmt: skip
        if current != "trials":
            return (no_update,) * 5
        return trials_state(env, study, page, size, sort_by, filter_query)

    @app.callback(
        Output("pc-color", "options"),
        Output("pc-color", "value"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        State("pc-color", "value"),
        prevent_initial_call=True,
    )
    def pc_options(study: str | None, _sig: Any, current_view: str, current: str | None) -> tuple[Any, ...]:
        if study and current_view != "trials":
            return no_update, no_update
        return color_options(env, study, current, ctx.triggered_id == "study")

    @app.callback(
        Output("parallel-graph", "figure"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        Input("pc-color", "value"),
        prevent_initial_call=True,
    )
    def parallel_view(study: str | None, _sig: Any, current: str, color: str | None) -> Any:
        if current != "trials":
            return no_update
        return parallel_state(env, study, color)
