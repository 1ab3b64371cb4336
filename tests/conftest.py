"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where the shared development data lives: ``$NASPLAT_DATA_DIR``, else ``<repo>/../shared/data``."""
    env = os.environ.get("NASPLAT_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; the test is skipped when it is missing."""
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set NASPLAT_DATA_DIR)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny networks run fastest on one thread, and the suite shares two cores with its own subprocesses."""
    import torch

    torch.set_num_threads(1)


def _pg_bin() -> Path | None:
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> object:
    """A throw-away PostgreSQL server on a private loopback port, for the multi-worker storage tests.

    Started with the Debian package's binaries (as the ``postgres`` user when the tests run as root) and
    stopped at the end of the session. Missing binaries fail the test in CI and skip it elsewhere.
    """
    import socket
    import subprocess
    import time

    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (bash .ci/setup.sh --dev installs it)")
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="nasplat-pg-"))  # not under pytest's private tmp: postgres must reach it
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        for _ in range(50):
            ok = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
            if ok.returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nasplat"],
                       check=True, capture_output=True)  # fmt: skip
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nasplat"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
