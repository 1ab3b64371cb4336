"""Figures for the dashboards: each takes what a ``*_frame`` function of :mod:`.data` returned and draws it.

Nothing here reads a storage or computes results; all figures are plain plotly ``go.Figure`` objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: colours of overlaid studies (the first is the selected study)
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#e7969c")  # fmt: skip
_TRIALS_COLOR = "#6baed6"
_EXCLUDED_COLOR = "#d9d9d9"
#: above this many points, scatter plots use WebGL
_GL_THRESHOLD = 2000
#: above this many trials, a 2-D Pareto plot draws them as a density by default (see :func:`pareto_figure`)
DENSITY_THRESHOLD = _GL_THRESHOLD
#: at least this many trials nearest the front stay points over the density
NEAR_FRONT_POINTS = 400
_DENSITY_BINS = (160, 100)  # x, y
_FEASIBLE_SCALE = [[0.0, "#c6dbef"], [0.15, "#6baed6"], [0.5, "#2171b5"], [1.0, "#08306b"]]
_EXCLUDED_SCALE = [[0.0, "#ececec"], [1.0, "#9e9e9e"]]

TRACE_FEASIBLE = "trials within constraints"
TRACE_EXCLUDED = "trials outside constraints"
#: the points drawn over a density: the feasible trials nearest the front
TRACE_NEAR = "trials within constraints, nearest the front"
#: a density trace's name is the name of the points it stands for, with this after it
DENSITY_SUFFIX = " (density)"
#: an overlaid study's trials within the constraints (drawn as points), followed by the study's name
TRACE_OTHER = "trials of "
#: the overlaid studies' trials within the constraints not drawn as points, above the density threshold
TRACE_OVERLAY = "trials of the overlaid studies"
#: at least this many trials nearest its front stay points for each overlaid study over a density
NEAR_OVERLAY_POINTS = 40
_OVERLAY_SCALE = [[0.0, "#fde0c5"], [1.0, "#d94801"]]
POINTS = ("auto", "all")


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    settings: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "legend": {"orientation": "h", "y": -0.18},
    }
    fig.update_layout(**{**settings, **kw})
    return fig


@cache
def _template() -> dict[str, Any]:
    import plotly.io as pio

    return dict(pio.templates["plotly_white"].to_plotly_json())


def _figure(traces: list[dict[str, Any]], title: str, **kw: Any) -> go.Figure:
    """A figure from plain trace and layout dicts, as :func:`_layout` lays figures out, built without plotly.py's
    validation: on a plot of a few dozen traces that validation takes longer than everything else on the server.
    The traces hold only properties plotly.js knows (what :mod:`.figures` writes)."""
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": _template(),
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "legend": {"orientation": "h", "y": -0.18},
        **kw,
    }
    return go.Figure(data=traces, layout=layout, _validate=False)


def message_figure(text: str, title: str = "") -> go.Figure:
    """An empty plot that says ``text`` (e.g. "no data yet")."""
    note = {
        "text": text,
        "x": 0.5,
        "y": 0.5,
        "xref": "paper",
        "yref": "paper",
        "showarrow": False,
        "font": {"size": 15},
    }
    return _figure([], title, height=300, annotations=[note], xaxis={"visible": False}, yaxis={"visible": False})


def axis_title(metric: str, direction: str) -> str:
    return f"{metric} ({'higher' if direction == 'maximize' else 'lower'} is better)"


def _hovertemplate(axes: Sequence[str], name: str) -> str:
    coords = ("x", "y", "z")
    lines = "".join(f"<br>{a} = %{{{c}:.6g}}" for a, c in zip(axes, coords, strict=False))
    return f"trial %{{customdata}}{lines}<extra>{name}</extra>"


def pareto_figure(frame: pd.DataFrame, fronts: pd.DataFrame | None = None, *, title: str | None = None,
                  points: str = "auto") -> go.Figure:  # fmt: skip
    """Trials of one study on 2 or 3 axes: within / outside constraints, its front, and other studies overlaid.

    ``frame`` is :func:`.data.pareto_frame`'s result. ``fronts``: the studies to overlay, either
    :func:`.data.overlay_frame`'s result (every trial; ``attrs["overlay"]`` is set: each study's trials within
    the constraints and its front are drawn in its own colour, under one legend group) or
    :func:`.data.fronts_frame`'s (their fronts only). Every point carries its trial number in ``customdata`` and
    every trace its study in ``meta`` (see :func:`trace_studies`).

    ``points="all"`` draws every trial as a point (WebGL above 2,000). ``"auto"`` does so too, except on 2 axes
    with more than :data:`DENSITY_THRESHOLD` trials in all: there the selected study's trials are drawn as a
    density (a heat map of trials per cell, one for those within and one for those outside the constraints)
    under points for its front and for at least :data:`NEAR_FRONT_POINTS` feasible trials nearest it (whole
    non-dominated layers); each overlaid study keeps its front and the feasible trials of its first
    non-dominated layers as points in its colour, and the rest of the overlaid studies' feasible trials are
    one density (:data:`TRACE_OVERLAY`). Every trial within the constraints is counted once: in a density, or
    as a point. A browser draws this without WebGL, which in software rendering costs about half a second
    before the first point shows.
    """
    axes: list[str] = list(frame.attrs.get("axes") or [])
    directions: list[str] = list(frame.attrs.get("directions") or ["minimize"] * len(axes))
    study = str(frame.attrs.get("study", ""))
    three = len(axes) == 3
    n = len(frame)
    if n == 0:
        return message_figure("no completed trials yet", title or f"Pareto front of '{study}'")
    if points not in POINTS:
        raise ValueError(f"points must be one of {POINTS}, got {points!r}")
    overlay = fronts is not None and not fronts.empty and bool(fronts.attrs.get("overlay"))
    others = (
        [str(s) for s in pd.unique(fronts["study"]) if s != study] if fronts is not None and not fronts.empty else []
    )
    traces: list[dict[str, Any]] = []

    def scatter(part: pd.DataFrame, name: str, color: str, *, size: int = 6, line: bool = False,
                symbol: str = "circle", who: str = study, group: str | None = None,
                opacity: float | None = None, legend: bool = True) -> None:  # fmt: skip
        part = part.sort_values(axes[0]) if line else part
        trace: dict[str, Any] = {
            "name": name,
            "meta": who,
            # a plain list: Dash's clickData leaves out customdata held in typed arrays
            "customdata": [int(t) for t in part["trial"].tolist()],
            "hovertemplate": _hovertemplate(axes, name),
            "mode": "lines+markers" if line else "markers",
            "x": part[axes[0]].to_numpy(dtype=float),
        }
        if group is not None:  # one legend entry (the front's) shows and hides the study's trials and front
            trace["legendgroup"] = group
        if not legend:
            trace["showlegend"] = False
        marker: dict[str, Any] = {"color": color, "size": size, "symbol": symbol}
        if opacity is not None:
            marker["opacity"] = opacity
        if three:
            marker["size"] = max(size - 2, 2)
            trace.update(type="scatter3d", y=part[axes[1]].to_numpy(dtype=float), z=part[axes[2]].to_numpy(dtype=float))
            traces.append({**trace, "marker": marker})
            return
        trace["type"] = "scattergl" if len(part) > _GL_THRESHOLD else "scatter"
        trace["y"] = part[axes[1]].to_numpy(dtype=float) if len(axes) > 1 else np.zeros(len(part))
        if line:  # the staircase of the attained region: across first when x is minimised, up or down first otherwise
            trace["line"] = {"shape": "hv" if directions[0] == "minimize" else "vh", "color": color, "width": 2}
        traces.append({**trace, "marker": marker})

    ok_mask = frame["feasible"].to_numpy(dtype=bool)
    feasible, excluded = frame[ok_mask], frame[~ok_mask]
    front = frame[frame["front"].to_numpy(dtype=bool)]
    everything = pd.concat([frame[axes], fronts[axes]]) if overlay and fronts is not None else frame[axes]
    log_axes = [not three and len(axes) > i and _wide(everything[axes[i]]) for i in range(2)]
    dense = points == "auto" and len(axes) == 2 and len(everything) > DENSITY_THRESHOLD
    overlaid: list[tuple[str, str, pd.DataFrame, pd.DataFrame]] = []  # study, colour, trials drawn, its front
    if fronts is not None and not fronts.empty:
        by_study = dict(tuple(fronts.groupby("study", sort=False)))
        for i, other in enumerate(others, start=1):
            part = by_study[other]
            color = PALETTE[i % len(PALETTE)]
            if overlay:
                ok = part[part["feasible"].to_numpy(dtype=bool)]
                overlaid.append((str(other), color, ok, ok[ok["front"].to_numpy(dtype=bool)]))
            else:
                overlaid.append((str(other), color, part.iloc[0:0], part))
    if dense:
        grid = _bins(everything.to_numpy(dtype=float), log_axes)
        near = feasible.iloc[_nearest_front(feasible[axes].to_numpy(dtype=float), directions, NEAR_FRONT_POINTS)]
        rest = feasible.drop(index=near.index)
        if overlay:
            per_study = max(NEAR_FRONT_POINTS // max(len(overlaid), 1), NEAR_OVERLAY_POINTS)
            drawn, left = [], []
            for who, color, ok, own in overlaid:
                keep = np.zeros(len(ok), dtype=bool)
                keep[_nearest_front(ok[axes].to_numpy(dtype=float), directions, per_study)] = True
                drawn.append((who, color, ok[keep], own))
                left.append(ok[axes].to_numpy(dtype=float)[~keep])
            overlaid = drawn
            remaining = np.vstack(left) if left else np.zeros((0, 2))
            traces.append(_density(remaining, axes, grid, TRACE_OVERLAY, _OVERLAY_SCALE, "", opacity=0.6))
        traces.append(
            _density(excluded[axes].to_numpy(dtype=float), axes, grid, TRACE_EXCLUDED, _EXCLUDED_SCALE, study)
        )
        traces.append(
            _density(rest[axes].to_numpy(dtype=float), axes, grid, TRACE_FEASIBLE, _FEASIBLE_SCALE, study, scale=True)
        )
        scatter(near, TRACE_NEAR, _TRIALS_COLOR, size=6)
    else:
        scatter(excluded, TRACE_EXCLUDED, _EXCLUDED_COLOR, size=5)
        scatter(feasible, TRACE_FEASIBLE, _TRIALS_COLOR, size=6)
    if not front.empty:
        scatter(front, f"front: {study}", PALETTE[0], size=10, line=not three, symbol="diamond")
    for who, color, ok, own in overlaid:
        if overlay and not ok.empty:
            scatter(ok, f"{TRACE_OTHER}{who}", color, size=5, who=who, group=who, opacity=0.55, legend=False)
        if not own.empty:
            scatter(own, f"front: {who}", color, size=8, line=not three, who=who, group=who)
    head = title or (
        f"Pareto front of '{study}': {len(front)} on the front, {len(feasible)} of {n} trials within constraints"
        + (f" · {len(others)} {'study' if len(others) == 1 else 'studies'} overlaid" if others else "")
    )
    titles = [axis_title(a, d) for a, d in zip(axes, directions, strict=False)]
    if three:
        scene = {f"{c}axis": {"title": {"text": t}} for c, t in zip("xyz", titles, strict=False)}
        return _figure(traces, head, height=520, clickmode="event", scene=scene)
    xaxis: dict[str, Any] = {"title": {"text": titles[0]}}
    yaxis: dict[str, Any] = {"title": {"text": titles[1]}} if len(axes) > 1 else {}
    if log_axes[0]:
        xaxis["type"] = "log"
    if log_axes[1]:
        yaxis["type"] = "log"
    return _figure(traces, head, height=520, clickmode="event", xaxis=xaxis, yaxis=yaxis)


def _nearest_front(values: np.ndarray, directions: Sequence[str], count: int, max_layers: int = 400) -> np.ndarray:
    """Positions of the 2-D points in the first non-dominated layers, whole layers until at least ``count``
    (at most ``max_layers`` layers; points with a missing value are never taken)."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions[:2]])
    v = np.asarray(values, dtype=float).reshape(-1, 2) * signs
    idx = np.flatnonzero(np.all(np.isfinite(v), axis=1))
    idx = idx[np.lexsort((v[idx, 1], v[idx, 0]))]  # by the first axis, then the second
    taken: list[np.ndarray] = []
    n_taken = 0
    for _ in range(max_layers):
        if n_taken >= count or not len(idx):
            break
        y = v[idx, 1]
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], y[:-1]]))
        layer = y < best_before  # nobody earlier (no larger first value) is as good on the second
        taken.append(idx[layer])
        n_taken += int(layer.sum())
        idx = idx[~layer]
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=int)


def _bins(values: np.ndarray, log_axes: Sequence[bool]) -> list[np.ndarray]:
    """Cell edges on both axes spanning every finite value (evenly in log space on a log axis)."""
    edges = []
    for j, (bins, log) in enumerate(zip(_DENSITY_BINS, log_axes, strict=True)):
        col = values[:, j]
        col = col[np.isfinite(col) & ((col > 0) if log else True)]
        lo, hi = (float(col.min()), float(col.max())) if len(col) else (0.0, 1.0)
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        pad = (hi - lo) * 1e-9 or 0.5
        e = np.linspace(lo - pad, hi + pad, bins + 1)
        edges.append(10**e if log else e)
    return edges


def _density(values: np.ndarray, axes: Sequence[str], grid: Sequence[np.ndarray], name: str, colorscale: Any,
             study: str, *, scale: bool = False, opacity: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """A heat map of how many of the 2-D ``values`` fall in each cell of ``grid`` (empty cells transparent)."""
    values = np.asarray(values, dtype=float).reshape(-1, 2)
    counts, _, _ = np.histogram2d(values[:, 0], values[:, 1], bins=[grid[0], grid[1]])
    z = np.where(counts.T > 0, counts.T, np.nan)
    trace: dict[str, Any] = {
        "type": "heatmap", "x": grid[0], "y": grid[1], "z": z, "name": name + DENSITY_SUFFIX, "meta": study,
        "colorscale": colorscale, "zmin": 1, "showscale": scale, "showlegend": True, "hoverongaps": False,
        "colorbar": {"title": {"text": "trials per cell", "side": "right"}, "thickness": 12, "len": 0.6},
        "hovertemplate": f"%{{z}} trials<br>{axes[0]} %{{x:.4g}}<br>{axes[1]} %{{y:.4g}}<extra>{name}</extra>",
    }  # fmt: skip
    if opacity != 1.0:
        trace["opacity"] = opacity
    return trace


def shown_trials(fig: go.Figure) -> int:
    """How many trials of the selected study a :func:`pareto_figure` shows: its points and density counts."""
    names = {TRACE_FEASIBLE, TRACE_EXCLUDED, TRACE_NEAR}
    total = 0
    for t in fig.data:
        name = str(t.name or "")
        if t.type == "heatmap" and name.removesuffix(DENSITY_SUFFIX) in names:
            total += int(np.nansum(np.asarray(t.z, dtype=float)))
        elif name in names:
            total += len(t.x) if t.x is not None else 0
    return total


def trace_studies(fig: go.Figure) -> list[str]:
    """The study of each trace of :func:`pareto_figure` (by curve number, as clicks report them)."""
    return [str(t.meta) if t.meta is not None else "" for t in fig.data]


def _wide(col: pd.Series) -> bool:
    """Positive values spanning more than two decades read better on a log axis."""
    v = pd.to_numeric(col, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    return bool(len(v)) and bool((v > 0).all()) and float(v.max()) / float(v.min()) > 100


def hypervolume_figure(frame: pd.DataFrame, x: str = "trials") -> go.Figure:
    """Hypervolume of each study's front against completed trials (``x="trials"``) or wall-clock seconds."""
    label = "completed trials" if x == "trials" else "wall-clock time since the first trial (s)"
    title = f"Hypervolume against {'trials' if x == 'trials' else 'wall-clock time'}"
    if frame.empty:
        return message_figure("no completed trials yet", title)
    traces = [
        {
            "type": "scatter",
            "x": part[x].to_numpy(dtype=float),
            "y": part["hypervolume"].to_numpy(dtype=float),
            "mode": "lines",
            "name": str(study),
            "line": {"color": PALETTE[i % len(PALETTE)], "shape": "hv"},
        }
        for i, (study, part) in enumerate(frame.groupby("study", sort=False))
    ]
    ref = frame.attrs.get("reference")
    axes = frame.attrs.get("axes") or []
    if ref:
        title += "<br><sup>reference " + ", ".join(f"{a} = {r:.4g}" for a, r in zip(axes, ref, strict=False)) + "</sup>"
    return _figure(
        traces, title, height=330, xaxis={"title": {"text": label}}, yaxis={"title": {"text": "hypervolume"}}
    )


#: at most this many trials are lines of the parallel coordinates: plotly draws them with WebGL, which in software
#: rendering (a browser without a GPU) takes seconds (about 4.5 s for 1,000 lines and 11 s for 5,000 on a busy
#: 2-core machine), and keeps the page from answering meanwhile
PARALLEL_LINES = 1000


def parallel_figure(frame: pd.DataFrame, choices: Sequence[str], color: str, direction: str = "maximize",
                    *, max_lines: int = PARALLEL_LINES) -> go.Figure:  # fmt: skip
    """Parallel coordinates of the architectures' choices, coloured by the metric ``color``.

    Categorical choices are spread on their axis in the order they first appear sorted; at most ``max_lines``
    trials are drawn (the best ones by ``color``), so large studies stay responsive.
    """
    title = f"Choices against {color}"
    if frame.empty or color not in frame.columns:
        return message_figure("no completed trials yet", title)
    data = frame.dropna(subset=[color])
    if len(data) > max_lines:
        data = data.sort_values(color, ascending=direction != "maximize").head(max_lines)
        title += f" (best {max_lines:,} of {len(frame):,} trials)"
    dims: list[dict[str, Any]] = []
    for col in choices:
        series = data[col]
        label = col.removeprefix("param:").removeprefix("cell.")
        if pd.api.types.is_numeric_dtype(series):
            dims.append({"label": label, "values": series.to_numpy(dtype=float)})
            continue
        cats = sorted(series.astype(str).unique())
        codes = series.astype(str).map({c: i for i, c in enumerate(cats)})
        dims.append({"label": label, "values": codes.to_numpy(), "tickvals": list(range(len(cats))), "ticktext": cats})
    dims.append({"label": color, "values": data[color].to_numpy(dtype=float)})
    colorscale = "Viridis" if direction == "maximize" else "Viridis_r"
    fig = go.Figure(
        go.Parcoords(
            line={"color": data[color].to_numpy(dtype=float), "colorscale": colorscale, "showscale": True},
            dimensions=dims,
        )
    )
    return _layout(fig, title, height=420, margin={"l": 110, "r": 60, "t": 80, "b": 30})


# ------------------------------------------------------------------------------------------------ one architecture
_OP_COLORS = {
    "none": "#bdbdbd",
    "skip_connect": "#2ca02c",
    "nor_conv_1x1": "#1f77b4",
    "nor_conv_3x3": "#d62728",
    "avg_pool_3x3": "#9467bd",
}


def cell_figure(description: Mapping[str, Any], title: str = "Cell") -> go.Figure:
    """A cell drawn as a graph from a family's ``describe()``: nodes in a row, one labelled arc per edge.

    Edges between neighbouring nodes are straight; longer ones arc above (alternating below), higher the
    longer they are. Edges that cannot affect the output (``live`` false, including ``none``) are grey and dashed.
    """
    nodes = list(description.get("nodes") or [])
    edges = list(description.get("edges") or [])
    order = {int(n["id"]): k for k, n in enumerate(nodes)}
    fig = go.Figure()
    t = np.linspace(0.0, 1.0, 25)
    for e in edges:
        a, b = order[int(e["source"])], order[int(e["target"])]
        span = abs(b - a)
        height = 0.0 if span <= 1 else (0.4 * (span - 1) + 0.4) * (1 if (span + a) % 2 == 0 else -1)
        xs = a + (b - a) * t
        ys = 4 * height * t * (1 - t)
        live = bool(e.get("live", e.get("op") != "none"))
        op = str(e.get("op"))
        color = _OP_COLORS.get(op, "#555555") if live else "#bdbdbd"
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", showlegend=False, hoverinfo="text",
                hovertext=f"{e.get('label')}: {op}" + ("" if live else " (no effect on the output)"),
                line={"color": color, "width": 3 if live else 1.5, "dash": None if live else "dash"},
            )
        )  # fmt: skip
        k = 20  # arrow head near the target
        fig.add_annotation(
            x=xs[-1], y=ys[-1], ax=xs[k], ay=ys[k], xref="x", yref="y", axref="x", ayref="y", text="",
            showarrow=True, arrowhead=3, arrowsize=1.3, arrowwidth=2, arrowcolor=color, standoff=22,
        )  # fmt: skip
        fig.add_annotation(
            x=xs[12], y=ys[12], text=op, showarrow=False, bgcolor="white", bordercolor=color, borderwidth=1,
            font={"color": "#333" if live else "#999", "size": 12},
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=list(range(len(nodes))),
            y=[0.0] * len(nodes),
            mode="markers+text",
            marker={"size": 44, "color": "#f7f7f7", "line": {"color": "#333333", "width": 2}},
            text=[str(n.get("label", n["id"])).replace(" ", "<br>") for n in nodes],
            textposition="middle center",
            textfont={"size": 11},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.update_xaxes(visible=False, range=[-0.4, len(nodes) - 0.6])
    fig.update_yaxes(visible=False, range=[-1.45, 1.45])
    return _layout(fig, title, height=400)


def grid_figure(grid: Mapping[str, Any], title: str = "Per-layer settings") -> go.Figure:
    """A heat map from a description's ``grid``: ``{"rows": [...], "columns": [...], "values": [[...]]}``
    (e.g. a quantization policy: one row per layer, columns weight/activation bits)."""
    values = np.asarray(grid.get("values") or [[]], dtype=float)
    rows = [str(r) for r in grid.get("rows") or range(values.shape[0])]
    cols = [str(c) for c in grid.get("columns") or range(values.shape[1] if values.ndim == 2 else 0)]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=cols,
            y=rows,
            colorscale="Viridis",
            texttemplate="%{z}",
            colorbar={"title": grid.get("unit", "")},
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(260, 28 * len(rows) + 120))


def blocks_figure(blocks: Sequence[Mapping[str, Any]], title: str = "Blocks") -> go.Figure:
    """A strip of blocks from a description's ``blocks``: ``[{"label": ..., "kind": ..., "active": bool}]``
    (e.g. stages and blocks of a hybrid network, or the active control blocks of a gated ControlNet)."""
    labels = [str(b.get("label", i)) for i, b in enumerate(blocks)]
    kinds = [str(b.get("kind", "")) for b in blocks]
    active = [bool(b.get("active", True)) for b in blocks]
    palette = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(kinds))}
    colors = [palette[k] if a else "#d9d9d9" for k, a in zip(kinds, active, strict=True)]
    fig = go.Figure(
        go.Bar(
            x=labels, y=[1] * len(labels), marker_color=colors, text=[k if a else f"{k} (off)" for k, a in zip(kinds, active, strict=True)],
            textposition="inside", hovertext=[f"{lab}: {k}" + ("" if a else " (off)") for lab, k, a in zip(labels, kinds, active, strict=True)],
            hoverinfo="text",
        )
    )  # fmt: skip
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=260, bargap=0.08)


def graph_figure(description: Mapping[str, Any], title: str = "Architecture") -> go.Figure | None:
    """A drawing for a family's ``describe()``, chosen by what it holds (never by the family's name):

    ``nodes`` and ``edges`` (a cell): :func:`cell_figure`; ``grid``: :func:`grid_figure`; ``blocks``:
    :func:`blocks_figure`. None when there is nothing to draw (the view then lists the choices).
    """
    if description.get("nodes") and description.get("edges"):
        return cell_figure(description, title)
    if isinstance(description.get("grid"), Mapping) and description["grid"].get("values"):
        return grid_figure(description["grid"], title)
    if isinstance(description.get("blocks"), list) and description["blocks"]:
        return blocks_figure(description["blocks"], title)
    return None


def metrics_compare_figure(metrics: pd.DataFrame, title: str = "Measured and predicted") -> go.Figure | None:
    """Measured against predicted values of one architecture's metrics (None when nothing is predicted)."""
    m = metrics.dropna(subset=["predicted"]) if "predicted" in metrics else metrics.iloc[0:0]
    if m.empty:
        return None
    fig = go.Figure()
    fig.add_trace(go.Bar(x=m["metric"], y=m["measured"], name="measured", marker_color=PALETTE[1]))
    fig.add_trace(
        go.Bar(
            x=m["metric"],
            y=m["predicted"],
            name="predicted",
            marker_color=PALETTE[4],
        )
    )
    return _layout(fig, title, height=300, barmode="group")


# ------------------------------------------------------------------------------------------ training and predictors
def training_figure(frame: pd.DataFrame) -> go.Figure:
    """Supernet training per epoch: loss (left axis) and accuracy-like columns (right axis)."""
    title = "Supernet training"
    if frame.empty:
        return message_figure("no data yet: this study's storage records no supernet training", title)
    fig = go.Figure()
    if "loss" in frame:
        fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["loss"], name="loss", mode="lines+markers"))
    acc_cols = [c for c in frame.columns if "acc" in str(c).lower()]
    for i, c in enumerate(acc_cols, start=1):
        fig.add_trace(
            go.Scatter(x=frame["epoch"], y=frame[c], name=str(c), mode="lines+markers", yaxis="y2",
                       line={"color": PALETTE[i % len(PALETTE)]})
        )  # fmt: skip
    source = frame.attrs.get("source")
    if source:
        title += f"<br><sup>from {source}</sup>"
    fig.update_layout(
        xaxis={"title": "epoch"},
        yaxis={"title": "loss"},
        yaxis2={"title": "accuracy", "overlaying": "y", "side": "right", "showgrid": False},
    )
    return _layout(fig, title, height=330)


def predictor_figure(frame: pd.DataFrame) -> go.Figure:
    """Predictor quality (Kendall tau, Spearman) against the number of evaluated trials, per model and metric."""
    title = "Predictor quality during the search"
    if frame.empty:
        return message_figure("no data yet: this study records no predictor quality", title)
    fig = go.Figure()
    group_cols = [c for c in ("model", "metric") if c in frame.columns]
    groups = frame.groupby(group_cols, sort=False) if group_cols else [("predictor", frame)]
    for i, (key, part) in enumerate(groups):
        name = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        for col, dash in (("kendall_tau", None), ("spearman", "dot")):
            if col in part and part[col].notna().any():
                fig.add_trace(
                    go.Scatter(x=part["trials"], y=part[col], name=f"{name}: {col}", mode="lines+markers",
                               line={"color": PALETTE[i % len(PALETTE)], "dash": dash})
                )  # fmt: skip
    fig.update_xaxes(title="evaluated trials")
    fig.update_yaxes(title="rank correlation", range=[-1, 1])
    return _layout(fig, title, height=330)


def predicted_figure(frame: pd.DataFrame) -> go.Figure:
    """Predicted against measured values over a study's trials, one colour per metric."""
    title = "Predicted against measured"
    if frame.empty:
        return message_figure("no data yet: no trial of this study records a prediction", title)
    fig = go.Figure()
    for i, (metric, part) in enumerate(frame.groupby("metric", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=part["measured"], y=part["predicted"], mode="markers", name=str(metric),
                customdata=part["trial"], marker={"color": PALETTE[i % len(PALETTE)]},
            )
        )  # fmt: skip
    lo = float(np.nanmin(frame[["measured", "predicted"]].to_numpy(dtype=float)))
    hi = float(np.nanmax(frame[["measured", "predicted"]].to_numpy(dtype=float)))
    if math.isfinite(lo) and math.isfinite(hi):
        fig.add_trace(
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="ideal", line={"dash": "dash", "color": "#999"})
        )
    fig.update_xaxes(title="measured")
    fig.update_yaxes(title="predicted")
    return _layout(fig, title, height=330)
