"""The training view: supernet training per epoch, the predictor's quality over the search, and predicted
against measured values."""

from __future__ import annotations

from typing import Any

from .. import data as D
from .. import figures as F
from .common import Props, ViewEnv, explain, graph, message, no_props, view


def layout(p: Props = no_props) -> Any:
    from dash import html

    return view(
        "training",
        [
            html.Div(id="training-message"),
            html.Div(graph("training-graph", 330), className="card"),
            html.Div(
                [
                    html.Div(graph("predictor-graph", 330), className="card"),
                    html.Div(graph("predicted-graph", 330), className="card"),
                ],
                className="grid2",
            ),
        ],
        p,
    )


def training_state(env: ViewEnv, study: str | None) -> tuple[Any, ...]:
    """The training, predictor-quality and predicted-against-measured figures, and a message."""
    if not study:
        blank = F.message_figure("choose a study above")
        return blank, blank, blank, message("choose a study in the list at the top", "info")
    try:
        st = env.storage()
        return (
            F.training_figure(D.training_frame(st, study)),
            F.predictor_figure(D.predictor_frame(st, study)),
            F.predicted_figure(D.predicted_frame(st, study)),
            None,
        )
    except Exception as exc:
        blank = F.message_figure("nothing to show")
        return blank, blank, blank, message(explain(exc))


def register_callbacks(app: Any, env: ViewEnv) -> None:
    from dash import Input, Output, no_update

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
    def training_view(study: str | None, _sig: Any, current: str) -> tuple[Any, ...]:
        if current != "training":
            return (no_update,) * 4
        return training_state(env, study)
