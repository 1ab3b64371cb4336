"""How long the dashboard takes to open the Pareto view of a study with 20,000 trials.

Builds one study the way ``nasplat search`` stores it (study attributes from ``nasplat.study.open_study`` with
a real cell space; per trial: the six edge choices as parameters, two objective values, ``arch_key``,
``arch_string``, the analytical cost model's metrics and a provenance record) but writes the trials in bulk
through Optuna's own RDB schema (its SQLAlchemy models, one transaction) instead of one ``tell`` per trial,
which would take minutes. The objective values are synthetic.

Then measures, each repeated, on this machine:

1. data extraction + figures in-process, cold (first read of the study) and warm (cached, as after a refresh);
2. the server: the first HTTP response of the Pareto view's callback (a fresh server process, cold cache),
   and the same request again (warm);
3. with Chromium available (``/usr/bin/chromium``): a real browser opening ``/`` until the Pareto plot shows
   all 20,000 trials (fresh server, fresh browser), optionally interleaved with the page served by an earlier
   revision's dashboards (``--baseline GIT_REF``) for a before/after comparison under the same machine load;
   and switching the plot to every trial as a WebGL point.

Writes ``docs/bench-dashboard.md``. Run: ``.venv/bin/python benchmarks/dashboard_load.py [--trials 20000]
[--browser-repeats 5] [--baseline GIT_REF] [--storage URL]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STUDY = "bench-20k"


def build_storage(folder: Path, studies: Mapping[str, int], seed: int = 0, file: str = "bench.db") -> str:
    """A SQLite storage holding nasplat studies (name -> number of completed trials); returns its URL.

    Each study gets its own seed, so the overlaid fronts differ. The trials are written with one ``executemany``
    per table in a single transaction (Optuna's schema, as its SQLAlchemy models define it)."""
    import sqlite3

    import optuna
    from optuna.distributions import CategoricalDistribution, distribution_to_json
    from optuna.storages._rdb import models

    from nasplat import registry
    from nasplat.search import make_sampler
    from nasplat.space import load_space
    from nasplat.study import METRIC_PREFIX, make_storage, open_study
    from nasplat_dashboards.demo import DEMO_SPACE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space_file = folder / "demo-cell.yaml"
    space_file.write_text(DEMO_SPACE)
    space = load_space(space_file)
    db = folder / file
    url = f"sqlite:///{db.as_posix()}"
    storage = make_storage(url)
    objectives = [
        {"metric": "val_acc", "direction": "maximize", "cost_model": None, "device": None},
        {"metric": "macs", "direction": "minimize", "cost_model": "analytical", "device": None},
    ]
    cost = registry.get("cost_model", "analytical")()
    dims = space.dimensions
    dist_json = {d.label: distribution_to_json(CategoricalDistribution(list(d.choices))) for d in dims}  # type: ignore[arg-type]
    # every architecture of the space once: its key, string and cost metrics (the trials draw from these)
    import itertools

    archs = []
    for idx in itertools.product(*(range(len(d.choices)) for d in dims)):
        arch = space.make({d.label: d.choices[i] for d, i in zip(dims, idx, strict=True)})
        metrics = cost.estimate(space, arch, None)
        archs.append((idx, json.dumps(arch.key), json.dumps(space.to_string(arch)),
                      {METRIC_PREFIX + k: json.dumps(float(v)) for k, v in metrics.items()}, float(metrics["macs"])))  # fmt: skip
    study_ids = {}
    for k, (name, n_trials) in enumerate(studies.items()):
        study = open_study(
            storage, name, space=space, objectives=objectives,
            sampler=make_sampler("nsga2", seed=seed + k, n_objectives=2, space=space),
            attrs={"run_spec": {"trials": n_trials}, "estimator": "tabular", "sampler": "nsga2", "dataset": "digits"},
        )  # fmt: skip
        study_ids[name] = study._study_id
    t0 = dt.datetime(2026, 1, 1)
    trials: list[tuple[Any, ...]] = []
    values: list[tuple[Any, ...]] = []
    params: list[tuple[Any, ...]] = []
    attrs: list[tuple[Any, ...]] = []
    trial_id = 0
    for k, (name, n_trials) in enumerate(studies.items()):
        rng = np.random.default_rng(seed + k)
        provenance = json.dumps({"estimator": "synthetic", "space": space.name, "space_hash": space.hash, "seed": seed + k})
        picks = rng.integers(len(archs), size=n_trials)
        noise = rng.normal(0, 0.05, size=n_trials)
        shift = 0.01 * k  # each study's front a little apart from the others'
        for n in range(n_trials):
            idx, key, string, metric_json, macs = archs[int(picks[n])]
            val_acc = float(np.clip(0.4 + 0.1 * np.log10(macs) + noise[n] - shift, 0, 1))
            trial_id += 1
            start = t0 + dt.timedelta(seconds=2 * n + k)
            trials.append((trial_id, n, study_ids[name], "COMPLETE", start.isoformat(" ", "microseconds"),
                           (start + dt.timedelta(seconds=1.5)).isoformat(" ", "microseconds")))  # fmt: skip
            values.append((trial_id, 0, val_acc, "FINITE"))
            values.append((trial_id, 1, macs, "FINITE"))
            params.extend((trial_id, d.label, float(i), dist_json[d.label]) for d, i in zip(dims, idx, strict=True))
            attrs.append((trial_id, "arch_key", key))
            attrs.append((trial_id, "arch_string", string))
            attrs.extend((trial_id, m, v) for m, v in metric_json.items())
            attrs.append((trial_id, "provenance", provenance))
    t = models
    with sqlite3.connect(db) as conn:
        conn.executemany(
            f"INSERT INTO {t.TrialModel.__tablename__} (trial_id, number, study_id, state, datetime_start, "
            "datetime_complete) VALUES (?, ?, ?, ?, ?, ?)", trials)  # fmt: skip
        conn.executemany(
            f"INSERT INTO {t.TrialValueModel.__tablename__} (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)",
            values)  # fmt: skip
        conn.executemany(
            f"INSERT INTO {t.TrialParamModel.__tablename__} (trial_id, param_name, param_value, distribution_json) "
            "VALUES (?, ?, ?, ?)", params)  # fmt: skip
        conn.executemany(
            f"INSERT INTO {t.TrialUserAttributeModel.__tablename__} (trial_id, key, value_json) VALUES (?, ?, ?)",
            attrs)  # fmt: skip
    # the storage reads back through Optuna like any other: a trial of each study, as Optuna decodes it
    rdb = optuna.storages.RDBStorage(url)
    for name, n_trials in studies.items():
        sid = rdb.get_study_id_from_name(name)
        frozen = rdb.get_trial(rdb.get_trial_id_from_study_id_trial_number(sid, n_trials // 2))
        assert frozen.state == optuna.trial.TrialState.COMPLETE and len(frozen.params) == len(dims)
        assert frozen.user_attrs["arch_key"] and len(frozen.values or []) == 2
    rdb.engine.dispose()
    return url


def measure_in_process(url: str, repeats: int) -> dict[str, list[float]]:
    """Times of pareto_frame + hypervolume_frame + their figures (what the Pareto callback does), cold and warm."""
    from nasplat_dashboards import data as D
    from nasplat_dashboards import figures as F

    out: dict[str, list[float]] = {"cold": [], "warm": [], "trials_frame_cold": [], "core_trials_frame": []}

    def open_view() -> None:
        frame = D.pareto_frame(url, STUDY, ["val_acc", "macs"], {})
        fig = F.pareto_figure(frame)
        hv = D.hypervolume_frame(url, [STUDY], ["val_acc", "macs"], {})
        F.hypervolume_figure(hv, "trials")
        F.hypervolume_figure(hv, "elapsed_s")
        fig.to_json()

    for _ in range(repeats):
        D.clear_cache()
        t = time.perf_counter()
        D.trials_frame(url, STUDY)
        out["trials_frame_cold"].append(time.perf_counter() - t)
        D.clear_cache()
        t = time.perf_counter()
        open_view()
        out["cold"].append(time.perf_counter() - t)
        t = time.perf_counter()
        open_view()
        out["warm"].append(time.perf_counter() - t)
    import optuna

    from nasplat.study import trials_frame

    t = time.perf_counter()
    trials_frame(optuna.load_study(study_name=STUDY, storage=url))
    out["core_trials_frame"].append(time.perf_counter() - t)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, *, preload: bool = True, code: Path | None = None) -> subprocess.Popen[bytes]:
    """``nasplat dashboard`` in a fresh process; ``code``: a folder holding another ``nasplat_dashboards`` to
    serve instead of the installed one (the baseline of a before/after comparison)."""
    command = [sys.executable, "-m", "nasplat.cli", "dashboard", "--storage", url, "--port", str(port)]
    command += ["--refresh", "30", "--preload" if preload else "--no-preload"]
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("dashboard server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


#: how many trials of the selected study the Pareto plot accounts for: its points, and the counts of its densities
SHOWN_JS = """() => {
  const g = document.querySelector('#pareto-graph .js-plotly-plot');
  if (!g || !g._fullData || !g._fullLayout) return 0;
  let n = 0;
  for (const t of g._fullData) {
    if (!String(t.name || '').startsWith('trials ')) continue;
    if (t.type === 'heatmap') { for (const row of t.z) for (const v of row) if (v > 0) n += v; }
    else n += t._length || 0;
  }
  return n;
}"""


def open_landing(port: int, n_trials: int, *, want_request: bool = True) -> tuple[bytes | None, dict[str, float]]:
    """A fresh headless Chromium opening ``/``: returns the Pareto-view callback's request body (taken by
    switching to the studies view and back, since the landing view comes with the page; None unless
    ``want_request``) and when, in seconds after navigating, the page's scripts had loaded (``loaded``: the
    ``load`` event), the layout had arrived (``layout``), and the plot accounted for all ``n_trials`` trials
    and the frame holding it had been painted (``drawn``)."""
    from playwright.sync_api import sync_playwright

    body: bytes | None = None
    marks: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()

        def finished(request: Any) -> None:
            if request.url.endswith("/_dash-layout"):
                marks.setdefault("layout", time.perf_counter() - t)

        page.on("requestfinished", finished)

        def loaded(_page: Any) -> None:
            marks.setdefault("loaded", time.perf_counter() - t)

        page.on("load", loaded)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(f"() => ({SHOWN_JS})() >= {n_trials}", timeout=120_000)
        # the next frame has been painted once a task queued from its animation frame callback runs
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
        marks["drawn"] = time.perf_counter() - t
        shown = page.evaluate(SHOWN_JS)
        if shown != n_trials:
            raise RuntimeError(f"the plot shows {shown} trials, the study has {n_trials}")
        if want_request:
            page.goto(f"http://127.0.0.1:{port}/?view=studies")
            page.wait_for_timeout(1500)

            def back_to_pareto(r: Any) -> bool:
                data = (r.post_data_buffer or b"").replace(b" ", b"")
                return b"pareto-graph.figure" in data and b'"id":"view","property":"value","value":"pareto"' in data

            with page.expect_request(back_to_pareto) as req:
                page.click("#tab-pareto")
            body = req.value.post_data_buffer
            page.wait_for_timeout(2000)
        browser.close()
    return body, marks


def post(port: int, body: bytes) -> float:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_dash-update-component",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()
        assert resp.status == 200
    return time.perf_counter() - t


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, {platform.system()}"


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def baseline_code(ref: str, folder: Path) -> Path:
    """The dashboards of git revision ``ref``, extracted as an importable ``nasplat_dashboards`` under ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "dashboards"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "dashboards").rename(folder / "nasplat_dashboards")
    return folder


def open_all_points(port: int, n_trials: int) -> float:
    """Seconds from choosing "points, every trial" on the landing page until the plot shows every trial as a
    WebGL point and the frame holding them has been painted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function(f"() => ({SHOWN_JS})() >= {n_trials}", timeout=120_000)
        page.wait_for_timeout(1000)
        t = time.perf_counter()
        page.get_by_label("points, every trial").check()
        page.wait_for_function(
            "() => { const g = document.querySelector('#pareto-graph .js-plotly-plot');"
            " return !!(g && g._fullData && g._fullData.some(t => t.type === 'scattergl' && t._length > 0)) }",
            timeout=120_000,
        )
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
        took = time.perf_counter() - t
        shown = page.evaluate(SHOWN_JS)
        browser.close()
    if shown != n_trials:
        raise RuntimeError(f"the plot shows {shown} trials as points, the study has {n_trials}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the in-process and HTTP measurements")
    ap.add_argument("--browser-repeats", type=int, default=5, help="repeats of the browser measurements")
    ap.add_argument(
        "--baseline", metavar="GIT_REF", help="also open the page served by this revision's dashboards (before/after)"
    )
    ap.add_argument("--storage", help="reuse a storage an earlier run built (its study must hold --trials trials)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench-dashboard.md")
    args = ap.parse_args()
    import dash
    import optuna
    import pandas
    import plotly

    from nasplat_dashboards.figures import DENSITY_THRESHOLD, NEAR_FRONT_POINTS
    from nasplat_dashboards.scripts import BUNDLE, bundle_version, use_bundle

    folder = Path(tempfile.mkdtemp(prefix="nasplat-bench-dash-"))
    try:
        t = time.perf_counter()
        url = args.storage or build_storage(folder, args.trials)
        build_s = time.perf_counter() - t
        db = Path(url.removeprefix("sqlite:///"))
        size_mb = db.stat().st_size / 1e6
        print(
            f"storage: {args.trials} trials ({size_mb:.1f} MB)"
            + ("" if args.storage else f" written in {build_s:.1f} s")
        )
        inproc = measure_in_process(url, args.repeats)
        print({k: fmt(v) for k, v in inproc.items()})

        http_cold: list[float] = []
        http_preloaded: list[float] = []
        http_warm: list[float] = []
        variants: dict[str, Path | None] = {"current": None}
        if args.baseline:
            (folder / "baseline").mkdir()
            variants = {"baseline": baseline_code(args.baseline, folder / "baseline"), **variants}
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
        all_points: list[float] = []
        body: bytes | None = None
        load_before = os.getloadavg()
        if Path(CHROMIUM).exists():
            for _ in range(args.browser_repeats):
                for name, code in variants.items():  # interleaved, so that both see the same machine load
                    port = free_port()
                    proc = start_server(url, port, code=code)
                    try:
                        got, marks = open_landing(port, args.trials, want_request=body is None and name == "current")
                        body = body or got
                        for k, v in marks.items():
                            stages[name].setdefault(k, []).append(v)
                    finally:
                        stop_server(proc)
                    print(name, {k: round(v, 2) for k, v in marks.items()})
            for _ in range(args.repeats):
                port = free_port()
                proc = start_server(url, port)
                try:
                    all_points.append(open_all_points(port, args.trials))
                finally:
                    stop_server(proc)
            load_browser = os.getloadavg()
            assert body is not None
            for preload, first in ((False, http_cold), (True, http_preloaded)):
                for _ in range(args.repeats):
                    port = free_port()
                    proc = start_server(url, port, preload=preload)
                    try:
                        first.append(post(port, body))
                        if preload:
                            http_warm.extend(post(port, body) for _ in range(3))
                    finally:
                        stop_server(proc)
        else:
            load_browser = os.getloadavg()
        load_after = os.getloadavg()
        cur = stages["current"]
        base = stages.get("baseline", {})
        print({"http_cold": fmt(http_cold), "http_preloaded": fmt(http_preloaded), "http_warm": fmt(http_warm),
               "browser": fmt(cur.get("drawn", [])), "baseline": fmt(base.get("drawn", [])),
               "all_points": fmt(all_points)})  # fmt: skip
        target_ok = (max(http_cold) if http_cold else max(inproc["cold"])) < 2.0
        drawn = cur.get("drawn", [])
        browser_ok = bool(drawn) and statistics.median(drawn) < 2.0
        version = bundle_version()
        bundle = (
            f"a partial plotly.js {version} with the six trace types the dashboard draws "
            f"({BUNDLE.stat().st_size / 1e6:.1f} MB)"
            if use_bundle()
            else "Dash's full plotly.js (the partial bundle does not match the installed plotly.py)"
        )
        rows = [
            f"| data extraction + figures, in-process, cold (first read of the study) | {fmt(inproc['cold'])} |",
            f"| the same, warm (study cached until the storage changes) | {fmt(inproc['warm'])} |",
            f"| for reference: reading every column (all metrics and choices) with `nasplat_dashboards.data.trials_frame`, cold | {fmt(inproc['trials_frame_cold'])} |",
            f"| for comparison: `nasplat.study.trials_frame` (Optuna `load_study` + `get_trials`) | {fmt(inproc['core_trials_frame'])} |",
            f"| HTTP: first response of the Pareto callback, fresh server started with `--no-preload` | {fmt(http_cold)} |",
            f"| HTTP: first response of the Pareto callback, fresh server (default: latest study read at start) | {fmt(http_preloaded)} |",
            f"| HTTP: the same request again (warm) | {fmt(http_warm)} |",
            f"| **Chromium (headless, software rendering): opening `/` on a fresh server until the plot shows all {args.trials:,} trials, painted** | **{fmt(drawn)}** |",
            f"| ... at which the page's scripts had loaded (`load` event) | {fmt(cur.get('loaded', []))} |",
            f"| ... at which the layout (with the landing view) had arrived | {fmt(cur.get('layout', []))} |",
        ]  # fmt: skip
        if base:
            rows += [
                f"| before (`{args.baseline}`, same run, interleaved): opening `/` until the plot shows all trials | {fmt(base.get('drawn', []))} |",
                f"| ... at which the page's scripts had loaded | {fmt(base.get('loaded', []))} |",
                f"| ... at which the layout had arrived | {fmt(base.get('layout', []))} |",
            ]  # fmt: skip
        rows.append(
            f"| after landing: choosing \"points, every trial\" until all {args.trials:,} trials are WebGL points, painted | {fmt(all_points)} |"
        )  # fmt: skip
        lines = [
            "# Dashboard load time on a large study",
            "",
            f"Produced by `benchmarks/dashboard_load.py` on {dt.date.today().isoformat()}: one study of "
            f"{args.trials:,} completed trials (two objectives, six categorical choices, eight metrics and a "
            "provenance record per trial, like `nasplat search` writes them; synthetic values), SQLite storage "
            f"of {size_mb:.1f} MB"
            + ("" if args.storage else f" written in bulk in {build_s:.1f} s")
            + ".",
            "",
            f"- machine: {machine()}; load average {load_before[0]:.1f} before the browser measurements, "
            f"{load_browser[0]:.1f} after them and {load_after[0]:.1f} after the HTTP ones (the 2 cores are shared "
            "with other work: expect noise; the browser rows are medians of runs interleaved with the baseline's)",
            f"- versions: dash {dash.__version__}, plotly {plotly.__version__}, optuna {optuna.__version__}, "
            f"pandas {pandas.__version__}; the page loads {bundle}",
            "- view: the landing page, i.e. the Pareto front of `val_acc` (max) against `macs` (min) with no "
            f"constraint: {args.trials:,} trials drawn as a density with the front and the trials nearest it as "
            "points, and hypervolume against trials and against wall-clock time",
            "",
            "| what | time (median) |",
            "|---|---|",
            *rows,
            "",
            f"Target, opening the Pareto view in under 2 s: server side (cold extraction and figures) "
            f"**{'met' if target_ok else 'NOT met'}**; in the browser, until every trial is drawn, "
            f"**{'met' if browser_ok else 'not met'}** ({fmt(drawn)}).",
            "",
            "What the browser row covers: a fresh Chromium profile (nothing cached) loading the page's scripts "
            "from the local server (React, Dash's renderer, the dcc, html and table component code with only the "
            "lazily loaded chunks the views use: graph, dropdown, slider, table; and the partial plotly.js), then "
            "the layout, which already holds the latest study's Pareto view (controls, constraint sliders, the "
            "plot, the hypervolume plots, the front table: computed on the server with the page and kept until "
            "the storage changes, so no callback round trip comes before the first plot), then plotly drawing it. "
            "It stops once the plot accounts for every trial of the study (the counts of its two densities, "
            "within and outside the constraints, plus its points) and the frame holding it has been painted.",
            "",
            f"Above {DENSITY_THRESHOLD:,} trials the Pareto plot draws the trials as two heat maps of trials per "
            f"cell (within the constraints in blue, outside in grey), with the front and the feasible trials of "
            f"the first non-dominated layers (at least {NEAR_FRONT_POINTS}) as SVG points that hover and click "
            "like any point; every trial is counted once. Drawing all of them as WebGL points instead costs about "
            "half a second more on a quiet machine in software rendering (`--disable-gpu`): a set-up cost about the "
            "same for 1,000 or 20,000 points, then rasterising the points; it is one click away (\"trials drawn "
            "as: points, every trial\"; the last row includes the callback round trip that computes that figure). "
            "Before (the baseline rows, "
            "where given), the page eager-loaded every lazily loaded component chunk (about 3.5 MB: mathjax, "
            "markdown, the date picker included) and Dash's full plotly.js (4.8 MB), and drew every trial with "
            "WebGL. The HTTP rows time the Pareto callback (as sent when switching back to the Pareto view); "
            "they are not cold: the server's first request (the benchmark's readiness check) builds the landing "
            "layout, which reads the latest study, so `--no-preload` only defers that read to the first page.",
            "",
            "![The landing view of this study: densities, the trials nearest the front, the front]"
            "(screenshots/pareto-large-study.png)",
        ]  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"written: {args.out}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
