"""Reliability and security at the edges: storage passwords never show in messages, the dashboard answers only
requests addressed to it (DNS rebinding) and clamps what clients ask for, and a predictor's manifest cannot
point outside its folder. (The Ray cluster's side is in test_distributed.py.)"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nasplat.errors import NasplatError

PASSWORD = "s3cret-pw"


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------------------
# storage URLs: the password is masked in every message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cret-pw@db.example:5432/runs", "postgresql://alice:***@db.example:5432/runs"),
        ("postgresql+psycopg2://alice:p@ss/w@host/db?sslmode=require", "postgresql+psycopg2://alice:***@host/db?sslmode=require"),
        ("postgresql://host/db?user=alice&password=s3cret-pw&x=1", "postgresql://host/db?user=alice&password=***&x=1"),
        ("alice:s3cret-pw@host/db", "alice:***@host/db"),
        ("postgresql://alice@host/db", "postgresql://alice@host/db"),
        ("sqlite:////tmp/a@b:c/study.db", "sqlite:////tmp/a@b:c/study.db"),
        ("sqlite:///study.db", "sqlite:///study.db"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    from nasplat.study import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:{pw}@127.0.0.1:{port}/runs",  # nothing listens: the driver's error names the server
        "postgresql://alice:{pw}@127.0.0.1:notaport/runs",  # a bad port: SQLAlchemy's parse error
        "alice:{pw}@127.0.0.1/runs",  # not a URL at all
        "nosuchdialect://alice:{pw}@127.0.0.1:{port}/runs",  # a dialect SQLAlchemy does not know
    ],
)
def test_storage_errors_never_show_the_password(url: str) -> None:
    from nasplat.study import make_storage

    url = url.format(pw=PASSWORD, port=_unused_port())
    with pytest.raises(NasplatError) as info:
        make_storage(url)
    message = str(info.value)
    assert PASSWORD not in message
    assert "\n" not in message
    assert "alice:***@127.0.0.1" in message


def test_storage_error_hides_a_password_the_driver_quotes() -> None:
    from nasplat.study._study import _redact_in

    url = "postgresql://alice:p%40ss%2Fword@host/db"
    exc = ValueError(f"could not connect with {url} (password 'p@ss/word' rejected; p%40ss%2Fword)\ndetails")
    text = _redact_in(exc, url)
    assert text == "could not connect with postgresql://alice:***@host/db (password '***' rejected; ***)"


def test_cli_storage_error_never_shows_the_password() -> None:
    url = f"postgresql://alice:{PASSWORD}@127.0.0.1:{_unused_port()}/runs"
    proc = subprocess.run(
        [sys.executable, "-m", "nasplat.cli", "studies", "--storage", url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert PASSWORD not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "alice:***@127.0.0.1" in lines[0], proc.stderr


# --------------------------------------------------------------------------------------------------------------
# the dashboard: answers only requests addressed to it (DNS rebinding), clamps the client's page size

WAIT_S = 120.0


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("dash")
    from nasplat_dashboards.demo import DemoStudy, write_demo_search

    return write_demo_search(tmp_path_factory.mktemp("dash"), [DemoStudy("s", "random", 24, seed=3)])


@contextmanager
def _dashboard(url: str, host: str = "127.0.0.1") -> Iterator[int]:
    """A real dashboard server on 127.0.0.1 (whatever ``host`` it is told it serves), in a thread: its port."""
    from werkzeug.serving import make_server

    from nasplat_dashboards.app import make_app

    srv = make_server("127.0.0.1", 0, make_app(url, refresh_s=1, host=host).server, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(srv.port)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT_S)


def _request(port: int, method: str, path: str, host: str | None, body: object = None) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port`` with exactly the Host header given (none for None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LocalHost", 200),
        ("[::1]:{port}", 200),
        ("evil.example", 400),  # a rebinding page: its own name, resolved to 127.0.0.1
        ("evil.example:{port}", 400),
        ("127.0.0.1.evil.example:{port}", 400),
        ("localhost.evil.example", 400),
        ("localhost:notaport", 400),
        ("192.0.2.7:{port}", 400),  # bound to loopback: another address is not this server
    ],
)
def test_dashboard_checks_the_host_header(demo_url: str, host: str, status: int) -> None:
    with _dashboard(demo_url) as port:
        got, body = _request(port, "GET", "/", host.format(port=port))
        assert got == status, body[:300]
        if status == 400:
            assert b"does not answer to the host" in body and b"<title>" not in body
            # the callbacks (what would read the studies) are refused just the same
            assert _request(port, "POST", "/_dash-update-component", host.format(port=port), {})[0] == 400
            assert _request(port, "GET", "/_dash-layout", host.format(port=port))[0] == 400
        else:
            assert b"<title>nasplat dashboard</title>" in body


def test_dashboard_answers_the_host_it_was_started_with(demo_url: str) -> None:
    with _dashboard(demo_url, host="nasplat.test") as port:
        assert _request(port, "GET", "/", f"nasplat.test:{port}")[0] == 200
        assert _request(port, "GET", "/", f"localhost:{port}")[0] == 200
        assert _request(port, "GET", "/", f"evil.example:{port}")[0] == 400
    with _dashboard(demo_url, host="0.0.0.0") as port:  # every interface: any address, never another name
        assert _request(port, "GET", "/", f"192.0.2.7:{port}")[0] == 200
        assert _request(port, "GET", "/", f"[2001:db8::1]:{port}")[0] == 200
        assert _request(port, "GET", "/", f"{socket.gethostname()}:{port}")[0] == 200
        assert _request(port, "GET", "/", f"evil.example:{port}")[0] == 400


def _trials_page(port: int, page_size: object, page: object = 0) -> tuple[int, int, object]:
    """Ask the trials table's callback for a page as the browser does: (rows, page count, message)."""
    outputs = [("trials-table", "data"), ("trials-table", "columns"), ("trials-table", "page_count"),
               ("trials-status", "children"), ("trials-message", "children")]  # fmt: skip
    inputs = {("study", "value"): "s", ("sig", "data"): None, ("view", "value"): "trials",
              ("trials-table", "page_current"): page, ("trials-table", "page_size"): page_size,
              ("trials-table", "sort_by"): [], ("trials-table", "filter_query"): ""}  # fmt: skip
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": i, "property": p, "value": v} for (i, p), v in inputs.items()],
        "changedPropIds": ["trials-table.page_size"],
        "state": [],
    }
    status, raw = _request(port, "POST", "/_dash-update-component", f"127.0.0.1:{port}", body)
    assert status == 200, raw[:500]
    response = json.loads(raw)["response"]
    return len(response["trials-table"]["data"]), response["trials-table"]["page_count"], response["trials-message"]


def test_dashboard_clamps_the_page_size(demo_url: str) -> None:
    from nasplat_dashboards.app import PAGE_SIZE_RANGE, _page_size

    assert PAGE_SIZE_RANGE == (1, 500)
    assert [_page_size(v) for v in (0, -7, 1, 37, 500, 501, 10**12, "12", "abc", None, 2.5, [3])] == [
        1, 1, 1, 37, 500, 500, 500, 12, 20, 20, 2, 20,
    ]  # fmt: skip
    with _dashboard(demo_url) as port:
        assert _trials_page(port, 5) == (5, 5, {"children": None})  # 24 trials
        assert _trials_page(port, 0) == (1, 24, {"children": None})  # not a division by zero
        assert _trials_page(port, -3) == (1, 24, {"children": None})
        assert _trials_page(port, "abc") == (20, 2, {"children": None})
        assert _trials_page(port, 10**12) == (24, 1, {"children": None})  # at most 500 rows a page
        assert _trials_page(port, 5, page=-4) == (5, 5, {"children": None})


def test_cli_dashboard_refuses_a_foreign_host(demo_url: str) -> None:
    """Through `nasplat dashboard` itself: the server it starts checks the Host header too."""
    port = _unused_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nasplat.cli", "dashboard", "--storage", demo_url, "--port", str(port), "--no-preload"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or []], daemon=True).start()
    try:
        while True:  # serving once it says where (it listens before it says so)
            line = lines.get(timeout=WAIT_S)
            if f"on http://127.0.0.1:{port}/" in line:
                break
        assert _request(port, "GET", "/", f"127.0.0.1:{port}")[0] == 200
        assert _request(port, "GET", "/", f"evil.example:{port}")[0] == 400
    finally:
        proc.terminate()
        proc.wait(WAIT_S)


# --------------------------------------------------------------------------------------------------------------
# a predictor's manifest names only files inside its own folder


@pytest.fixture
def saved_gbdt(tmp_path: Path) -> Path:
    """A real fitted GBDT predictor saved in ``tmp_path/pred`` (tiny: 12 cells of the test space)."""
    import numpy as np

    from nasplat import registry
    from nasplat.space import load_space

    space = load_space(Path(__file__).parent / "spaces" / "cell-digits.yaml")
    archs = list(dict.fromkeys(space.sample(np.random.default_rng(i)) for i in range(30)))[:12]
    model = registry.build("predictor", "gbdt", options={"n_estimators": 5, "min_child_samples": 1})
    model.fit(space, archs, np.linspace(50.0, 90.0, len(archs)), seed=0)
    model.save(tmp_path / "pred")
    return tmp_path / "pred"


def _edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "predictor.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_saved_predictor_loads_when_its_files_are_inside(saved_gbdt: Path) -> None:
    from nasplat.measure import load_predictor, read_manifest

    assert read_manifest(saved_gbdt)["model_state"]["file"] == "gbdt.txt"
    load_predictor(saved_gbdt)
    (saved_gbdt / "sub").mkdir()
    (saved_gbdt / "gbdt.txt").rename(saved_gbdt / "sub" / "gbdt.txt")
    _edit_manifest(saved_gbdt, lambda m: m["model_state"].update(file="sub/../sub/gbdt.txt"))
    load_predictor(saved_gbdt)  # a relative path that stays inside is fine


@pytest.mark.parametrize("target", ["../outside.txt", "{outside}", "sub/../../outside.txt", "link.txt", ""])
def test_manifest_file_outside_the_folder_is_refused(saved_gbdt: Path, target: str) -> None:
    from nasplat.measure import load_predictor

    outside = saved_gbdt.parent / "outside.txt"
    outside.write_text((saved_gbdt / "gbdt.txt").read_text())  # a valid model file: only its place is wrong
    (saved_gbdt / "link.txt").symlink_to(outside)
    value = target.format(outside=outside)
    _edit_manifest(saved_gbdt, lambda m: m["model_state"].update(file=value))
    with pytest.raises(NasplatError) as info:
        load_predictor(saved_gbdt)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{saved_gbdt / 'predictor.json'}: 'model_state.file' ")
    assert ("points outside the predictor folder" if value else "must name a file inside") in message


def test_manifest_members_and_prior_outside_the_folder_are_refused(saved_gbdt: Path) -> None:
    from nasplat.measure import PriorTable, read_manifest, space_from_manifest

    _edit_manifest(saved_gbdt, lambda m: m.update(members=["member_0", "../../elsewhere"]))
    with pytest.raises(NasplatError, match=r"predictor.json: 'members\[1\]' points outside the predictor folder"):
        read_manifest(saved_gbdt)
    _edit_manifest(saved_gbdt, lambda m: (m.pop("members"), m.update(prior={"file": "/etc/passwd", "columns": []})))
    with pytest.raises(NasplatError, match=r"predictor.json: 'prior.file' points outside the predictor folder"):
        read_manifest(saved_gbdt)
    with pytest.raises(NasplatError, match=r"predictor.json: 'prior.file' points outside the predictor folder"):
        PriorTable.load(space_from_manifest(saved_gbdt), saved_gbdt, {"file": "../x.csv", "arch_column": "arch",
                                                                      "columns": []})  # fmt: skip
