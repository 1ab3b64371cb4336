"""The Dash app: a read-only view of an Optuna storage (every study in it, nasplat's or not), refreshed live.

Views (tabs): studies overview, Pareto front (2 or 3 metrics, constraint sliders, overlaid fronts,
hypervolume against trials and wall-clock time), trials (server-side sortable and filterable table, parallel
coordinates), one architecture (the family's drawing, choices, measured and predicted metrics, provenance,
export), and supernet training / predictor quality. Every callback reads through :mod:`.data` and draws
through :mod:`.figures`; a failure shows as a one-line message on the page, never as a traceback.

The URL may name what to open: ``/?study=NAME&view=pareto|studies|trials|architecture|training&trial=N``,
and ``&compare=NAME,NAME`` the studies to overlay on the Pareto view. The page comes with the Pareto view it
opens on (the study and overlay the URL names, else the latest study's), computed on the server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from nasplat.errors import NasplatError

from . import data as D
from . import scripts as S
from .views import VIEW_LABELS, VIEWS, architecture, pareto, studies, training, trials
from .views.common import PAGE_SIZE_RANGE, Props, ViewEnv, explain, message, row_trial
from .views.common import page_size as _page_size

log = logging.getLogger("nasplat.dashboard")

#: the views, in the order of their tabs: each builds its part of the page and registers its callbacks
VIEW_MODULES = (studies, pareto, trials, architecture, training)
assert tuple(m.__name__.rsplit(".", 1)[-1] for m in VIEW_MODULES) == VIEWS
__all__ = [
    "PAGE_SIZE_RANGE",
    "VIEWS",
    "WARM_TRIALS",
    "_page_size",
    "allowed_hosts",
    "make_app",
    "preload",
    "serve",
    "warm",
]

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


# --------------------------------------------------------------------------------------------------------------
# layout


def _layout(storage_url: str, refresh_s: float, init: dict[str, dict[str, Any]] | None = None) -> Any:
    """The page. ``init``: component id -> properties already computed for the first paint (the latest study's
    Pareto view), so that the page shows it without waiting for callback round trips."""
    from dash import dcc, html

    init = init or {}

    def p(component: str, **defaults: Any) -> dict[str, Any]:
        return {**defaults, **init.get(component, {})}

    props: Props = p
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
                        children=[dcc.Tab(label=VIEW_LABELS[v], value=v, id=f"tab-{v}") for v in VIEWS],
                    ),
                    *(module.layout(props) for module in VIEW_MODULES),
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
# the trials table's page size a client may ask for is clamped into PAGE_SIZE_RANGE (views.common.page_size)


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


# --------------------------------------------------------------------------------------------------------------
# the app


def make_app(
    storage_url: str, *, refresh_s: float = 5.0, export_dir: Path | str = "nasplat-exports", host: str = "127.0.0.1"
) -> Any:
    """The Dash app for one storage URL. ``export_dir``: where the export action writes bundles; ``host``: the
    address it is served on (requests naming any other host are refused, see :func:`allowed_hosts`)."""
    import dash
    from dash import Input, Output, State, ctx, no_update

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

    env = ViewEnv(storage_url, export_root)

    def storage() -> D.Storage:
        return env.storage()

    # ---------------------------------------------------------------------------------- storage, study, refresh
    @app.callback(
        Output("study", "options"),
        Output("study", "value"),
        Output("sig", "data"),
        Output("alert", "children"),
        Output("refresh-status", "children"),
        Output("view", "value"),
        Output("trial-request", "data"),
        Output("compare", "value"),
        Input("tick", "n_intervals"),
        Input("url", "search"),
        State("study", "value"),
        State("sig", "data"),
        State("compare", "value"),
    )
    def refresh(_n: int | None, search: str | None, current: str | None, old_sig: str | None,
                overlaid: list[str] | None) -> tuple[Any, ...]:  # fmt: skip
        query = parse_qs((search or "").lstrip("?"))
        first = ctx.triggered_id in (None, "url")
        wanted_overlay = url_overlay(query) if first else None
        compare: Any = no_update if wanted_overlay is None or wanted_overlay == (overlaid or []) else wanted_overlay
        return (*_refresh(query, first, current, old_sig), compare)

    def _refresh(query: dict[str, list[str]], first: bool, current: str | None, old_sig: str | None) -> tuple[Any, ...]:
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
            return [], None, None, message(explain(exc)), f"storage unreadable · checked {stamp}", view, no_update
        if not names:
            msg = message(
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
                alert = message(f"no study '{wanted}' in this storage; its studies: {', '.join(names)}")
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

    def url_overlay(query: dict[str, list[str]]) -> list[str] | None:
        """The studies ``compare=`` names (comma-separated, or the parameter repeated); None when it is absent."""
        if "compare" not in query:
            return None
        names = dict.fromkeys(n.strip() for v in query["compare"] for n in v.split(",") if n.strip())
        return list(names)[:MAX_OVERLAID]

    def study_options(studies: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {
                "label": f"{row['study']}  ·  {row['space'] if row['nasplat'] else 'Optuna study'}  ·  "
                f"{row['complete']} trials" + ("  (unreadable)" if isinstance(row["problem"], str) else ""),
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

    for module in VIEW_MODULES:
        module.register_callbacks(app, env)

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
            number = row_trial(front_rows, front_cell)
        elif ctx.triggered_id == "trials-table" and trials_cell and trial_rows:
            number = row_trial(trial_rows, trials_cell)
        if number is None:
            return no_update, no_update, no_update
        request = {"study": who, "trial": number, "at": time.time()}
        return (who if who != study else no_update), request, "architecture"

    # ---------------------------------------------------------------------------------- first paint
    # (storage signature, study, overlaid studies) -> the first paint computed for it; the latest signature only
    painted: dict[tuple[Any, ...], Any] = {}
    painted_lock = threading.Lock()

    def page_query() -> dict[str, list[str]]:
        """The query of the page being laid out: the layout is fetched by the page's script, whose request names
        the page in its Referer header (same origin); empty when there is none (the callbacks then apply it)."""
        from flask import has_request_context, request

        if not has_request_context() or not request.referrer:
            return {}
        return parse_qs(urlsplit(request.referrer).query)

    def first_paint() -> dict[str, dict[str, Any]]:
        """The Pareto view the page opens on (the study and overlay its URL names, else the latest study's)
        computed with the page, as the study, controls and Pareto callbacks would answer it; empty (the
        callbacks take over) when anything is missing or unreadable. Kept until the storage changes."""
        try:
            sig = D.storage_signature(storage())
        except Exception:
            return {}
        query = page_query()
        wanted = query.get("study", [None])[0]
        overlay = tuple(url_overlay(query) or ())
        key = (sig, wanted, overlay)
        with painted_lock:
            init = painted.get(key)
        if init is None:
            init = compute_first_paint(sig, wanted, list(overlay))
            with painted_lock:
                for old in [k for k in painted if k[0] != sig or len(painted) >= 8]:
                    painted.pop(old, None)
                painted[key] = init
        if not init:
            return {}
        return {**init, "refresh-status": {"children": init["refresh-status"]["children"] % time.strftime("%H:%M:%S")}}

    def compute_first_paint(sig: Any, wanted: str | None = None, overlay: list[str] | None = None) -> dict[str, Any]:
        try:
            st = storage()
            names = D.study_names(st)
            study = wanted if wanted in names else (D.latest_study(st) if names else None)
            if not study:
                return {}
            studies = D.studies_frame(st, summary=False)
            D.study_info(st, study)
            (ax_opts, _, _, x, y, z, c_opts, constrain, dev_opts, sliders, bounds) = pareto.controls_state(
                env, study, "study", None, None, None, None, [], [], None
            )
            ids = [{"type": "constraint", "metric": m} for m in bounds]
            positions = [0 if b[2] == "maximize" else pareto.SLIDER_STEPS for b in bounds.values()]
            overlay = [o for o in overlay or [] if o != study]
            view = pareto.pareto_state(env, x, y, z, overlay, positions, "pareto", ids, bounds, study)
            compare = pareto.compare_state(env, study, "any")
        except Exception:
            log.debug("first paint not prefilled", exc_info=True)
            return {}
        if any(v is no_update for v in view[:7]) or view[3] is None:
            return {}  # no axes, or the study cannot be shown: the callbacks say why
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
            "compare": {"options": compare, "value": overlay},
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


#: at most this many studies named by a URL's ``compare=`` are overlaid (the rest are ignored)
MAX_OVERLAID = 50
#: at most this many trials of the other studies are read in the background once the server is up
WARM_TRIALS = 500_000


def warm(storage_url: str, skip: str | None = None, budget: int = WARM_TRIALS) -> tuple[int, int]:
    """Read the other studies' Pareto views (their first two objectives) into the cache, the most recently
    updated first, until ``budget`` trials have been read, so that overlaying them, or switching to them, finds
    them read. Returns how many studies and trials were read; stops quietly on a storage error."""
    n_studies = n_trials = 0
    try:
        st = D.open_storage(storage_url)
        studies = D.studies_frame(st, summary=False)
        rows = studies[studies["problem"].isna() & (studies["study"] != skip)]
        rows = rows.sort_values("last_update", ascending=False, na_position="last", kind="stable")
        for _, row in rows.iterrows():
            count = int(row["complete"])
            if n_trials + count > budget:
                break
            info = D.study_info(st, str(row["study"]))
            if len(info.objectives) < 2:
                continue
            axes = list(info.objectives[:2])
            D.pareto_frame(st, info.name, axes)
            D.hypervolume_frame(st, [info.name], axes)
            n_studies, n_trials = n_studies + 1, n_trials + count
    except NasplatError:
        pass
    return n_studies, n_trials


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

            def read_the_others() -> None:
                t1 = time.perf_counter()
                n_studies, n_trials = warm(storage_url, skip=name)
                if n_studies:
                    echo(
                        f"read {n_studies} other {'study' if n_studies == 1 else 'studies'} ({n_trials:,} trials) "
                        f"in {time.perf_counter() - t1:.1f} s"
                    )

            threading.Thread(target=read_the_others, name="nasplat-warm", daemon=True).start()
    echo(
        f"nasplat dashboard for {D.safe_url(storage_url)} (read-only) on http://{host}:{server.port}/ · Ctrl-C stops it"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
