"""The dashboard with several studies overlaid on one Pareto view, in a real browser (Debian's Chromium, driven by
Playwright): each study's trials and front in its own colour and legend group, the constraint sliders filtering
every study, the objectives checked, and the trials table sorted on the server.

A small case of what ``benchmarks/dashboard_load.py`` times at scale (50,000 trials; 10 studies overlaid): three
nasplat studies of 300 trials written in bulk (:func:`nasplat_dashboards.demo.write_bulk_studies`) and a plain
Optuna study with other objectives, served in-process on a loopback port.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from test_dashboard_browser import ARGS, CHROMIUM, serve_in_thread, traces, wait_plot
from test_dashboard_data import fast_dir

sync_api = pytest.importorskip("playwright.sync_api")

STUDIES = {"scale-a": 300, "scale-b": 300, "scale-c": 300}
OTHER = "other-objectives"
#: every trace of the Pareto plot: name, number of points, study, legend group, marker colour, largest y value
PLOT = """() => JSON.stringify(document.querySelector('#pareto-graph .js-plotly-plot')._fullData.map(t =>
  [t.name, t._length || 0, t.meta, t.legendgroup, t.marker && t.marker.color, t.y ? Math.max(...t.y) : null]))"""


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    import warnings

    import optuna

    from nasplat_dashboards.demo import write_bulk_studies

    folder = fast_dir("nasplat-dash-scale-")
    try:
        url = write_bulk_studies(folder, STUDIES, seed=3)
        study = optuna.create_study(storage=url, study_name=OTHER, directions=["minimize", "minimize"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.set_metric_names(["loss", "latency_ms"])
        for i in range(3):
            trial = study.ask()
            trial.suggest_int("width", 8, 64)
            study.tell(trial, [1.0 / (i + 1), 2.0 * i])
        yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def base(storage: str) -> Iterator[str]:
    url, srv = serve_in_thread(storage)
    try:
        yield url
    finally:
        srv.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    sync_api.expect.set_options(timeout=20_000)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def plot(page: Any) -> dict[str, tuple[int, str, str | None, Any, float | None]]:
    return {name: (n, meta, group, color, top) for name, n, meta, group, color, top in json.loads(page.evaluate(PLOT))}


def test_studies_overlaid_then_filtered_by_a_slider(storage: str, base: str, page: Any) -> None:
    """The URL names the overlay; the page opens on it: the selected study's trials, and for each overlaid study
    its trials and front in its own colour under one legend group. The MACs slider then constrains every study."""
    from nasplat_dashboards import data as D

    expect = sync_api.expect
    page.goto(base + "/?study=scale-a&compare=scale-b,scale-c")
    wait_plot(page, "pareto-graph", "d.some(t => t.name === 'front: scale-c')")
    expect(page.locator("#study")).to_contain_text("scale-a")
    expect(page.locator("#compare")).to_contain_text("scale-b")
    expect(page.locator("#compare")).to_contain_text("scale-c")
    expect(page.locator("#pareto-status")).to_contain_text("300 of 300 completed trials within the constraints")
    expect(page.locator("#pareto-status")).to_contain_text("overlaid: 2 studies, 600 of 600 trials")
    shown = plot(page)
    assert shown["trials within constraints"][:2] == (300, "scale-a")
    colors = {}
    for other in ("scale-b", "scale-c"):
        n, meta, group, color, _ = shown[f"trials of {other}"]
        front = shown[f"front: {other}"]
        assert (n, meta, group) == (300, other, other)  # every trial of the study, in its legend group
        assert front[1:4] == (other, other, color)  # its front: same study, group and colour
        fronts = D.pareto_frame(storage, other, ["val_acc", "macs"])
        assert front[0] == int(fronts["front"].sum())
        colors[other] = color
    assert len({*colors.values(), shown["front: scale-a"][3]}) == 3  # a colour per study
    wait_plot(page, "hv-trials", "d.length === 3")
    # the MACs slider to its lowest: every study keeps only its trials at most that cheap
    thumb = page.locator('[id=\'{"metric":"macs","type":"constraint"}\'] [role=slider]')
    thumb.focus()
    page.keyboard.press("Home")
    expect(page.locator("#pareto-status")).not_to_contain_text("300 of 300", timeout=30_000)
    label = page.inner_text('[id=\'{"metric":"macs","type":"constraint-label"}\']')
    limit = float(re.search(r"macs ≤ ([0-9.,e+]+)", label).group(1).replace(",", ""))  # type: ignore[union-attr]
    wait_plot(page, "pareto-graph", "d.some(t => t.name === 'trials of scale-b' && t._length < 300)")
    after = plot(page)
    for other in ("scale-b", "scale-c"):
        trials = D.trials_frame(storage, other, params=False)
        within = int((trials["macs"] <= limit * (1 + 1e-3)).sum())
        n, _, _, _, top = after[f"trials of {other}"]
        assert 0 < n < 300 and abs(n - within) <= int((abs(trials["macs"] - limit) <= limit * 1e-3).sum())
        assert top is not None and top <= limit * (1 + 1e-3)
    n_a = after["trials within constraints"][0]
    assert 0 < n_a < 300 and after["trials outside constraints"][0] == 300 - n_a
    expect(page.locator("#pareto-status")).to_contain_text(f"{n_a} of 300 completed trials within the constraints")


def test_a_study_with_other_objectives_is_named_not_overlaid(base: str, page: Any) -> None:
    expect = sync_api.expect
    page.goto(base + f"/?study=scale-a&compare=scale-b,{OTHER}")
    wait_plot(page, "pareto-graph", "d.some(t => t.name === 'front: scale-b')")
    message = page.locator("#pareto-message")
    expect(message).to_contain_text("not overlaid, the studies must share the plotted objectives")
    expect(message).to_contain_text(f"'{OTHER}' (loss (min), latency_ms (min))")
    expect(message).to_contain_text("'scale-a' has them: val_acc (max), macs (min)")
    assert not any(OTHER in name for name in traces(page))
    expect(page.locator("#pareto-status")).to_contain_text("overlaid: 1 study, 300 of 300 trials")


def test_trials_table_sorts_on_the_server(storage: str, base: str, page: Any) -> None:
    from nasplat_dashboards import data as D

    expect = sync_api.expect
    trials = D.trials_frame(storage, "scale-b", params=False)
    page.goto(base + "/?study=scale-b&view=trials")
    expect(page.locator("#trials-status")).to_contain_text("300 of 300 trials match")
    first = page.locator('#trials-table td[data-dash-column="trial"]').first
    expect(first).to_have_text("0")
    header = page.locator('#trials-table th[data-dash-column="macs"] .column-header--sort')
    cells = '#trials-table td[data-dash-column="macs"]'
    ordered = (
        "(up) => { const v = [...document.querySelectorAll('" + cells + "')].map(c => parseFloat(c.innerText"
        ".replace(/,/g, ''))); return v.length === 20 && v.every((x, i) => i === 0 || (up ? v[i - 1] <= x :"
        " v[i - 1] >= x)) }"
    )
    header.click()  # ascending: the cheapest trials of the whole study come first
    page.wait_for_function(ordered, arg=True)
    assert float(page.locator(cells).first.inner_text().replace(",", "")) == pytest.approx(trials["macs"].min())
    cheapest = set(trials.loc[trials["macs"] == trials["macs"].min(), "trial"])
    assert int(first.inner_text()) in cheapest
    header.click()  # descending
    page.wait_for_function(ordered, arg=False)
    assert float(page.locator(cells).first.inner_text().replace(",", "")) == pytest.approx(trials["macs"].max())
    expect(page.locator("#trials-status")).to_contain_text("300 of 300 trials match")


def test_overlay_above_the_density_threshold_counts_every_trial_once(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: above the threshold (lowered here) each overlaid study keeps its front and the trials of its
    first non-dominated layers as points in its colour, the rest of its trials go to one density, and every
    trial of every study is drawn once; studies with other objectives, or unknown, are named and left out."""
    import numpy as np

    from nasplat_dashboards import data as D
    from nasplat_dashboards import figures as F

    monkeypatch.setattr(F, "DENSITY_THRESHOLD", 500)
    axes = ["val_acc", "macs"]
    frame = D.pareto_frame(storage, "scale-a", axes)
    overlay = D.overlay_frame(storage, "scale-a", ["scale-b", "scale-c", OTHER, "nope", "scale-a"], axes)
    assert list(dict.fromkeys(overlay["study"])) == ["scale-b", "scale-c"] and len(overlay) == 600
    assert overlay.attrs["mismatch"] == [OTHER] and set(overlay.attrs["skipped"]) == {OTHER, "nope"}
    text = D.overlay_message(overlay)
    assert text is not None and f"'{OTHER}' (loss (min), latency_ms (min))" in text and "no study 'nope'" in text
    fig = F.pareto_figure(frame, overlay)
    by_name = {t.name: t for t in fig.data}

    def count(t: Any) -> int:
        return int(np.nansum(np.asarray(t.z, dtype=float))) if t.type == "heatmap" else len(t.x)

    assert by_name[F.TRACE_OVERLAY + F.DENSITY_SUFFIX].type == "heatmap"
    assert sum(count(t) for name, t in by_name.items() if name.startswith("trials ")) == 900
    assert F.shown_trials(fig) == 300  # the selected study's own traces
    colors = set()
    for other in ("scale-b", "scale-c"):
        points, front = by_name[f"trials of {other}"], by_name[f"front: {other}"]
        own = overlay[overlay["study"] == other]
        assert (
            set(own.loc[own["front"], "trial"]) <= set(points.customdata) == set(points.customdata) & set(own["trial"])
        )
        assert F.NEAR_OVERLAY_POINTS <= len(points.x) < 300
        assert points.legendgroup == front.legendgroup == other and points.showlegend is False
        assert points.marker.color == front.marker.color and points.meta == front.meta == other
        colors.add(front.marker.color)
    assert len(colors | {by_name["front: scale-a"].marker.color}) == 3
