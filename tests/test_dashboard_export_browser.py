"""The dashboard's export in headless Chromium: the bundle arrives as a zip download, and a second export to
the same name asks for the overwrite choice instead of failing."""

from __future__ import annotations

import importlib.util
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_dashboard_browser import ARGS, CHROMIUM, free_port, sync_api, wait_http  # skips without Chromium
from test_dashboard_data import fast_dir

from nasplat_dashboards.demo import DemoStudy, write_demo_search

ONESHOT = DemoStudy("zip-oneshot", "random", 3, supernet_epochs=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real one-shot search on digits, served in-process; yields the URL and the export folder."""
    from werkzeug.serving import make_server

    from nasplat_dashboards.app import make_app

    folder = fast_dir("nasplat-dash-zip-")
    exports = tmp_path_factory.mktemp("exports")
    try:
        url = write_demo_search(folder, [ONESHOT])
        srv = make_server(
            "127.0.0.1", free_port(), make_app(url, refresh_s=5, export_dir=exports).server, threaded=True
        )
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{srv.port}"
        wait_http(base + "/")
        try:
            yield base, exports
        finally:
            srv.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def page() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        sync_api.expect.set_options(timeout=30_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def test_export_downloads_a_zip_and_asks_before_overwriting(
    served: tuple[str, Path], page: Any, tmp_path: Path
) -> None:
    expect = sync_api.expect
    base, exports = served
    downloads: list[Any] = []

    def downloaded(d: Any) -> None:
        downloads.append(d)

    page.on("download", downloaded)
    page.goto(base + "/?study=zip-oneshot&view=architecture")
    expect(page.locator("#arch-title")).to_contain_text("of 'zip-oneshot'")
    name = page.locator("#export-name").input_value()
    assert name.startswith("zip-oneshot-trial")
    expect(page.locator("#export-command")).not_to_contain_text("--overwrite")

    # first click: the bundle is written under the export folder and arrives as <name>.zip
    with page.expect_download(timeout=120_000) as info:
        page.click("#export-button")
    download = info.value
    assert download.suggested_filename == f"{name}.zip"
    archive = tmp_path / "bundle.zip"
    download.save_as(str(archive))
    expect(page.locator("#export-result")).to_contain_text(f"downloading {name}.zip")
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    expected = {"weights.safetensors", "weights.pt", "model.py", "config.json", "preprocess.json", "arch.json",
                "metrics.json", "load.py", "model.onnx", "README.md"}  # fmt: skip
    assert {f"{name}/{f}" for f in expected} <= names
    assert (exports / name / "arch.json").is_file()  # the server's copy
    # the downloaded bundle works: its loader, its preprocessing, a raw digits image
    bundle = tmp_path / "unzipped" / name
    spec = importlib.util.spec_from_file_location("zip_bundle_load", bundle / "load.py")
    assert spec is not None and spec.loader is not None
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    model = load.load()
    logits = model(load.preprocess(np.full((8, 8), 128, np.uint8)))
    assert tuple(logits.shape) == (1, 10) and load.classes == [str(d) for d in range(10)]

    # second click, same name: nothing is replaced without the choice
    before = (exports / name / "weights.safetensors").stat().st_mtime_ns
    page.click("#export-button")
    expect(page.locator("#export-result")).to_contain_text("already exists")
    expect(page.locator("#export-result")).to_contain_text("replace an existing bundle of this name")
    assert len(downloads) == 1
    assert (exports / name / "weights.safetensors").stat().st_mtime_ns == before

    # the overwrite choice: the shell command follows it, and the export replaces the bundle
    page.get_by_label("replace an existing bundle of this name").check()
    expect(page.locator("#export-command")).to_contain_text("--overwrite")
    with page.expect_download(timeout=120_000) as info:
        page.click("#export-button")
    assert info.value.suggested_filename == f"{name}.zip"
    assert len(downloads) == 2
    assert (exports / name / "weights.safetensors").stat().st_mtime_ns != before
