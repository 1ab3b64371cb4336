"""The command line as a user meets it: real subprocesses, one-line errors, non-zero exits, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BAD = HERE / "bad_spaces"


def nasplat(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nasplat.cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("malformed.yaml", ["malformed.yaml", "malformed YAML (line"]),
        ("unknown_op.yaml", ["unknown_op.yaml", "nor_conv_5x5"]),
        ("wrong_type.yaml", ["wrong_type.yaml", "at 'version'", "integer"]),
        ("out_of_range.yaml", ["out_of_range.yaml", "at 'dimensions[1]'", "must be >= 'low'"]),
        ("unknown_key.yaml", ["unknown_key.yaml", "at 'dimensions[0].choises'", "unknown key", "choices"]),
        ("unknown_family.yaml", ["unknown_family.yaml", "at 'family'", "unknown family 'celll'", "cell"]),
        ("bad_macro.yaml", ["bad_macro.yaml", "at 'macro.stem_channels'", "integer"]),
        ("bad_constraint.yaml", ["bad_constraint.yaml", "at 'constraints[0]'", "cell.edge_9_9"]),
        ("not_a_mapping.yaml", ["not_a_mapping.yaml", "expected a mapping"]),
        ("missing_labels.yaml", ["missing_labels.yaml", "cell.edge_3_2"]),
    ],
)
def test_bad_space_files_give_one_clear_line(name: str, fragments: list[str]) -> None:
    proc = nasplat("spaces", "validate", str(BAD / name))
    assert proc.returncode == 1
    line = one_line_error(proc)
    for f in fragments:
        assert f in line, line


def test_validate_reports_good_files_and_fails_on_any_bad_one() -> None:
    good = HERE / "spaces" / "cell-digits.yaml"
    proc = nasplat("spaces", "validate", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "cell-digits" in proc.stdout
    proc = nasplat("spaces", "validate", str(good), str(BAD / "unknown_op.yaml"))
    assert proc.returncode == 1


def test_list_show_and_sample() -> None:
    proc = nasplat("spaces", "list")
    assert proc.returncode == 0, proc.stderr
    assert "nb201" in proc.stdout and "nb201-cpu" in proc.stdout and "15,625" in proc.stdout
    proc = nasplat("spaces", "show", "nb201")
    assert proc.returncode == 0 and "cell.edge_3_2" in proc.stdout
    a = nasplat("spaces", "sample", "nb201", "--n", "4", "--seed", "3").stdout.split()
    b = nasplat("spaces", "sample", "nb201", "--n", "4", "--seed", "3").stdout.split()
    assert a == b and len(a) == 4
    assert all(s.startswith("|") and s.count("+") == 2 for s in a)
    assert nasplat("spaces", "sample", "nb201", "--n", "4", "--seed", "4").stdout.split() != a


def test_unknown_space_name_lists_known(tmp_path: Path) -> None:
    line = one_line_error(nasplat("spaces", "show", "no-such-space"))
    assert "unknown space 'no-such-space'" in line and "nb201" in line


def test_bad_run_file_names_key(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "space: nb201-cpu\ndataset: {name: digits}\nsupernet: {train: {epochs: 1}}\n"
        "objectives: [{metric: accuracy, direction: upward}]\ntrials: 2\n"
    )
    line = one_line_error(nasplat("search", str(run)))
    assert "run.yaml" in line and "objectives[0].direction" in line and "'maximize' or 'minimize'" in line


def test_missing_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        f"space: nb201-cpu\ndataset: {{name: fashion_mnist, root: {tmp_path / 'nowhere'}}}\nsupernet: {{train: {{epochs: 1}}}}\n"
        f"objectives: [{{metric: accuracy, direction: maximize}}]\ntrials: 2\nrun_dir: {tmp_path / 'run'}\n"
    )
    line = one_line_error(nasplat("search", str(run)))
    assert "dataset-fashion-mnist" in line or "apt-get" in line, line


def test_dataset_that_does_not_fit_the_space(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "space: nb201-cpu\ndataset: {name: digits, n_val: 100}\nsupernet: {train: {epochs: 1}}\n"
        f"objectives: [{{metric: accuracy, direction: maximize}}]\ntrials: 2\nrun_dir: {tmp_path / 'run'}\n"
    )
    line = one_line_error(nasplat("search", str(run)))
    assert "input_shape [1, 28, 28]" in line and "[1, 8, 8]" in line


def test_unknown_storage_study(tmp_path: Path) -> None:
    line = one_line_error(nasplat("pareto", "--storage", f"sqlite:///{tmp_path / 'empty.db'}"))
    assert "no study" in line
    line = one_line_error(nasplat("pareto", "--storage", "not-a-url"))
    assert "not a URL" in line
