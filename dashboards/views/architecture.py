"""The architecture view: one trial's drawing (the family's own), choices, measured and predicted metrics,
provenance, and the export action (a bundle written under the export folder, then downloaded as a zip)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from nasplat.errors import NasplatError

from .. import data as D
from .. import figures as F
from .common import (
    TABLE_STYLE,
    Props,
    ViewEnv,
    columns,
    explain,
    fmt,
    graph,
    message,
    no_props,
    records,
    view,
)

#: a bundle folder name the export action accepts
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def layout(p: Props = no_props) -> Any:
    from dash import dcc, html
    from dash.dash_table.DataTable import DataTable

    return view(
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
                            graph("arch-graph", 400),
                            html.Div(id="arch-note"),
                        ],
                        className="card",
                    ),
                    html.Div(
                        [
                            html.H3("Choices"),
                            DataTable(id="arch-choices", **TABLE_STYLE),
                            html.H3("Metrics: measured and predicted"),
                            DataTable(id="arch-metrics", **TABLE_STYLE),
                        ],
                        className="card",
                    ),
                ],
                className="grid2",
            ),
            html.Div(
                graph("arch-compare", 300),
                id="arch-compare-box",
                className="card",
                style={"display": "none"},
            ),
            html.Div(
                [
                    html.H3("Provenance"),
                    DataTable(id="arch-provenance", **TABLE_STYLE),
                    html.H3("Other trial attributes"),
                    DataTable(id="arch-attributes", **TABLE_STYLE),
                ],
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
                    html.Button("Export and download (.zip)", id="export-button", className="action", n_clicks=0),
                    dcc.Loading(html.Div(id="export-result"), type="dot"),
                    dcc.Download(id="export-download"),
                ],
                className="card",
            ),
        ],
        p,
    )


def options_state(env: ViewEnv, study: str | None, search: str | None, request: dict[str, Any] | None,
                  trigger: Any, current: Any) -> tuple[Any, ...]:  # fmt: skip
    """The trials to choose from (front trials first, starred), and the one to show: the trial asked for
    (a click, a table row, the URL), else the current one, else the front's knee."""
    from dash import no_update

    if not study:
        return [], None
    try:
        st = env.storage()
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
    if request and request.get("study") == study and trigger in ("trial-request", "study", "view", None):
        asked = int(request["trial"]) if int(request["trial"]) in known else None
    if asked is not None:
        value = asked
    elif trigger == "study" or value is None or int(value) not in known:
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
        vals = ", ".join(f"{m} {fmt(row[m])}" for m in info.objectives)
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


def arch_state(env: ViewEnv, trial: int | None, study: str | None) -> tuple[Any, ...]:
    """Everything the view shows of one trial: title, drawing, note, choices, metrics, the measured/predicted
    figure and its box's style, provenance, the other trial attributes, a message, and the export folder name.

    Any trial of any Optuna study can be shown: without nasplat's attributes, its parameters, objectives and
    user attributes."""
    from dash import no_update

    empty = F.message_figure("")
    hidden = {"display": "none"}
    if not study or trial is None:
        msg = message("choose a study, then a trial (or click a point of the Pareto front)", "info")
        return None, empty, None, [], [], [], [], empty, hidden, [], [], [], [], msg, no_update
    try:
        rec = D.architecture_record(env.storage(), study, int(trial))
    except Exception as exc:
        return None, empty, None, [], [], [], [], empty, hidden, [], [], [], [], message(explain(exc)), no_update
    title = f"Trial {rec.trial} of '{rec.study}' · {rec.state}" + (" · on the Pareto front" if rec.on_front else "")
    if rec.arch:
        title += f" · {rec.arch}"
    fig = F.graph_figure(rec.description, f"{rec.family} architecture") if rec.description else None
    note = rec.note
    if fig is None and rec.family == "?":
        fig = F.message_figure("the study names no search-space family: its parameters are listed beside", "Trial")
    elif fig is None:
        fig = F.message_figure(
            f"the '{rec.family}' family has no drawing here: its choices are listed beside", "Architecture"
        )
    compare = F.metrics_compare_figure(rec.metrics)
    metrics = rec.metrics.copy()
    for c in ("measured", "predicted"):
        metrics[c] = metrics[c].map(lambda v: fmt(v) if v is not None and not pd.isna(v) else "-")
    metrics["objective"] = metrics["objective"].map(lambda b: "yes" if b else "")
    prov = pd.DataFrame(
        [(k, v if isinstance(v, str) else str(v)) for k, v in sorted(rec.provenance.items())],
        columns=["key", "value"],
    )
    others = pd.DataFrame(
        [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in rec.attributes.items()],
        columns=["key", "value"],
    )
    choices = rec.choices.assign(value=rec.choices["value"].map(str))
    name = f"{rec.study}-trial{rec.trial}"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return (
        title,
        fig,
        message(note, "info") if note else None,
        records(choices),
        columns(choices),
        records(metrics),
        columns(metrics),
        compare if compare is not None else empty,
        {"display": "block"} if compare is not None else hidden,
        records(prov),
        columns(prov),
        records(others),
        columns(others),
        None,
        name,
    )


def export_target(env: ViewEnv, name: str | None, study: str, trial: int) -> Path:
    name = (name or "").strip() or f"{study}-trial{trial}"
    if not NAME_OK.match(name) or ".." in name:
        raise NasplatError(
            f"bundle folder name '{name}' is not allowed: use letters, digits, '.', '_' and '-' only "
            f"(bundles go under {env.export_root})"
        )
    return env.export_root / name


def command_state(
    env: ViewEnv, trial: int | None, study: str | None, name: str | None, replace: list[str] | None
) -> str:
    """The shell command that makes the same export (or why it cannot be made)."""
    if not study or trial is None:
        return "choose a trial first"
    try:
        target = export_target(env, name, study, int(trial))
        return D.export_command(env.storage_url, study, int(trial), target, overwrite=bool(replace))
    except NasplatError as exc:
        return str(exc)


def export_state(
    env: ViewEnv, n: int, trial: int | None, study: str | None, name: str | None, replace: list[str] | None
) -> Any:
    """Write the bundle under the export folder, then send it to the browser as a zip."""
    from dash import dcc, no_update

    if not n or not study or trial is None:
        return no_update, no_update
    try:
        target = export_target(env, name, study, int(trial))
        if D.bundle_exists(target) and not replace:
            return (
                message(
                    f"a bundle named '{target.name}' already exists in {env.export_root}: tick 'replace an existing "
                    "bundle of this name' to overwrite it, or choose another folder name",
                    "info",
                ),
                no_update,
            )
        bundle = D.run_export(env.storage(), study, int(trial), target, overwrite=bool(replace))
        archive = D.bundle_zip(bundle)
    except Exception as exc:
        return message(f"export failed: {explain(exc)}"), no_update
    text = (
        f"exported trial {trial} of '{study}' to {bundle}; downloading {bundle.name}.zip "
        f"({len(archive) / 1024:,.0f} KiB)"
    )
    return message(text, "info"), dcc.send_bytes(archive, f"{bundle.name}.zip")


def register_callbacks(app: Any, env: ViewEnv) -> None:
    from dash import Input, Output, State, ctx, no_update

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
                     current_view: str, current: Any) -> tuple[Any, ...]:  # fmt: skip
        if study and current_view != "architecture":
            return no_update, no_update  # filled when the view opens
        return options_state(env, study, search, request, ctx.triggered_id, current)

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
        Output("arch-attributes", "data"),
        Output("arch-attributes", "columns"),
        Output("arch-message", "children"),
        Output("export-name", "value"),
        Input("arch-trial", "value"),
        Input("study", "value"),
        Input("view", "value"),
        prevent_initial_call=True,
    )
    def arch_view(trial: int | None, study: str | None, current_view: str) -> tuple[Any, ...]:
        if current_view != "architecture":
            return (no_update,) * 15
        return arch_state(env, trial, study)

    @app.callback(
        Output("export-command", "children"),
        Input("arch-trial", "value"),
        Input("study", "value"),
        Input("export-name", "value"),
        Input("export-overwrite", "value"),
        prevent_initial_call=True,
    )
    def export_command(trial: int | None, study: str | None, name: str | None, replace: list[str] | None) -> str:
        return command_state(env, trial, study, name, replace)

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
        return export_state(env, n, trial, study, name, replace)
