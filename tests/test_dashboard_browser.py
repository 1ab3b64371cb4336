"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against real small searches.

The server runs as ``nasplat dashboard`` (a subprocess on a free loopback port) for the main storage; the
bad-input storages are served in-process. Screenshots go to each test's temporary folder; with
``NASPLAT_UPDATE_SCREENSHOTS=1`` one per view is also copied to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
    )
pytest.importorskip("dash")
sync_api = pytest.importorskip("playwright.sync_api")

from test_dashboard_data import NSGA2, ONESHOT, RANDOM, add_study, fast_dir  # noqa: E402

from nasplat_dashboards.demo import write_demo_search  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "docs" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TRACES = "() => JSON.stringify(document.querySelector('#pareto-graph .js-plotly-plot')._fullData.map(t => [t.name, t._length, t.type]))"


def wait_plot(page: Any, graph: str, cond: str = "d.length > 0", timeout: float = 20_000) -> None:
    """Wait until the plotly graph in ``#graph`` has drawn traces ``d`` (its ``_fullData``) meeting ``cond``."""
    page.wait_for_function(
        f"() => {{ const g = document.querySelector('#{graph} .js-plotly-plot'); const d = g && g._fullData;"
        f" return !!(d && ({cond})); }}",
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def shot(page: Any, tmp_path: Path, name: str, keep: bool = False) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if keep and os.environ.get("NASPLAT_UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / f"{name}.png")


def traces(page: Any) -> dict[str, tuple[int, str]]:
    import json

    return {name: (n, kind) for name, n, kind in json.loads(page.evaluate(TRACES))}


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    """A one-shot search, then NSGA-II and random tabular searches, then a study from an older nasplat."""
    folder = fast_dir("nasplat-dash-browser-")
    try:
        url = write_demo_search(folder, [ONESHOT, NSGA2, RANDOM])
        objectives = [{"metric": "acc", "direction": "maximize"}, {"metric": "cost", "direction": "minimize"}]
        add_study(url, "legacy", {"nasplat_format": 0, "nasplat_version": "0.0.1", "objectives": objectives})
        yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(storage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``nasplat dashboard`` on a free loopback port; yields its URL and export folder."""
    port = free_port()
    logs = tmp_path_factory.mktemp("server")
    exports = logs / "exports"
    with (logs / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nasplat.cli", "dashboard", "--storage", storage, "--port", str(port),
             "--refresh", "1", "--export-dir", str(exports)],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/", proc)
            yield f"http://127.0.0.1:{port}", exports
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    log = (logs / "stderr.txt").read_text()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    sync_api.expect.set_options(timeout=15_000)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def serve_in_thread(url: str) -> tuple[str, Any]:
    """The app for ``url`` on a free port, served from a thread of this process (for the bad-input cases)."""
    from werkzeug.serving import make_server

    from nasplat_dashboards.app import make_app

    srv = make_server("127.0.0.1", free_port(), make_app(url, refresh_s=1).server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.port}"
    wait_http(base + "/")
    return base, srv


def test_lands_on_latest_front_and_slider_filters(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, _ = server
    page.goto(base + "/")
    wait_plot(page, "pareto-graph")
    # the most recently updated study nasplat can show (the legacy one is newer but unreadable)
    expect(page.locator("#study")).to_contain_text("demo-random")
    expect(page.locator("#tab-pareto")).to_have_class(re.compile(r"\btab--selected\b"))
    expect(page.locator("#pareto-status")).to_contain_text("8 of 8 completed trials within the constraints")
    before = traces(page)
    assert before["trials within constraints"][0] == 8
    shot(page, tmp_path, "pareto", keep=True)
    # move the MACs constraint slider to its lowest value: only the cheapest trials stay
    thumb = page.locator('[id=\'{"metric":"macs","type":"constraint"}\'] [role=slider]')
    thumb.focus()
    page.keyboard.press("Home")
    expect(page.locator("#pareto-status")).not_to_contain_text("8 of 8", timeout=20_000)
    after = traces(page)
    assert 0 < after["trials within constraints"][0] < 8
    assert after["trials outside constraints"][0] == 8 - after["trials within constraints"][0]
    expect(page.locator('[id=\'{"metric":"macs","type":"constraint-label"}\']')).to_contain_text("macs ≤")
    shot(page, tmp_path, "pareto-constrained")


def test_landing_view_comes_with_the_page(server: tuple[str, Path], page: Any) -> None:
    """The latest study's Pareto view is part of the page itself: no callback round trip before it shows; nor
    for another study named in the URL."""
    expect = sync_api.expect
    base, _ = server
    asked: list[str] = []

    def sent(request: Any) -> None:
        data = request.post_data_buffer
        if "/_dash-update-component" in request.url and data and b"pareto-graph.figure" in data:
            asked.append(request.url)

    page.on("request", sent)
    page.goto(base + "/")
    wait_plot(page, "pareto-graph")
    expect(page.locator("#pareto-status")).to_contain_text("8 of 8 completed trials within the constraints")
    expect(page.locator('[id=\'{"metric":"macs","type":"constraint-label"}\']')).to_contain_text("macs ≤")
    page.wait_for_timeout(1500)
    assert asked == []
    page.goto(base + "/?study=demo-nsga2")
    expect(page.locator("#study")).to_contain_text("demo-nsga2")
    wait_plot(page, "pareto-graph", "d.some(t => t.name === 'front: demo-nsga2')")
    expect(page.locator("#pareto-status")).to_contain_text("of 16 completed trials within the constraints")
    assert asked == []


SHOWN = """() => { const g = document.querySelector('#pareto-graph .js-plotly-plot'); let n = 0;
  for (const t of (g && g._fullData) || []) { if (!String(t.name).startsWith('trials ')) continue;
    if (t.type === 'heatmap') { for (const row of t.z) for (const v of row) if (v > 0) n += v; } else n += t._length; }
  return n; }"""


def test_large_study_density_hover_and_every_point(
    storage: str, page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the density threshold (lowered here, so that the demo study crosses it) the landing plot draws the
    trials as densities with the ones nearest the front as points: every trial counted, points hover, the
    sliders move trials between the densities, and one click draws every trial as a point."""
    from nasplat_dashboards import figures as F

    monkeypatch.setattr(F, "DENSITY_THRESHOLD", 4)
    monkeypatch.setattr(F, "NEAR_FRONT_POINTS", 2)
    expect = sync_api.expect
    base, srv = serve_in_thread(storage)
    try:
        page.goto(base + "/")
        wait_plot(page, "pareto-graph", "d.some(t => t.type === 'heatmap')")
        expect(page.locator("#study")).to_contain_text("demo-random")
        assert page.evaluate(SHOWN) == 8
        kinds = traces(page)
        assert kinds[F.TRACE_FEASIBLE + F.DENSITY_SUFFIX][1] == "heatmap"
        assert kinds[F.TRACE_NEAR][1] == "scatter" and 2 <= kinds[F.TRACE_NEAR][0] < 8
        assert all(kind != "scattergl" for _, kind in kinds.values())  # no WebGL on landing
        shot(page, tmp_path, "pareto-density")
        # hovering a point nearest the front names its trial
        point = page.locator("#pareto-graph .scatterlayer .trace").first.locator(".point").first
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 15, y - 15)
        page.mouse.move(x, y, steps=4)
        expect(page.locator("#pareto-graph .hoverlayer")).to_contain_text("trial ")
        # the MACs slider at its lowest: trials move to the density outside the constraints
        thumb = page.locator('[id=\'{"metric":"macs","type":"constraint"}\'] [role=slider]')
        thumb.focus()
        page.keyboard.press("Home")
        expect(page.locator("#pareto-status")).not_to_contain_text("8 of 8", timeout=20_000)
        wait_plot(
            page,
            "pareto-graph",
            "d.some(t => t.name === 'trials outside constraints (density)' && t.z.some(r => [...r].some(v => v > 0)))",
        )
        assert page.evaluate(SHOWN) == 8
        # every trial as a point
        page.get_by_label("points, every trial").check()
        wait_plot(page, "pareto-graph", "!d.some(t => t.type === 'heatmap')")
        after = traces(page)
        assert after["trials within constraints"][0] + after["trials outside constraints"][0] == 8
        assert 0 < after["trials within constraints"][0] < 8
    finally:
        srv.shutdown()


def test_overlay_three_axes_and_point_click(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, _ = server
    page.goto(base + "/?study=demo-random")
    wait_plot(page, "pareto-graph")
    page.click("#compare")
    page.get_by_role("option", name="demo-nsga2").click()
    page.keyboard.press("Escape")
    wait_plot(page, "pareto-graph", "d.some(t => t.name === 'front: demo-nsga2')")
    wait_plot(page, "hv-trials", "d.length === 2")
    shot(page, tmp_path, "pareto-overlay", keep=True)
    # click a point of the other study's front: its architecture opens
    curve = list(traces(page)).index("front: demo-nsga2")
    point = (
        page.locator("#pareto-graph .scatterlayer .trace").nth(curve - 1).locator(".point").first
    )  # the empty trace is not drawn
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 15, y - 15)
    page.mouse.move(x, y, steps=4)
    page.mouse.click(x, y)
    expect(page.locator("#arch-title")).to_contain_text("of 'demo-nsga2'")
    expect(page.locator("#study")).to_contain_text("demo-nsga2")
    # a third axis: the plot turns 3-D
    page.click("#tab-pareto")
    page.click("#axis-z")
    page.get_by_role("option", name="params_count (min)").click()
    wait_plot(page, "pareto-graph", "d.every(t => t.type === 'scatter3d')")
    shot(page, tmp_path, "pareto-3d")


def test_architecture_view_and_export(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, exports = server
    page.goto(base + "/?study=demo-random&view=architecture")
    expect(page.locator("#arch-title")).to_contain_text("of 'demo-random'")
    expect(page.locator("#arch-title")).to_contain_text("on the Pareto front")  # the knee of the front is preselected
    wait_plot(page, "arch-graph", "d.length === 7")
    expect(page.locator("#arch-choices tbody tr")).to_have_count(7)  # header + 6 edges
    expect(page.locator("#arch-provenance")).to_contain_text("tabular")
    expect(page.locator("#export-command")).to_contain_text("nasplat export --storage sqlite:///")
    expect(page.locator("#export-command")).to_contain_text("--study demo-random --trial ")
    shot(page, tmp_path, "architecture", keep=True)
    # a tabular study has no trained weights: the export says so in one line
    page.click("#export-button")
    expect(page.locator("#export-result")).to_contain_text("used no supernet checkpoint")
    # the bundle folder name is free to choose (within the export folder); the command follows it
    page.fill("#export-name", "my-bundle")
    page.keyboard.press("Enter")
    expect(page.locator("#export-command")).to_contain_text(str(exports / "my-bundle"))
    page.fill("#export-name", "../elsewhere")
    page.keyboard.press("Enter")
    expect(page.locator("#export-command")).to_contain_text("is not allowed")
    # (a successful export, which takes ~10 s in a fresh server, is tested in test_dashboard_data.py)
    page.goto(base + "/?study=demo-oneshot&view=architecture&trial=2")
    expect(page.locator("#arch-title")).to_contain_text("Trial 2 of 'demo-oneshot'")
    expect(page.locator("#arch-provenance")).to_contain_text("checkpoint")
    # the one-shot study's supernet training history, read from its checkpoint
    page.click("#tab-training")
    wait_plot(page, "training-graph", "d.some(t => t.name === 'loss')")
    expect(page.locator("#predictor-graph")).to_contain_text("no data yet")
    shot(page, tmp_path, "training", keep=True)


def test_trials_table_and_parallel_coordinates(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, _ = server
    page.goto(base + "/?study=demo-nsga2&view=trials")
    expect(page.locator("#trials-status")).to_contain_text("16 of 16 trials match")
    wait_plot(page, "parallel-graph", "d.length && d[0].type === 'parcoords'")
    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(16 + 2)  # header and filter rows
    cell = page.locator('#trials-table th.dash-filter[data-dash-column="val_acc"] input[type=text]')
    cell.fill(">= 0.75")
    cell.press("Enter")
    expect(page.locator("#trials-status")).to_contain_text("of 16 trials match the filter {val_acc}")
    n = int(page.inner_text("#trials-status").split(" of ")[0])
    assert 0 < n < 16
    expect(rows).to_have_count(n + 2)
    values = [float(v) for v in page.locator('#trials-table td[data-dash-column="val_acc"]').all_inner_texts()]
    assert len(values) == n and min(values) >= 0.75
    # sort by MACs, ascending
    page.locator('#trials-table th[data-dash-column="macs"] .column-header--sort').click()
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('#trials-table td[data-dash-column=\"macs\"]')].map(c => parseFloat(c.innerText.replace(/,/g, '')));"
        " return v.length > 1 && v.every((x, i) => i === 0 || v[i - 1] <= x) }"
    )
    shot(page, tmp_path, "trials", keep=True)
    # a row opens its architecture
    first = page.locator('#trials-table td[data-dash-column="trial"]').first.inner_text()
    page.locator('#trials-table td[data-dash-column="arch"]').first.click()
    expect(page.locator("#arch-title")).to_contain_text(f"Trial {first} of 'demo-nsga2'")


def test_studies_overview(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, _ = server
    page.goto(base + "/?view=studies")
    table = page.locator("#studies-table")
    expect(table.locator("tbody tr")).to_have_count(5)  # header + 4 studies
    for text in ("demo-oneshot", "demo-nsga2", "demo-random", "legacy", "finished", "unreadable", "older nasplat"):
        expect(table).to_contain_text(text)
    shot(page, tmp_path, "studies", keep=True)
    table.locator('td[data-dash-column="study"]', has_text="demo-nsga2").click()
    expect(page.locator("#study")).to_contain_text("demo-nsga2")
    expect(page.locator("#pareto-status")).to_contain_text("of 16 completed trials")


def test_bad_study_names_and_versions(server: tuple[str, Path], page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, _ = server
    page.goto(base + "/?study=nope")
    expect(page.locator("#alert")).to_contain_text("no study 'nope' in this storage; its studies: demo-oneshot")
    shot(page, tmp_path, "unknown-study")
    page.goto(base + "/?study=legacy")
    expect(page.locator("#pareto-message")).to_contain_text(
        "study 'legacy' was written by an older nasplat (nasplat 0.0.1) in study format 0"
    )
    shot(page, tmp_path, "older-version")
    assert "Traceback" not in page.content()


def test_unreachable_storage(page: Any, tmp_path: Path) -> None:
    expect = sync_api.expect
    base, srv = serve_in_thread(f"sqlite:///{tmp_path / 'nowhere' / 'study.db'}")
    try:
        page.goto(base + "/")
        expect(page.locator("#alert")).to_contain_text("is unreachable: no SQLite file at")
        expect(page.locator("#refresh-status")).to_contain_text("storage unreadable")
        shot(page, tmp_path, "unreachable")
    finally:
        srv.shutdown()
    assert not (tmp_path / "nowhere").exists()


def test_empty_storage_then_live_refresh(page: Any, tmp_path: Path) -> None:
    """An empty storage says so; when a search starts writing into it, the page shows it without a reload."""
    expect = sync_api.expect
    folder = fast_dir("nasplat-dash-live-")
    try:
        db = folder / "study.db"
        db.touch()
        url = f"sqlite:///{db}"
        base, srv = serve_in_thread(url)
        try:
            page.goto(base + "/")
            expect(page.locator("#alert")).to_contain_text("is empty")
            shot(page, tmp_path, "empty")
            write_demo_search(folder, [RANDOM], storage_url=url)
            expect(page.locator("#study")).to_contain_text("demo-random", timeout=20_000)
            wait_plot(page, "pareto-graph")
            expect(page.locator("#pareto-status")).to_contain_text("8 of 8 completed trials", timeout=20_000)
            expect(page.locator("#alert")).to_be_empty()
        finally:
            srv.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def foreign() -> Iterator[str]:
    """A storage with a plain Optuna study (a few lines of optuna, no nasplat) and a ``nasplat bench tabular
    --storage`` study."""
    import warnings

    import optuna
    from typer.testing import CliRunner

    from nasplat.cli import app
    from nasplat_dashboards.demo import DEMO_SPACE, write_demo_table

    folder = fast_dir("nasplat-dash-foreign-")
    try:
        url = f"sqlite:///{folder / 'studies.db'}"
        space = folder / "demo-cell.yaml"
        space.write_text(DEMO_SPACE)
        table = write_demo_table(space, folder / "table.csv")
        result = CliRunner().invoke(
            app,
            ["bench", "tabular", "--table", str(table), "--space", str(space), "--objective", "val_acc:max",
             "--objective", "test_acc:max", "--out", str(folder / "runs.jsonl"), "--sampler", "random",
             "--budget", "8", "--seeds", "0", "--storage", url],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=url, study_name="plain-optuna", directions=["minimize", "minimize"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.set_metric_names(["loss", "latency_ms"])
        study.set_user_attr("owner", "someone")
        for i in range(6):
            trial = study.ask()
            width = trial.suggest_int("width", 8, 64, step=8)
            trial.set_user_attr("note", f"run {i}")
            trial.set_user_attr("gpu_hours", 0.5 * i)
            study.tell(trial, [1.0 / width + 0.01 * i, float(width)])
        yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_any_optuna_study_gets_a_generic_view(foreign: str, page: Any, tmp_path: Path) -> None:
    """A plain Optuna study: its objectives by their metric names, its Pareto front, trials with parameters and
    user attributes, one trial, the study's attributes; nowhere 'not written by nasplat'."""
    expect = sync_api.expect
    base, srv = serve_in_thread(foreign)
    try:
        page.goto(base + "/?study=plain-optuna&view=pareto")
        expect(page.locator("#study")).to_contain_text("plain-optuna")
        wait_plot(page, "pareto-graph")
        expect(page.locator("#pareto-status")).to_contain_text("6 of 6 completed trials within the constraints")
        expect(page.locator("#axis-x")).to_contain_text("loss")
        expect(page.locator("#axis-y")).to_contain_text("latency_ms")
        expect(page.locator("#pareto-message")).to_be_empty()
        shot(page, tmp_path, "plain-pareto")
        page.click("#tab-trials")
        expect(page.locator("#trials-status")).to_contain_text("6 of 6 trials match")
        expect(page.locator("#trials-table")).to_contain_text("attr:note")
        expect(page.locator("#trials-table")).to_contain_text("run 2")
        expect(page.locator("#trials-table")).to_contain_text("width")
        page.goto(base + "/?study=plain-optuna&view=architecture&trial=2")
        expect(page.locator("#arch-title")).to_contain_text("Trial 2 of 'plain-optuna' · COMPLETE")
        expect(page.locator("#arch-choices")).to_contain_text("width")
        expect(page.locator("#arch-metrics")).to_contain_text("latency_ms")
        expect(page.locator("#arch-attributes")).to_contain_text("gpu_hours")
        expect(page.locator("#arch-message")).to_be_empty()
        page.click("#tab-studies")
        expect(page.locator("#studies-table")).to_contain_text("plain-optuna")
        expect(page.locator("#study-attrs")).to_contain_text("loss (minimize)")
        expect(page.locator("#study-attrs")).to_contain_text("someone")
        page.click("#tab-training")
        wait_plot(page, "training-graph", "true")
        expect(page.locator("#training-message")).to_be_empty()
        expect(page.locator("body")).not_to_contain_text("not written by nasplat")
        shot(page, tmp_path, "plain-studies")
    finally:
        srv.shutdown()


def test_bench_tabular_study_gets_the_nas_views(foreign: str, page: Any, tmp_path: Path) -> None:
    """A study written by ``nasplat bench tabular --storage``: the space's own drawing of each architecture,
    its objectives, its front."""
    expect = sync_api.expect
    base, srv = serve_in_thread(foreign)
    try:
        page.goto(base + "/?study=bench-random-seed0&view=pareto")
        wait_plot(page, "pareto-graph")
        expect(page.locator("#axis-x")).to_contain_text("val_acc")
        expect(page.locator("#pareto-status")).to_contain_text("completed trials within the constraints")
        page.goto(base + "/?study=bench-random-seed0&view=architecture&trial=0")
        expect(page.locator("#arch-title")).to_contain_text("Trial 0 of 'bench-random-seed0' · COMPLETE")
        wait_plot(page, "arch-graph", "d.length === 7")  # the cell, drawn as for a search's study
        expect(page.locator("#arch-note")).to_be_empty()  # the space is stored: the cell is drawn
        expect(page.locator("#arch-provenance")).to_contain_text("tabular")
        page.click("#tab-studies")
        expect(page.locator("#study-attrs-title")).to_contain_text("bench-random-seed0")
        expect(page.locator("#study-attrs")).to_contain_text("space_spec")
        shot(page, tmp_path, "bench-studies")
    finally:
        srv.shutdown()
