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
