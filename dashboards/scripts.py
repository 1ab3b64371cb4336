"""What JavaScript the dashboard page loads, chosen for a fast first paint.

Dash's defaults load either too much or too late: with ``eager_loading`` every lazily loaded component chunk
comes with the page (about 3.5 MB, mathjax, markdown and the date picker included), and without it the chunks
the landing view needs (graph, dropdown, slider, table) are fetched only once the layout has rendered, a round
trip each. Here the page loads exactly the chunks of the components it uses as ordinary scripts, and a partial
plotly.js built with only the trace types the figures use (:data:`TRACE_TYPES`; 2.1 MB instead of 4.8 MB,
about a third of the evaluation time): dcc.Graph draws with ``window.Plotly`` when a script has set it, so
Dash's own full bundle is then never fetched.

The partial bundle ships with the package (``static/``, MIT licence like plotly.js); ``plotlyjs/`` beside this
file rebuilds it. It is used only when its plotly.js version is the one installed plotly.py writes figures
for; otherwise the page falls back to Dash's full bundle (and says so in the server log).
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("nasplat.dashboard")

#: the partial plotly.js bundle shipped with the package
BUNDLE = Path(__file__).with_name("static") / "plotly-nasplat.min.js"
#: the trace types the bundle holds: every type :mod:`.figures` draws
TRACE_TYPES = ("scatter", "scattergl", "scatter3d", "parcoords", "heatmap", "bar")
#: lazily loaded component chunks the views use (dcc.Graph, dcc.Dropdown, dcc.Slider, DataTable)
CHUNKS = ("dcc/async-graph.js", "dcc/async-dropdown.js", "dcc/async-slider.js", "dash_table/async-table.js")
ROUTE = "/_nasplat/plotly-{version}.min.js"


@cache
def bundle_version() -> str | None:
    """The plotly.js version of the shipped partial bundle (from its header), or None when it is missing."""
    try:
        with BUNDLE.open("r", encoding="utf-8") as f:
            head = f.read(400)
    except OSError:
        return None
    found = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    return found.group(1) if found else None


def use_bundle() -> bool:
    """Whether the page can use the partial bundle: it is there and matches plotly.py's plotly.js version."""
    from plotly.offline import get_plotlyjs_version

    wanted = str(get_plotlyjs_version())
    have = bundle_version()
    if have != wanted:
        log.warning(
            "the dashboard's partial plotly.js (%s) does not match plotly.py's plotly.js %s: serving the full "
            "bundle (slower first page); rebuild it with dashboards/plotlyjs/build.sh",
            have or "missing",
            wanted,
        )
        return False
    return True


def external_scripts() -> list[dict[str, Any]]:
    """``external_scripts`` for ``dash.Dash``: the partial bundle's URL (served by :func:`configure`), if used."""
    version = bundle_version()
    return [{"src": ROUTE.format(version=version)}] if version and use_bundle() else []


def configure(app: Any) -> None:
    """Serve the partial bundle (if used) and load the component chunks the views need with the page.

    ``app`` must have been made with ``eager_loading=False`` and :func:`external_scripts`.
    """
    import flask

    version = bundle_version()
    if version and any(ROUTE.format(version=version) in str(s) for s in app.config.external_scripts):
        body = BUNDLE.read_bytes()

        def plotly_bundle() -> flask.Response:
            response = flask.Response(body, mimetype="application/javascript")
            response.cache_control.public = True
            response.cache_control.max_age = 31_536_000  # the URL names the version
            return response

        app.server.add_url_rule(ROUTE.format(version=version), "nasplat_plotly_bundle", plotly_bundle)
    else:  # Dash's full plotly.js, with the page rather than when the first plot renders
        app.scripts.append_script({"relative_package_path": "package_data/plotly.min.js", "namespace": "plotly"})
    for chunk in CHUNKS:
        # an ordinary script: the chunk registers itself with the component library's loader, which then
        # finds it already there when the component first renders
        app.scripts.append_script({"relative_package_path": chunk, "namespace": "dash"})
