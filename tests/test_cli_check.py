"""A first real run without trial and error, through the real command line: `nasplat check` lists every
problem of a run file at once (and `search` / `train-supernet` check first, leaving no study behind), `init`
writes a starter that passes the check, `samplers`, `--version`, `studies delete`, `--json` output, read-only
commands that refuse a missing SQLite file, and the objectives as Optuna metric names."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import nasplat, one_line_error

#: a tiny cell space (3 ops per edge: 729 cells) for a search that needs no training
TINY_SPACE = """\
name: check-cell
version: 1
family: cell
dimensions:
  - type: categorical
    labels: [cell.edge_1_0, cell.edge_2_0, cell.edge_2_1, cell.edge_3_0, cell.edge_3_1, cell.edge_3_2]
    choices: [skip_connect, nor_conv_1x1, avg_pool_3x3]
macro: {input_shape: [1, 8, 8], num_classes: 10, stem_channels: 4, cells_per_stage: 1, num_stages: 2}
"""
OPS = ("skip_connect", "nor_conv_1x1", "avg_pool_3x3")


def write_table(path: Path) -> Path:
    """One row per cell of TINY_SPACE in NAS-Bench-201's string form, with a made-up accuracy."""
    lines = ["arch,val_acc"]
    for i, ops in enumerate(itertools.product(OPS, repeat=6)):
        a, b, c, d, e, f = ops
        lines.append(f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|,{50 + (i * 37) % 45}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tabular_run(folder: Path, *, study: str = "tiny", storage: str | None = None, **extra: str) -> Path:
    """A valid run file: the tabular estimator over TINY_SPACE and analytical MACs (seconds, no training)."""
    space = folder / "space.yaml"
    space.write_text(TINY_SPACE)
    table = write_table(folder / "table.csv")
    url = storage or f"sqlite:///{folder / 'study.db'}"
    text = (
        f"space: {space}\n"
        "dataset: {name: digits}\n"
        f"estimator: {{name: tabular, options: {{table: {table}, columns: {{val_acc: maximize}}}}}}\n"
        "objectives:\n"
        "  - {metric: val_acc, direction: maximize}\n"
        "  - {metric: macs, direction: minimize, cost_model: analytical}\n"
        "sampler: {name: random}\n"
        "trials: 6\n"
        f"run_dir: {folder / 'run'}\n"
        f"storage: {url}\n"
        f"study: {study}\n"
    )
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    run = folder / "run.yaml"
    run.write_text(text)
    return run


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real (tabular) search through `nasplat search`: its storage URL and run file."""
    folder = tmp_path_factory.mktemp("searched")
    run = tabular_run(folder)
    proc = nasplat("search", str(run))
    assert proc.returncode == 0, proc.stderr
    yield f"sqlite:///{folder / 'study.db'}", run
    shutil.rmtree(folder, ignore_errors=True)


def stderr_lines(proc: object) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------- check
MISTAKES = """\
space: nb201-cpu
dataset: {name: fashion_mnst}
supernet:
  train: {epochs: 1, strategy: sandwhich}
estimator: {name: supernet, options: {calib_batch: 2}}
objectives:
  - {metric: acuracy, direction: maximize}
  - {metric: macs, direction: minimise, cost_model: analytcal}
  - {metric: latency_ms, direction: minimize, cost_model: roofline, device: cortex-a67}
constraints:
  - {metric: param_count, max: 20000, cost_model: analytical}
sampler: {name: nsga2, options: {populaton_size: 4}}
trails: 3
"""


def test_check_lists_every_problem_with_file_and_key(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(MISTAKES + f"storage: sqlite:///{tmp_path / 'a_file' / 'study.db'}\n")
    (tmp_path / "a_file").write_text("not a folder")
    proc = nasplat("check", str(run))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    expected = {
        "trails": ["unknown key", "did you mean 'trials'?"],
        "trials": ["required key is missing"],
        "dataset.name": ["unknown dataset 'fashion_mnst'", "did you mean 'fashion_mnist'?"],
        "supernet.train.strategy": ["unknown strategy 'sandwhich'", "did you mean 'sandwich'?"],
        "estimator.options.calib_batch": ["has no option 'calib_batch'", "did you mean 'calib_batches'?"],
        "objectives[0].metric": ["estimator 'supernet' has no metric 'acuracy'", "did you mean 'accuracy'?"],
        "objectives[1].direction": ["'maximize' or 'minimize'"],
        "objectives[1].cost_model": ["unknown cost model 'analytcal'", "did you mean 'analytical'?"],
        "objectives[2].device": ["does not know device 'cortex-a67'", "did you mean 'cortex-a76'?"],
        "constraints[0].metric": ["no metric 'param_count'", "did you mean 'params_count'?"],
        "sampler.options.populaton_size": ["has no option 'populaton_size'", "did you mean 'population_size'?"],
        "storage": ["a_file' is not a folder"],
    }
    for key, fragments in expected.items():
        matching = [ln for ln in lines if ln.startswith(f"{run}: at '{key}': ")]
        assert len(matching) == 1, (key, lines)
        for f in fragments:
            assert f in matching[0], matching[0]
    assert len(lines) == len(expected), lines
    assert f"{len(expected)} problems in 1 of 1 file(s)" in proc.stdout


def test_near_miss_sampler_name_gets_did_you_mean(tmp_path: Path) -> None:
    run = tabular_run(tmp_path)
    run.write_text(run.read_text().replace("sampler: {name: random}", "sampler: {name: nsga22}"))
    line = one_line_error(nasplat("check", str(run)))
    assert line.startswith(f"{run}: at 'sampler.name': unknown sampler 'nsga22'")
    assert "did you mean 'nsga2'?" in line and "evolution" in line  # nasplat's own samplers are known too


def test_check_space_files_and_unknown_files(tmp_path: Path) -> None:
    good = tmp_path / "space.yaml"
    good.write_text(TINY_SPACE)
    proc = nasplat("check", str(good), str(tabular_run(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 2 and "space 'check-cell'" in out[0] and "729 architectures" in out[0]
    assert "run file" in out[1] and "study 'tiny'" in out[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_SPACE.replace("version: 1", "version: one").replace("choices:", "choises:"))
    other = tmp_path / "other.yaml"
    other.write_text("hello: world\n")
    proc = nasplat("check", str(bad), str(other), str(good))
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert any(ln.startswith(f"{bad}: at 'dimensions[0].choises': unknown key") for ln in lines), lines
    assert any(ln.startswith(f"{bad}: at 'version': ") for ln in lines), lines
    assert any(ln.startswith(f"{other}: expected a run file") for ln in lines), lines


# ---------------------------------------------------------------------------------------------------- search
def test_search_on_a_bad_run_file_fails_before_training_and_leaves_no_study(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "space: nb201-cpu\ndataset: {name: digits, n_val: 100}\nsupernet: {train: {epochs: 1}}\n"
        "objectives:\n  - {metric: acc, direction: maximize}\n  - {metric: macs, direction: minimize, cost_model: analytical}\n"
        "sampler: {name: nsga2, options: {populaton_size: 4}}\n"
        f"trials: 4\nrun_dir: {tmp_path / 'run'}\nstudy: first\n"
    )
    for command in ("search", "train-supernet"):
        proc = nasplat(command, str(run))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = stderr_lines(proc)
        assert len(lines) == 2 and all(ln.startswith(f"{run}: at '") for ln in lines), lines
        assert "objectives[0].metric" in lines[0] and "has no metric 'acc'" in lines[0]
        assert "sampler.options.populaton_size" in lines[1]
        assert "training" not in proc.stdout
        assert not (tmp_path / "run").exists()  # no checkpoint, no study database: nothing was started


def test_a_valid_search_records_metric_names(searched: tuple[str, Path]) -> None:
    import optuna

    url, _run = searched
    study = optuna.load_study(study_name="tiny", storage=url)
    assert study.metric_names == ["val_acc", "macs"]
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 6


# ---------------------------------------------------------------------------------------------------- studies
def test_studies_delete(searched: tuple[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(searched[0].removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    line = one_line_error(nasplat("studies", "delete", "--storage", url, "--study", "tiny"))
    assert "add --yes" in line and "6 trials" in line
    line = one_line_error(nasplat("studies", "delete", "--storage", url, "--study", "tyni", "--yes"))
    assert "no study 'tyni'" in line
    proc = nasplat("studies", "delete", "--storage", url, "--study", "tiny", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "deleted study 'tiny' (6 trials)" in proc.stdout
    assert json.loads(nasplat("studies", "--storage", url, "--json").stdout)["studies"] == []
    # the name is free again: the same run file searches into a fresh study
    run = Path(searched[1]).read_text().replace(searched[0], url)
    (tmp_path / "run.yaml").write_text(run)
    assert nasplat("search", str(tmp_path / "run.yaml")).returncode == 0


def test_json_output(searched: tuple[str, Path]) -> None:
    url, _run = searched
    proc = nasplat("studies", "--storage", url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (study,) = doc["studies"]
    assert study["study"] == "tiny" and study["space"] == "check-cell" and study["trials"] == 6
    assert [o["metric"] for o in study["objectives"]] == ["val_acc", "macs"]
    proc = nasplat("pareto", "--storage", url, "--json", "--reference", "0,1e9")
    assert proc.returncode == 0, proc.stderr
    front = json.loads(proc.stdout)
    assert front["study"] == "tiny" and front["objectives"] == ["val_acc", "macs"]
    assert front["directions"] == ["maximize", "minimize"] and front["hypervolume"] > 0
    assert front["front"] and all({"trial", "val_acc", "macs", "arch"} <= set(row) for row in front["front"])
    proc = nasplat("spaces", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    spaces = {s["name"]: s for s in json.loads(proc.stdout)["spaces"]}
    assert spaces["nb201-cpu"]["size"] == 15625 and spaces["nb201-cpu"]["family"] == "cell"


def test_read_only_commands_refuse_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "study.db"
    url = f"sqlite:///{missing}"
    for args in (
        ("studies", "--storage", url),
        ("pareto", "--storage", url),
        ("export", "--storage", url, "--out", str(tmp_path / "bundle")),
        ("dashboard", "--storage", url),
        ("finetune", "--storage", url),
        ("studies", "delete", "--storage", url, "--study", "x", "--yes"),
    ):
        line = one_line_error(nasplat(*args))
        assert "no such SQLite file" in line and str(missing) in line, (args, line)
    assert not missing.exists() and not missing.parent.exists()


# ---------------------------------------------------------------------------------------------------- first steps
def test_version() -> None:
    import nasplat as package

    proc = nasplat("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"nasplat {package.__version__}"


def test_samplers_lists_each_with_description_and_options() -> None:
    proc = nasplat("samplers")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in ("nsga2", "nsga3", "tpe", "gp", "random", "qmc", "evolution", "guided"):
        assert any(ln.startswith(f"{name} ") for ln in text.splitlines()), name
    assert "NSGA-II" in text and "population_size" in text and "tournament_size" in text
    options = [o.strip() for ln in text.splitlines() if "options:" in ln for o in ln.split("options:")[1].split(",")]
    assert "seed" not in options and "space" not in options  # what nasplat passes itself is no option


def test_init_then_check(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    proc = nasplat("init", str(run))
    assert proc.returncode == 0, proc.stderr
    assert run.read_text().startswith("#") and "nasplat check" in run.read_text()
    proc = nasplat("check", str(run))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1 and proc.stdout.startswith(f"ok {run}: run file")
    run.write_text("edited\n")
    line = one_line_error(nasplat("init", str(run)))
    assert "already exists" in line and "--force" in line
    assert run.read_text() == "edited\n"
    assert nasplat("init", str(run), "--force").returncode == 0
    assert nasplat("check", str(run)).returncode == 0
    (tmp_path / "fresh").mkdir()
    proc = nasplat("init", cwd=tmp_path / "fresh")
    assert proc.returncode == 0 and (tmp_path / "fresh" / "run.yaml").is_file()
