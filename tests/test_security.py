"""Reliability and security at the edges: storage passwords never show in messages, the dashboard answers only
requests addressed to it (DNS rebinding) and clamps what clients ask for, and a predictor's manifest cannot
point outside its folder. (The Ray cluster's side is in test_distributed.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys

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
    from nasplat.study import _redact_in

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
