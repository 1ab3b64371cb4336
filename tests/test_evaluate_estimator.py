"""``nasplat evaluate --estimator NAME``: any registered estimator scores a list of architectures outside a search,
through the real command line: a column per metric, resumed after a kill without scoring a row twice, and every
bad input one line (exit 2) before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import nasplat, one_line_error

from nasplat import registry
from nasplat.cli._evaluate import parse_options
from nasplat.space import load_space

HERE = Path(__file__).parent
SPACE = str(HERE / "spaces" / "cell-digits.yaml")
N = 6


@pytest.fixture(scope="module")
def archs() -> list[str]:
    space = load_space(SPACE)
    rng = np.random.default_rng(7)
    seen: dict[str, str] = {}
    while len(seen) < N + 2:
        arch = space.sample(rng)
        seen.setdefault(arch.key, space.to_string(arch))
    return list(seen.values())


@pytest.fixture
def files(tmp_path: Path, archs: list[str]) -> dict[str, Path]:
    """A small real benchmark table of the tiny space (8 architectures) and a list of 6 of them to score."""
    table = tmp_path / "bench.csv"
    pd.DataFrame(
        {
            "arch": archs,
            "val_acc": [0.5 + 0.03125 * i for i in range(len(archs))],
            "latency_ms": [1.0 + 0.25 * i for i in range(len(archs))],
        }
    ).to_csv(table, index=False)
    todo = tmp_path / "archs.csv"
    pd.DataFrame({"arch": archs[:N][::-1]}).to_csv(todo, index=False)
    return {"table": table, "archs": todo, "out": tmp_path / "scores.csv"}


def tabular(files: dict[str, Path], out: Path | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    return nasplat("evaluate", "--space", SPACE, "--estimator", "tabular", "--option", f"table={files['table']}",
                   "--archs", str(files["archs"]), "--out", str(out or files["out"]), *extra)  # fmt: skip


def test_tabular_scores_one_column_per_metric(files: dict[str, Path], archs: list[str]) -> None:
    proc = tabular(files)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(files["out"])
    assert list(frame.columns) == ["arch", "key", "val_acc", "latency_ms", "estimator", "options"]
    assert list(frame["arch"]) == archs[:N][::-1]  # the input's order
    index = {a: i for i, a in enumerate(archs)}
    assert frame["val_acc"].tolist() == [0.5 + 0.03125 * index[a] for a in frame["arch"]]
    assert frame["latency_ms"].tolist() == [1.0 + 0.25 * index[a] for a in frame["arch"]]
    assert set(frame["estimator"]) == {"tabular"}
    assert f"{N}/{N} architectures" in proc.stdout  # the progress line of a run whose output is not a terminal

    # options are YAML values: a mapping picks the metric columns
    out2 = files["out"].with_name("acc_only.csv")
    proc = tabular(files, out2, "--option", "columns={val_acc: maximize}")
    assert proc.returncode == 0, proc.stderr
    assert list(pd.read_csv(out2).columns) == ["arch", "key", "val_acc", "estimator", "options"]


def test_resume_keeps_finished_rows_and_ends_as_a_clean_run(files: dict[str, Path]) -> None:
    clean = files["out"].with_name("clean.csv")
    assert tabular(files, clean).returncode == 0
    expected = clean.read_bytes()
    lines = expected.decode().splitlines(keepends=True)

    # killed after 2 rows, halfway through writing the third
    files["out"].write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    proc = tabular(files)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: 2 of {N} done" in proc.stdout
    assert files["out"].read_bytes() == expected

    # kept rows are not scored again: a value changed in one stays as it is
    marked = lines[1].replace(lines[1].split(",")[2], "-1.0", 1)
    files["out"].write_text(lines[0] + marked + lines[2])
    proc = tabular(files)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: 2 of {N} done" in proc.stdout
    assert files["out"].read_text() == lines[0] + marked + "".join(lines[2:])

    # all done: nothing to score
    proc = tabular(files)
    assert proc.returncode == 0 and f"resuming: {N} of {N} done" in proc.stdout


COUNTING = textwrap.dedent(
    '''
    """A plugin-like estimator that logs every architecture it scores and kills its process at the Nth."""
    import os
    import signal
    import sys

    from nasplat.measure import Estimator
    from nasplat.registry import register


    @register("estimator", "counting")
    class CountingEstimator(Estimator):
        name = "counting"

        def __init__(self, space, offset: float = 0.0, log: str = "count.log") -> None:
            self.offset = offset
            self.log = log

        def metrics(self):
            return {"score": "maximize", "edges": "minimize"}

        def evaluate(self, archs):
            out = []
            for arch in archs:
                with open(self.log, "a") as f:
                    f.write(arch.key + "\\n")
                with open(self.log) as f:
                    n = len(f.readlines())
                if n == int(os.environ.get("KILL_AT", "0")):
                    os.kill(os.getpid(), signal.SIGKILL)
                values = [str(v) for v in arch.as_dict().values()]
                out.append({"score": self.offset + sum(map(len, values)) / 7, "edges": float(values.count("none"))})
            return out


    from nasplat.cli import main

    sys.argv = ["nasplat", *sys.argv[1:]]
    main()
    '''
)


def test_a_killed_run_loses_only_the_row_in_progress(files: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "counting.py"
    script.write_text(COUNTING)

    def run(out: Path, log: Path, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
        args = ["evaluate", "--space", SPACE, "--estimator", "counting", "--option", "offset=0.5",
                "--option", f"log={log}", "--archs", str(files["archs"]), "--out", str(out)]  # fmt: skip
        env = {**os.environ, "COLUMNS": "200", "KILL_AT": str(kill_at)}
        return subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120
        )

    clean, clean_log = tmp_path / "clean.csv", tmp_path / "clean.log"
    assert run(clean, clean_log).returncode == 0
    keys = clean_log.read_text().splitlines()
    assert len(keys) == N and list(pd.read_csv(clean)["key"]) == keys

    log = tmp_path / "count.log"
    killed = run(files["out"], log, kill_at=4)
    assert killed.returncode == -9
    assert list(pd.read_csv(files["out"])["key"]) == keys[:3]  # the three finished rows are on disk
    proc = run(files["out"], log)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: 3 of {N} done" in proc.stdout
    assert log.read_text().splitlines() == keys[:4] + keys[3:]  # only the row in progress was scored twice
    assert files["out"].read_text() == clean.read_text().replace(str(clean_log), str(log))


def test_help_lists_the_registered_estimators() -> None:
    proc = nasplat("evaluate", "--help")
    assert proc.returncode == 0
    for name in registry.available("estimator"):
        assert name in proc.stdout


def test_option_values_are_yaml_scalars() -> None:
    assert parse_options(["a=3", "b=0.5", "c=true", "d=hello", "e=", "f=a=b"]) == {
        "a": 3, "b": 0.5, "c": True, "d": "hello", "e": "", "f": "a=b"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("unknown-estimator", ["unknown estimator 'nope'", "allowed:", "supernet", "tabular"]),
        ("unknown-option", ["estimator 'tabular' has no option 'colums'", "allowed: table, arch_column, columns"]),
        ("no-checkpoint", ["--checkpoint", "estimator 'supernet' needs a supernet checkpoint"]),
        ("checkpoint-unused", ["--checkpoint", "estimator 'tabular' takes no 'checkpoint' option"]),
        ("dataset-unused", ["--dataset", "estimator 'tabular' takes no data"]),
        ("no-arch-column", ["no_arch.csv", "'arch'"]),
        ("bad-arch", ["archs.csv: row 3", "bogus"]),
        ("malformed-option", ["--option 'table'", "KEY=VALUE"]),
        ("other-options", ["scores.csv", "holds scores of estimator 'tabular' with options", "another --out"]),
        ("not-an-output", ["scores.csv", "is not an output of nasplat evaluate"]),
    ],
)
def test_bad_input_is_one_line_before_any_work(
    case: str, fragments: list[str], files: dict[str, Path], tmp_path: Path, archs: list[str]
) -> None:
    out = files["out"]
    base = ["evaluate", "--space", SPACE, "--archs", str(files["archs"]), "--out", str(out)]
    table = f"table={files['table']}"
    before: bytes | None = None
    if case == "unknown-estimator":
        args = [*base, "--estimator", "nope"]
    elif case == "unknown-option":
        args = [*base, "--estimator", "tabular", "--option", table, "--option", "colums=x"]
    elif case == "no-checkpoint":
        args = base
    elif case == "checkpoint-unused":
        args = [*base, "--estimator", "tabular", "--option", table, "--checkpoint", str(tmp_path)]
    elif case == "dataset-unused":
        args = [*base, "--estimator", "tabular", "--option", table, "--dataset", "cifar10"]
    elif case == "no-arch-column":
        bad = tmp_path / "no_arch.csv"
        bad.write_text("architecture\n" + archs[0] + "\n")
        args = [*base, "--estimator", "tabular", "--option", table]
        args[args.index(str(files["archs"]))] = str(bad)
    elif case == "bad-arch":
        files["archs"].write_text(f"arch\n{archs[0]}\n|bogus~0|\n")
        args = [*base, "--estimator", "tabular", "--option", table]
    elif case == "malformed-option":
        args = [*base, "--estimator", "tabular", "--option", "table"]
    elif case == "other-options":
        assert tabular(files).returncode == 0
        before = out.read_bytes()
        args = [*base, "--estimator", "tabular", "--option", table, "--option", "columns={val_acc: maximize}"]
    else:
        out.write_text("arch,val_acc\nx,1\n")
        before = out.read_bytes()
        args = [*base, "--estimator", "tabular", "--option", table]
    proc = nasplat(*args)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    for fragment in fragments:
        assert fragment in line, line
    assert proc.stdout == ""
    assert (out.read_bytes() if out.exists() else None) == before  # nothing written


@pytest.mark.skipif("zero_cost" not in registry.available("estimator"), reason="no zero_cost estimator registered")
def test_zero_cost_scores_cells_of_a_tiny_space_and_resumes(files: dict[str, Path], archs: list[str]) -> None:
    """The training-free estimator through the same command: a column per proxy plus the combined score."""
    files["archs"].write_text("arch\n" + "\n".join(archs[:3]) + "\n")

    def run(out: Path) -> subprocess.CompletedProcess[str]:
        return nasplat("evaluate", "--space", SPACE, "--estimator", "zero_cost", "--option", "proxies=[params, synflow]",
                       "--option", "reference=4", "--batch-size", "8", "--archs", str(files["archs"]),
                       "--out", str(out))  # fmt: skip

    clean = files["out"].with_name("clean.csv")
    proc = run(clean)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(clean)
    assert list(frame.columns) == ["arch", "key", "zc_params", "zc_synflow", "zero_cost", "estimator", "options"]
    assert list(frame["arch"]) == archs[:3]
    assert np.isfinite(frame[["zc_params", "zc_synflow", "zero_cost"]].to_numpy()).all()

    lines = clean.read_text().splitlines(keepends=True)
    files["out"].write_text("".join(lines[:2]))
    proc = run(files["out"])
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 1 of 3 done" in proc.stdout
    assert files["out"].read_text() == clean.read_text()
