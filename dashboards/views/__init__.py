"""The dashboard's views, one module each: ``layout(props)`` builds its part of the page and
``register_callbacks(app, env)`` wires its callbacks; the work of each callback is a plain function of the
module (``*_state``) that takes a :class:`.common.ViewEnv` and the callback's inputs, so a view is tested on
its own without a browser. Views read through :mod:`..data` and draw through :mod:`..figures`.
"""

from __future__ import annotations

VIEWS = ("studies", "pareto", "trials", "architecture", "training")
VIEW_LABELS = {
    "studies": "Studies",
    "pareto": "Pareto front",
    "trials": "Trials",
    "architecture": "Architecture",
    "training": "Training & predictors",
}
