"""The studies overview: every study in the storage, its status, best values and hypervolume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import data as D
from .common import TABLE_STYLE, Props, ViewEnv, columns, explain, fmt, message, no_props, records, view

COLUMNS = ["study", "status", "trials", "best values", "hypervolume", "space", "family", "objectives", "devices",
           "sampler", "estimator", "dataset", "running", "failed", "last_update", "hv_reference", "problem"]  # fmt: skip


def layout(p: Props = no_props) -> Any:
    from dash import html
    from dash.dash_table.DataTable import DataTable

    return view(
        "studies",
        [
            html.Div(id="studies-message"),
            html.P("Every study in the storage; click a row to open its Pareto front.", className="status"),
            DataTable(id="studies-table", sort_action="native", page_size=50, **TABLE_STYLE),
            html.Div(
                [html.H3(id="study-attrs-title"), DataTable(id="study-attrs", page_size=50, **TABLE_STYLE)],
                className="card",
            ),
        ],
        p,
    )


def studies_state(env: ViewEnv) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """The studies table's rows and columns, and a message (None when there is none)."""
    try:
        frame = D.studies_frame(env.storage())
    except Exception as exc:
        return [], [], message(explain(exc))
    if frame.empty:
        return [], [], message("no study in this storage yet", "info")
    frame = frame.copy()
    frame["trials"] = [
        f"{c}/{t}" if isinstance(t, (int, np.integer)) else str(c)
        for c, t in zip(frame["complete"], frame["target"], strict=True)
    ]
    frame["problem"] = frame["problem"].fillna("")
    best_cols = [c for c in frame.columns if str(c).startswith("best ")]
    frame["best values"] = [
        " · ".join(f"{c.removeprefix('best ')} {fmt(row[c])}" for c in best_cols if not pd.isna(row[c])) or "-"
        for _, row in frame.iterrows()
    ]
    frame["hypervolume"] = frame["hypervolume"].map(lambda v: fmt(v) if v is not None and not pd.isna(v) else "-")
    frame = frame[COLUMNS]
    frame["last_update"] = frame["last_update"].map(
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if not pd.isna(t) else "-"
    )
    return records(frame), columns(frame), None


def attributes_state(env: ViewEnv, study: str | None) -> tuple[Any, ...]:
    """The chosen study's objectives and user attributes: a title, the table's rows and columns."""
    if not study:
        return "Choose a study to see its objectives and attributes", [], []
    try:
        frame = D.study_attributes(env.storage(), study)
    except Exception as exc:
        return explain(exc), [], []
    return f"Study '{study}': objectives and attributes", records(frame), columns(frame)


def picked_study(cell: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> str | None:
    """The study of the clicked row (None when no row was clicked)."""
    if not cell or not rows or not 0 <= cell.get("row", -1) < len(rows):
        return None
    return str(rows[cell["row"]]["study"])


def register_callbacks(app: Any, env: ViewEnv) -> None:
    from dash import Input, Output, State, no_update

    @app.callback(
        Output("studies-table", "data"),
        Output("studies-table", "columns"),
        Output("studies-message", "children"),
        Input("sig", "data"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def studies_view(_sig: str | None, current: str) -> tuple[Any, ...]:
        if current != "studies":
            return no_update, no_update, no_update
        return studies_state(env)

    @app.callback(
        Output("study-attrs-title", "children"),
        Output("study-attrs", "data"),
        Output("study-attrs", "columns"),
        Input("study", "value"),
        Input("sig", "data"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def study_attrs_view(study: str | None, _sig: str | None, current: str) -> tuple[Any, ...]:
        if current != "studies":
            return no_update, no_update, no_update
        return attributes_state(env, study)

    @app.callback(
        Output("study", "value", allow_duplicate=True),
        Output("view", "value", allow_duplicate=True),
        Input("studies-table", "active_cell"),
        State("studies-table", "data"),
        prevent_initial_call=True,
    )
    def pick_study(cell: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> tuple[Any, ...]:
        name = picked_study(cell, rows)
        return (no_update, no_update) if name is None else (name, "pareto")
