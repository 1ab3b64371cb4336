"""The Pareto view: two or three metrics, constraint sliders, overlaid fronts of other studies, and the
hypervolume against trials and wall-clock time; the table of front trials."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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

SLIDER_STEPS = 200


def layout(p: Props = no_props) -> Any:
    from dash import dcc, html
    from dash.dash_table.DataTable import DataTable

    return view(
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
                    html.Div([html.Label("z axis (optional)"), dcc.Dropdown(id="axis-z", **p("axis-z"))]),
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
                            html.Label("overlay studies (their trials and fronts)"),
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
                                        "label": f"density above {F.DENSITY_THRESHOLD:,} trials, points near the front",
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
                graph("pareto-graph", 520, **p("pareto-graph")),
                className="card",
            ),
            html.Div(
                [
                    html.Div(
                        graph("hv-trials", 330, **p("hv-trials")),
                        className="card",
                    ),
                    html.Div(
                        graph("hv-time", 330, **p("hv-time")),
                        className="card",
                    ),
                ],
                className="grid2",
            ),
            html.H3("Front trials (click a row to open the architecture)"),
            DataTable(id="front-table", **p("front-table", sort_action="native", page_size=15, **TABLE_STYLE)),
        ],
        p,
    )


def controls_state(
    env: ViewEnv,
    study: str | None,
    trigger: Any,
    constrain: list[str] | None,
    x: str | None,
    y: str | None,
    z: str | None,
    positions: list[Any],
    ids: list[dict[str, str]],
    old_bounds: dict[str, Any] | None,
) -> tuple[Any, ...]:
    """Axes, constrainable metrics and devices of the study, and one slider per constrained metric: the
    outputs of the controls callback, in its order (one callback, so the view waits for one round trip)."""
    from dash import no_update

    any_device = [{"label": "any device", "value": "any"}]
    none: tuple[Any, ...] = ([], [], [], None, None, None, [], [], any_device, [], {})
    if not study:
        return none
    try:
        st = env.storage()
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
        children, bounds = sliders(st, info, study, constrain, keep, old_bounds or {})
    except Exception:
        children, bounds = [], {}
    if trigger == "sig" and bounds == (old_bounds or {}) and len(ids) == len(children):
        # nothing moved: keep the sliders as they are
        return options, options, options, x, y, z, options, constrain, device_options, no_update, no_update
    return options, options, options, x, y, z, options, constrain, device_options, children, bounds


def sliders(
    st: D.Storage, info: D.StudyInfo, study: str, constrain: list[str], keep: dict[str, Any], old_bounds: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    from dash import dcc, html

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
        default = 0 if direction == "maximize" else SLIDER_STEPS
        pos = keep.get(m, default)
        if old and pos is not None and keep.get(m) is not None and old[:2] != [lo, hi] and pos != default:
            # the data range moved (new trials): keep the same threshold value (a slider at its open end,
            # constraining nothing, stays there)
            threshold = old[0] + (old[1] - old[0]) * pos / SLIDER_STEPS
            pos = round((threshold - lo) / (hi - lo) * SLIDER_STEPS) if hi > lo else default
            pos = min(max(pos, 0), SLIDER_STEPS)
        children.append(
            html.Div(
                [
                    html.Div(id={"type": "constraint-label", "metric": m}, className="slider-label"),
                    dcc.Slider(
                        id={"type": "constraint", "metric": m},
                        min=0,
                        max=SLIDER_STEPS,
                        step=1,
                        value=pos,
                        marks={0: fmt(lo), SLIDER_STEPS: fmt(hi)},
                        updatemode="mouseup",
                        allow_direct_input=False,
                    ),
                ],
                className="slider-box",
            )
        )
    return children, bounds


def compare_state(env: ViewEnv, study: str | None, device: str | None) -> Any:
    try:
        studies = D.studies_frame(env.storage(), summary=False)
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


def pareto_state(
    env: ViewEnv,
    x: str | None,
    y: str | None,
    z: str | None,
    compare: list[str] | None,
    positions: list[Any],
    view: str,
    ids: list[dict[str, str]],
    bounds: dict[str, Any] | None,
    study: str | None,
    points: str | None = "auto",
) -> tuple[Any, ...]:
    from dash import no_update

    labels: list[Any] = [no_update] * len(ids)
    if view != "pareto":
        return (no_update,) * 7 + (labels, no_update)
    blank = F.message_figure("choose a study above")
    if not study:
        msg = message("choose a study in the list at the top", "info")
        return blank, blank, blank, None, msg, [], [], labels, []
    try:
        st = env.storage()
        D.study_info(st, study)  # an unknown or unreadable study says why here
    except Exception as exc:
        blank = F.message_figure("nothing to show")
        return blank, blank, blank, None, message(explain(exc)), [], [], labels, []
    if x and not y:  # a single-objective study (and no other metric): no front to draw
        msg = message(
            f"study '{study}' records one metric ({x}): a Pareto front needs two; the Trials view lists its trials",
            "info",
        )
        blank = F.message_figure("one metric only")
        return blank, blank, blank, None, msg, [], [], labels, []
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
            threshold = lo + (hi - lo) * float(pos) / SLIDER_STEPS
            if direction == "maximize":
                constraints[m] = (threshold, None) if pos > 0 else (None, None)
                texts.append(f"{m} ≥ {fmt(threshold)}")
            else:
                constraints[m] = (None, threshold) if pos < SLIDER_STEPS else (None, None)
                texts.append(f"{m} ≤ {fmt(threshold)}")
        active_constraints = {k: v for k, v in constraints.items() if v != (None, None)}
        frame = D.pareto_frame(st, study, axes, active_constraints)
        others = [s for s in (compare or []) if s != study]
        overlay = D.overlay_frame(st, study, others, axes, active_constraints) if others else None
        fig = F.pareto_figure(frame, overlay, points=points if points in F.POINTS else "auto")
        drawn = [str(s) for s in pd.unique(overlay["study"])] if overlay is not None else []
        hv = D.hypervolume_frame(st, [study, *drawn], axes, active_constraints)
        hv_trials = F.hypervolume_figure(hv, "trials")
        hv_time = F.hypervolume_figure(hv, "elapsed_s")
    except Exception as exc:
        blank = F.message_figure("nothing to show")
        return blank, blank, blank, None, message(explain(exc)), [], [], labels, []
    n_ok = int(frame["feasible"].sum()) if not frame.empty else 0
    n_front = int(frame["front"].sum()) if not frame.empty else 0
    status = f"{n_ok} of {len(frame)} completed trials within the constraints · {n_front} on the front"
    if overlay is not None and drawn:
        ok = overlay["feasible"].astype(bool)
        status += (
            f" · overlaid: {len(drawn)} {'study' if len(drawn) == 1 else 'studies'}, {int(ok.sum()):,} of "
            f"{len(overlay):,} trials within the constraints, {int(overlay['front'].sum())} on their fronts"
        )
    info = D.study_info(st, study)
    if info.nasplat:
        status += " · " + D.trust_line(info.attrs)
    text = D.overlay_message(overlay) if overlay is not None else None
    msg = message(text, "info") if text else None
    front = frame[frame["front"].astype(bool)].drop(columns=["feasible", "front"])
    studies_shown = F.trace_studies(fig)
    return (fig, hv_trials, hv_time, status, msg, records(front), columns(front), texts, studies_shown)


def register_callbacks(app: Any, env: ViewEnv) -> None:
    from dash import ALL, Input, Output, State, ctx

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
    def pareto_controls(
        study: str | None,
        _sig: Any,
        constrain: list[str] | None,
        x: str | None,
        y: str | None,
        z: str | None,
        positions: list[Any],
        ids: list[dict[str, str]],
        old_bounds: dict[str, Any] | None,
    ) -> tuple[Any, ...]:
        """Axes, constrainable metrics and devices of the study, and one slider per constrained metric.

        One callback, so that the Pareto view waits for a single round trip before drawing.
        """
        return controls_state(env, study, ctx.triggered_id, constrain, x, y, z, positions, ids, old_bounds)

    @app.callback(
        Output("compare", "options"),
        Input("study", "value"),
        Input("device", "value"),
        Input("sig", "data"),
        prevent_initial_call=True,
    )
    def compare_options(study: str | None, device: str | None, _sig: Any) -> Any:
        return compare_state(env, study, device)

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
    def pareto_view(
        x: str | None,
        y: str | None,
        z: str | None,
        compare: list[str] | None,
        positions: list[Any],
        view: str,
        _sig: Any,
        points: str | None,
        ids: list[dict[str, str]],
        bounds: dict[str, Any] | None,
        study: str | None,
    ) -> tuple[Any, ...]:
        return pareto_state(env, x, y, z, compare, positions, view, ids, bounds, study, points)
