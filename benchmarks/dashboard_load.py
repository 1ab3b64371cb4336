"""The dashboard at scale: one study of 50,000 trials, and 10 studies overlaid on one Pareto view.

Builds the studies the way ``nasplat search`` stores them (:func:`nasplat_dashboards.demo.write_bulk_studies`:
study attributes from ``nasplat.study.open_study`` with a real cell space; per trial the six edge choices as
parameters, two objective values, ``arch_key``, ``arch_string``, the analytical cost model's metrics and a
provenance record) but writes the trials in bulk (one ``executemany`` per table) instead of one ``tell`` per
trial, which would take minutes. The objective values are synthetic.

Then measures, each repeated, on this machine:

1. data extraction + figures in-process, cold (first read of the study) and warm (cached, as after a refresh),
   and for comparison Optuna's own ``load_study(...).trials_dataframe()``;
2. the server: the first HTTP response of the Pareto view's callback (a fresh server process, cold cache),
   and the same request again (warm);
3. with Chromium available (``/usr/bin/chromium``), a real browser (fresh server, fresh browser profile):
   opening ``/`` until the Pareto plot shows all 50,000 trials, optionally interleaved with the page served by
   an earlier revision's dashboards (``--baseline GIT_REF``); switching the plot to every trial as a WebGL
   point; moving a constraint slider until the plot has repainted; opening the Trials view and sorting its
   table until the table shows the new order; and opening 10 studies overlaid (``/?study=..&compare=..``)
   until the plot accounts for every trial of all of them;
4. the server process's memory (resident set after landing, and its peak) in each case.

Writes ``docs/bench-dashboard.md``. Run: ``.venv/bin/python benchmarks/dashboard_load.py [--trials 50000]
[--overlay 10x5000] [--browser-repeats 5] [--baseline GIT_REF]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

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
STUDY = "bench-50k"
OVERLAY_PREFIX = "bench-overlay-"
AXES = ["val_acc", "macs"]


def build_storage(folder: Path, studies: dict[str, int], file: str) -> str:
    from nasplat_dashboards.demo import write_bulk_studies

    return write_bulk_studies(folder, studies, file=file)


def measure_in_process(url: str, repeats: int, study: str = STUDY) -> dict[str, list[float]]:
    """Times of pareto_frame + hypervolume_frame + their figures (what the Pareto callback does), cold and warm."""
    from nasplat_dashboards import data as D
    from nasplat_dashboards import figures as F

    out: dict[str, list[float]] = {"cold": [], "warm": [], "trials_frame_cold": [], "core_trials_frame": []}

    def open_view() -> None:
        frame = D.pareto_frame(url, study, AXES, {})
        fig = F.pareto_figure(frame)
        hv = D.hypervolume_frame(url, [study], AXES, {})
        F.hypervolume_figure(hv, "trials")
        F.hypervolume_figure(hv, "elapsed_s")
        fig.to_json()

    for _ in range(repeats):
        D.clear_cache()
        t = time.perf_counter()
        D.trials_frame(url, study)
        out["trials_frame_cold"].append(time.perf_counter() - t)
        D.clear_cache()
        t = time.perf_counter()
        open_view()
        out["cold"].append(time.perf_counter() - t)
        t = time.perf_counter()
        open_view()
        out["warm"].append(time.perf_counter() - t)
    import optuna

    # what a script or notebook would read the study with: Optuna's own export (Optuna's storage API, as
    # optuna-dashboard reads trials too); nasplat.study.trials_frame reads through the same reader as the dashboard
    t = time.perf_counter()
    optuna.load_study(study_name=study, storage=url).trials_dataframe()
    out["core_trials_frame"].append(time.perf_counter() - t)
    return out


def measure_overlay_in_process(url: str, names: list[str], repeats: int) -> dict[str, list[float]]:
    """Times of the overlay's data (the selected study's pareto_frame, the others' overlay_frame, the
    hypervolume of all) and its figure, cold and warm."""
    from nasplat_dashboards import data as D
    from nasplat_dashboards import figures as F

    out: dict[str, list[float]] = {"cold": [], "warm": []}

    def open_view() -> None:
        frame = D.pareto_frame(url, names[0], AXES, {})
        overlay = D.overlay_frame(url, names[0], names[1:], AXES, {})
        fig = F.pareto_figure(frame, overlay)
        hv = D.hypervolume_frame(url, names, AXES, {})
        F.hypervolume_figure(hv, "trials")
        F.hypervolume_figure(hv, "elapsed_s")
        fig.to_json()

    for _ in range(repeats):
        D.clear_cache()
        t = time.perf_counter()
        open_view()
        out["cold"].append(time.perf_counter() - t)
        t = time.perf_counter()
        open_view()
        out["warm"].append(time.perf_counter() - t)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, *, preload: bool = True, code: Path | None = None,
                 others_read: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """``nasplat dashboard`` in a fresh process; ``code``: a folder holding another ``nasplat_dashboards`` to
    serve instead of the installed one (the baseline of a before/after comparison). ``others_read``: also wait
    until the server says it has read the other studies (in the background, once it serves)."""
    command = [sys.executable, "-m", "nasplat.cli", "dashboard", "--storage", url, "--port", str(port)]
    command += ["--refresh", "30", "--preload" if preload else "--no-preload"]
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    read = threading.Event()

    def lines() -> None:  # the server's stdout, read to its end (so that it never blocks on a full pipe)
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.match(rb"read \d+ other stud", line):
                read.set()
        read.set()

    threading.Thread(target=lines, daemon=True).start()
    if others_read and not read.wait(timeout=300):
        proc.kill()
        raise RuntimeError("dashboard server did not read the other studies")
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


def memory_mb(pid: int) -> tuple[float, float]:
    """The resident set of process ``pid`` now and its peak (VmRSS, VmHWM), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def open_landing(port: int, n_trials: int, *, want_request: bool = True, path: str = "/",
                 then: Any = None) -> tuple[bytes | None, dict[str, float]]:  # fmt: skip
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
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        t = time.perf_counter()

        def finished(request: Any) -> None:
            if request.url.endswith("/_dash-layout"):
                marks.setdefault("layout", time.perf_counter() - t)

        page.on("requestfinished", finished)

        def loaded(_page: Any) -> None:
            marks.setdefault("loaded", time.perf_counter() - t)

        page.on("load", loaded)
        page.goto(f"http://127.0.0.1:{port}{path}")
        page.wait_for_function(f"() => ({SHOWN_JS})() >= {n_trials}", timeout=120_000)
        # the next frame has been painted once a task queued from its animation frame callback runs
        page.evaluate(PAINTED_JS)
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
        if then is not None:
            marks.update(then(page))
        browser.close()
    return body, marks


PAINTED_JS = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
#: the trials the plot draws within the constraints (all studies) and outside them (the selected study)
SPLIT_JS = """() => {
  const g = document.querySelector('#pareto-graph .js-plotly-plot');
  let inside = 0, outside = 0;
  for (const t of (g && g._fullData) || []) {
    const name = String(t.name || '');
    if (!name.startsWith('trials ')) continue;
    let n = 0;
    if (t.type === 'heatmap') { for (const row of t.z) for (const v of row) if (v > 0) n += v; } else n = t._length || 0;
    if (name.startsWith('trials outside')) outside += n; else inside += n;
  }
  return [inside, outside];
}"""


def move_slider(page: Any, n_trials: int) -> dict[str, float]:
    """Seconds from clicking the middle of the MACs constraint slider's track until the plot has repainted with
    the trials above that threshold moved outside the constraints (what the status line says, the plot draws)."""
    slider = page.locator('[id=\'{"metric":"macs","type":"constraint"}\'] [data-orientation=horizontal]').first
    box = slider.bounding_box()
    page.wait_for_timeout(500)  # let the landing page settle (its refresh callback)
    t = time.perf_counter()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        f"() => {{ const [a, b] = ({SPLIT_JS})(); return b > 0 && a + b === {n_trials}; }}", timeout=120_000
    )
    page.evaluate(PAINTED_JS)
    took = time.perf_counter() - t
    label = page.inner_text('[id=\'{"metric":"macs","type":"constraint-label"}\']')
    inside, outside = page.evaluate(SPLIT_JS)
    status = page.inner_text("#pareto-status")
    if f"{inside} of {n_trials} completed trials" not in status.replace(",", ""):
        raise RuntimeError(f"the plot draws {inside} trials within the constraints; the status says: {status}")
    print(f"  slider: {label}: {inside} within, {outside} outside")
    return {"slider": took}


def open_and_sort_table(page: Any, n_trials: int) -> dict[str, float]:
    """Seconds from clicking the Trials tab until its table shows the first page of all ``n_trials`` trials,
    then from clicking the MACs column's sort button until the table shows the cheapest trials first."""
    cells = '#trials-table td[data-dash-column="macs"]'
    t = time.perf_counter()
    page.click("#tab-trials")
    page.wait_for_function(
        f"() => (document.querySelector('#trials-status') || {{}}).innerText?.startsWith('{n_trials:,} of {n_trials:,}')"
        f" && document.querySelectorAll('{cells}').length > 0",
        timeout=120_000,
    )
    page.evaluate(PAINTED_JS)
    opened = time.perf_counter() - t
    # the view also draws the parallel coordinates (WebGL, seconds in software rendering): sort once it has
    page.wait_for_function(
        "() => { const g = document.querySelector('#parallel-graph .js-plotly-plot');"
        " return !!(g && g._fullData && g._fullData.some(t => t.type === 'parcoords')); }",
        timeout=120_000,
    )
    page.evaluate(PAINTED_JS)
    before = page.locator(cells).all_inner_texts()
    # sorted, and no longer the page shown before (which may happen to be in order)
    ordered = (
        f"(before) => {{ if ([...document.querySelectorAll('{cells}')].map(c => c.innerText).join('|') === before) return false;"
        f" const v = [...document.querySelectorAll('{cells}')].map(c => parseFloat(c.innerText.replace(/,/g, '')));"
        " return v.length > 1 && v.every((x, i) => i === 0 || v[i - 1] <= x); }"
    )
    t = time.perf_counter()
    page.locator('#trials-table th[data-dash-column="macs"] .column-header--sort').click()
    page.wait_for_function(ordered, arg="|".join(before), timeout=120_000)
    page.evaluate(PAINTED_JS)
    took = time.perf_counter() - t
    after = page.locator(cells).all_inner_texts()
    print(f"  table: macs {before[:3]} -> {after[:3]}")
    return {"trials_view": opened, "sort": took}


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
    for stale in (folder / "dashboards", folder / "nasplat_dashboards"):
        shutil.rmtree(stale, ignore_errors=True)
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
    ap.add_argument("--trials", type=int, default=50_000, help="trials of the single large study")
    ap.add_argument("--overlay", default="10x5000", help="STUDIESxTRIALS: the studies overlaid on one Pareto view")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the in-process and HTTP measurements")
    ap.add_argument("--browser-repeats", type=int, default=5, help="repeats of the browser measurements")
    ap.add_argument(
        "--baseline", metavar="GIT_REF", help="also open the page served by this revision's dashboards (before/after)"
    )
    ap.add_argument("--keep", type=Path, help="build the storages in this folder and keep them (reused if there)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench-dashboard.md")
    ap.add_argument("--screenshots", action="store_true", help="write the views' screenshots to docs/screenshots/")
    args = ap.parse_args()
    import dash
    import optuna
    import pandas
    import plotly

    from nasplat_dashboards.figures import DENSITY_THRESHOLD, NEAR_FRONT_POINTS, NEAR_OVERLAY_POINTS
    from nasplat_dashboards.scripts import BUNDLE, bundle_version, use_bundle

    n_studies, per_study = (int(v) for v in args.overlay.lower().split("x"))
    names = [f"{OVERLAY_PREFIX}{i:02d}" for i in range(n_studies)]
    n_overlay = n_studies * per_study
    folder = args.keep or Path(tempfile.mkdtemp(prefix="nasplat-bench-dash-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        built: dict[str, float] = {}
        urls: dict[str, str] = {}
        for key, studies, file in (("single", {STUDY: args.trials}, "single.db"),
                                   ("overlay", dict.fromkeys(names, per_study), "overlay.db")):  # fmt: skip
            if (folder / file).exists():
                urls[key] = f"sqlite:///{(folder / file).as_posix()}"
                continue
            t = time.perf_counter()
            urls[key] = build_storage(folder, studies, file)
            built[key] = time.perf_counter() - t
        sizes = {k: Path(u.removeprefix("sqlite:///")).stat().st_size / 1e6 for k, u in urls.items()}
        print({"built": built, "MB": sizes})
        url, overlay_url = urls["single"], urls["overlay"]
        inproc = measure_in_process(url, args.repeats)
        print({k: fmt(v) for k, v in inproc.items()})
        inproc_overlay = measure_overlay_in_process(overlay_url, names, args.repeats)
        print({k: fmt(v) for k, v in inproc_overlay.items()})

        http_cold: list[float] = []
        http_preloaded: list[float] = []
        http_warm: list[float] = []
        variants: dict[str, Path | None] = {"current": None}
        if args.baseline:
            (folder / "baseline").mkdir(exist_ok=True)
            variants = {"baseline": baseline_code(args.baseline, folder / "baseline"), **variants}
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
        overlay_marks: dict[str, list[float]] = {}
        memory: dict[str, list[tuple[float, float]]] = {"single": [], "overlay": []}
        all_points: list[float] = []
        body: bytes | None = None
        shots = (REPO / "docs" / "screenshots") if args.screenshots else None
        compare = ",".join(names[1:])
        overlay_path = f"/?study={names[0]}&compare={compare}"
        load_before = os.getloadavg()
        if Path(CHROMIUM).exists():
            for rep in range(args.browser_repeats):
                for name, code in variants.items():  # interleaved, so that both see the same machine load
                    port = free_port()
                    proc = start_server(url, port, code=code)
                    current = name == "current"
                    try:
                        then = (move_slider if rep % 2 == 0 else open_and_sort_table) if current else None

                        def after(page: Any, then: Any = then, pid: int = proc.pid, n: int = args.trials,
                                  rep: int = rep) -> Any:  # fmt: skip
                            memory["single"].append(memory_mb(pid))
                            if shots is not None and rep == 0:
                                page.screenshot(path=str(shots / "pareto-50k-study.png"))
                            return then(page, n) if then else {}

                        got, marks = open_landing(
                            port, args.trials, want_request=body is None and current, then=after if current else None
                        )
                        body = body or got
                        for k, v in marks.items():
                            stages[name].setdefault(k, []).append(v)
                    finally:
                        stop_server(proc)
                    print(name, {k: round(v, 2) for k, v in marks.items()})
                port = free_port()
                proc = start_server(overlay_url, port, others_read=True)
                try:

                    def again(page: Any, pid: int = proc.pid, port: int = port, rep: int = rep) -> dict[str, float]:
                        memory["overlay"].append(memory_mb(pid))
                        t = time.perf_counter()  # the same page again, in a fresh tab: its first paint is kept
                        other = page.context.new_page()
                        other.goto(f"http://127.0.0.1:{port}{overlay_path}")
                        other.wait_for_function(f"() => ({SHOWN_JS})() >= {n_overlay}", timeout=120_000)
                        other.evaluate(PAINTED_JS)
                        took = time.perf_counter() - t
                        if shots is not None and rep == 0:
                            other.screenshot(path=str(shots / "pareto-overlay-10-studies.png"))
                        return {"again": took}

                    _, marks = open_landing(port, n_overlay, want_request=False, path=overlay_path, then=again)
                finally:
                    stop_server(proc)
                for k, v in marks.items():
                    overlay_marks.setdefault(k, []).append(v)
                print("overlay", {k: round(v, 2) for k, v in marks.items()})
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
               "all_points": fmt(all_points), "memory": memory})  # fmt: skip
        drawn = cur.get("drawn", [])
        drawn_overlay = overlay_marks.get("drawn", [])
        version = bundle_version()
        bundle = (
            f"a partial plotly.js {version} with the six trace types the dashboard draws "
            f"({BUNDLE.stat().st_size / 1e6:.1f} MB)"
            if use_bundle()
            else "Dash's full plotly.js (the partial bundle does not match the installed plotly.py)"
        )

        def met(values: list[float], target: float) -> str:
            if not values:
                return "not measured"
            return f"**{'met' if statistics.median(values) < target else 'not met'}** ({fmt(values)})"

        def mem(rows: list[tuple[float, float]]) -> str:
            if not rows:
                return "-"
            rss, peak = [r[0] for r in rows], [r[1] for r in rows]
            return f"{statistics.median(rss):.0f} MB (peak {max(peak):.0f} MB, n={len(rows)})"

        core = inproc["core_trials_frame"][0]
        ratio = core / statistics.median(inproc["trials_frame_cold"])
        n = f"{args.trials:,}"
        rows = [
            f"| data extraction + figures, in-process, cold (first read of the study) | {fmt(inproc['cold'])} |",
            f"| the same, warm (study cached until the storage changes) | {fmt(inproc['warm'])} |",
            f"| reading every column (all metrics and choices) with `nasplat_dashboards.data.trials_frame`, cold | {fmt(inproc['trials_frame_cold'])} |",
            f"| for comparison: Optuna's own `optuna.load_study(...).trials_dataframe()`, what a script would read the study with | {fmt(inproc['core_trials_frame'])} ({ratio:.0f}x the row above) |",
            f"| HTTP: first response of the Pareto callback, fresh server started with `--no-preload` | {fmt(http_cold)} |",
            f"| HTTP: first response of the Pareto callback, fresh server (default: latest study read at start) | {fmt(http_preloaded)} |",
            f"| HTTP: the same request again (warm) | {fmt(http_warm)} |",
            f"| **Chromium (headless, software rendering): opening `/` on a fresh server until the plot shows all {n} trials, painted** | **{fmt(drawn)}** |",
            f"| ... at which the page's scripts had loaded (`load` event) | {fmt(cur.get('loaded', []))} |",
            f"| ... at which the layout (with the landing view) had arrived | {fmt(cur.get('layout', []))} |",
        ]  # fmt: skip
        if base:
            rows += [
                f"| before (`{args.baseline}`, same run, interleaved): opening `/` until the plot shows all trials | {fmt(base.get('drawn', []))} |",
                f"| ... at which the page's scripts had loaded | {fmt(base.get('loaded', []))} |",
                f"| ... at which the layout had arrived | {fmt(base.get('layout', []))} |",
            ]  # fmt: skip
        rows += [
            f"| **after landing: clicking the middle of the MACs constraint slider until the plot has repainted with the trials above it outside the constraints** | **{fmt(cur.get('slider', []))}** |",
            f"| after landing: opening the Trials view (first time: every column of every trial read) until its first page shows (its parallel coordinates of the best 1,000 trials follow) | {fmt(cur.get('trials_view', []))} |",
            f"| **then, once its parallel coordinates are drawn, sorting the {n} trials by MACs (clicking the column's sort button) until the table shows the cheapest first** | **{fmt(cur.get('sort', []))}** |",
            f"| after landing: choosing \"points, every trial\" until all {n} trials are WebGL points, painted | {fmt(all_points)} |",
            f"| server process memory after landing (resident; peak since start) | {mem(memory['single'])} |",
        ]  # fmt: skip
        overlay_rows = [
            f"| overlay data (pareto_frame, overlay_frame of the others, hypervolume of all) + figures, in-process, cold | {fmt(inproc_overlay['cold'])} |",
            f"| the same, warm | {fmt(inproc_overlay['warm'])} |",
            f"| **Chromium: opening `/?study={names[0]}&compare=...` (the {n_studies - 1} others) on a fresh server, once it has read the other studies, until the plot accounts for all {n_overlay:,} trials, painted** | **{fmt(drawn_overlay)}** |",
            f"| ... at which the page's scripts had loaded | {fmt(overlay_marks.get('loaded', []))} |",
            f"| ... at which the layout (with the overlay) had arrived | {fmt(overlay_marks.get('layout', []))} |",
            f"| the same page opened again in a new tab (scripts cached by the browser, its first paint kept by the server) | {fmt(overlay_marks.get('again', []))} |",
            f"| server process memory after the overlay (resident; peak since start) | {mem(memory['overlay'])} |",
        ]  # fmt: skip
        built_text = {k: f" written in bulk in {v:.1f} s" for k, v in built.items()}
        lines = [
            "# The dashboard at scale: 50,000 trials, and 10 studies on one Pareto view",
            "",
            f"Produced by `benchmarks/dashboard_load.py` on {dt.date.today().isoformat()}. Two SQLite storages written "
            "by `nasplat_dashboards.demo.write_bulk_studies` (trials as `nasplat search` writes them: two objectives, "
            "six categorical choices, eight metrics and a provenance record per trial; synthetic values): one study of "
            f"{n} completed trials ({sizes['single']:.1f} MB{built_text.get('single', '')}), and {n_studies} studies "
            f"of {per_study:,} trials each ({n_overlay:,} in all; {sizes['overlay']:.1f} MB"
            f"{built_text.get('overlay', '')}).",
            "",
            f"- machine: {machine()}; load average {load_before[0]:.1f} before the browser measurements, "
            f"{load_browser[0]:.1f} after them and {load_after[0]:.1f} after the HTTP ones (the cores are shared "
            "with other work, here several Ray jobs of other sessions: each process gets a fraction of a core, and "
            "every row is several times what it is on a quiet machine; the rows are medians, browser runs "
            "interleaved, so the before/after comparison holds under the same load)",
            f"- versions: dash {dash.__version__}, plotly {plotly.__version__}, optuna {optuna.__version__}, "
            f"pandas {pandas.__version__}; the page loads {bundle}; Chromium in software rendering (`--disable-gpu`)",
            "- anchor: optuna-dashboard, the dashboard an Optuna user would otherwise open, does not support studies "
            "of more than 10,000 trials, as its maintainers state (optuna/optuna-dashboard#385); it is not run here",
            "",
            f"## One study of {n} trials",
            "",
            "The landing page: the Pareto front of `val_acc` (max) against `macs` (min) with no constraint, the "
            f"{n} trials drawn as a density with the front and the trials nearest it as points, and hypervolume "
            "against trials and against wall-clock time.",
            "",
            "| what | time (median) |",
            "|---|---|",
            *rows,
            "",
            f"Targets: first paint under 2 s {met(drawn, 2.0)}; a slider move under 1 s {met(cur.get('slider', []), 1.0)}; "
            f"a sort under 1 s {met(cur.get('sort', []), 1.0)}.",
            "",
            f"## {n_studies} studies overlaid on one Pareto view",
            "",
            f"The Pareto view of `{names[0]}` with the {n_studies - 1} others overlaid (the URL names them: "
            f"`compare=` ...), all {n_overlay:,} trials accounted for: the selected study as above; each overlaid "
            f"study's front and its trials of the first non-dominated layers (at least {NEAR_OVERLAY_POINTS}) as "
            "points in its own colour, under one legend entry per study; the rest of the overlaid studies' trials "
            "as one density; the hypervolume of all ten.",
            "",
            "| what | time (median) |",
            "|---|---|",
            *overlay_rows,
            "",
            f"Target, first paint under 2 s: {met(drawn_overlay, 2.0)}.",
            "",
            "## What the rows cover",
            "",
            "A browser row starts a fresh Chromium profile (nothing cached) on a fresh server: the page's scripts "
            "from the local server (React, Dash's renderer, the dcc, html and table component code with only the "
            "lazily loaded chunks the views use, and the partial plotly.js), then the layout, which already holds "
            "the Pareto view the URL opens (controls, sliders, the plot, the hypervolume plots, the front table, "
            "the overlay: computed on the server with the page, so no callback round trip comes before the first "
            "plot), then plotly drawing it. It stops once the plot accounts for every trial (the counts of its "
            "densities plus its points) and the frame holding it has been painted. The server reads the latest "
            "study before it serves and the other studies in the background once it serves (it says when); the "
            "overlay row starts once it has. The slider row clicks the middle of the MACs slider's track on the "
            "landing page and stops once the plot's densities and points say how many trials lie within and "
            "outside the new constraint (as the status line does) and the frame is painted: one callback round "
            "trip (the constrained front, hypervolumes and figures are computed on the server) and plotly drawing "
            "the three plots again. The sort row clicks the MACs column's sort button of the Trials view (sorted, "
            "filtered and paged on the server: only the page of 20 rows travels) and stops once the table shows "
            "the cheapest trials first.",
            "",
            f"Above {DENSITY_THRESHOLD:,} trials the Pareto plot draws the trials as heat maps of trials per cell "
            f"(the selected study's within the constraints in blue, outside in grey; the overlaid studies' in "
            f"orange), with the fronts and the trials of the first non-dominated layers (at least "
            f"{NEAR_FRONT_POINTS} of the selected study's) as SVG points that hover and click like any point; every "
            "trial is counted once. Drawing all of them as WebGL points instead is one click away (\"trials drawn "
            "as: points, every trial\"). The HTTP rows time the Pareto callback (as sent when switching back to "
            "the Pareto view); they are not cold: the server's first request (the benchmark's readiness check) "
            "builds the landing layout, which reads the latest study, so `--no-preload` only defers that read to "
            "the first page."
            + (f" Before (the baseline rows): the dashboards of `{args.baseline}`." if base else ""),
            "",
            f"![The landing view of the {n}-trial study](screenshots/pareto-50k-study.png)",
            "",
            f"![{n_studies} studies overlaid](screenshots/pareto-overlay-10-studies.png)",
        ]  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"written: {args.out}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
