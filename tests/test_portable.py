"""A run folder moved or copied whole keeps working and writes only inside itself (issue 19: paths)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SPACES = Path(__file__).parent / "spaces"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasplat.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "COLUMNS": "200"})  # fmt: skip


def test_copied_run_folder_exports_and_continues_inside_itself(tmp_path: Path) -> None:
    original = tmp_path / "original"
    (original / "spaces").mkdir(parents=True)
    shutil.copy(SPACES / "cell-digits.yaml", original / "spaces" / "cell.yaml")
    run = {
        "space": "spaces/cell.yaml",  # relative to the run file, not to where the command runs
        "dataset": {"name": "digits", "n_train": 300, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 1, "max_steps_per_epoch": 3}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": 4,
        "batch_size": 4,
        "run_dir": ".",
        "storage": "sqlite:///study.db",
        "study": "portable",
    }
    (original / "run.yaml").write_text(yaml.safe_dump(run))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = _cli("search", str(original / "run.yaml"), cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    assert (original / "study.db").is_file() and (original / "supernet").is_dir()
    assert not any(elsewhere.iterdir())  # nothing was written where the command ran

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # handed to a colleague: the original folder is gone
    url = f"sqlite:///{copy / 'study.db'}"
    exported = _cli("export", "--storage", url, "--trial", "knee", "--out", str(copy / "bundle"), cwd=elsewhere)
    assert exported.returncode == 0, exported.stderr
    assert (copy / "bundle" / "load.py").is_file()
    checkpoints = copy / "supernet" / "checkpoints"
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()}
    more = _cli("search", str(copy / "run.yaml"), "--n-trials", "8", cwd=elsewhere)
    assert more.returncode == 0, more.stderr
    assert "8/8 trials" in more.stdout
    after = {p.name: p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()}
    assert after == before  # the copied checkpoints were found and used, not retrained
    assert not original.exists()  # nothing went back to the old folder
    assert not any(elsewhere.iterdir())
