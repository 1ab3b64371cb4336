"""The bad-input corpus, run through the real command line: every bad input is one clear line, before any work.

Each case is a command on a file of ``tests/bad_spaces/`` (space files; the first ten are in test_cli.py) or
``tests/bad_inputs/`` (run files, tables, architecture lists, checkpoint ``state.json``), or a bad argument.
Each must exit with the right code (2: bad input; 1: ``spaces validate`` found an invalid file), print
exactly one line on stderr and nothing on stdout (nothing started), no traceback, and name the file (or the
option) and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli import nasplat, one_line_error

REPO = Path(__file__).resolve().parent.parent
BAD_SPACES = "tests/bad_spaces"
BAD = "tests/bad_inputs"
SPACE = "tests/spaces/cell-digits.yaml"
ARCH = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|none~2|"
NOWHERE = "/proc/nasplat-bad-input"  # no file can be created under /proc, not even by root


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {ckpt}, {tmp}: a trained checkpoint and a scratch folder
    fragments: tuple[str, ...]
    code: int = 2


def space_case(name: str, *fragments: str) -> Case:
    return Case(f"space-{name}", ("spaces", "validate", f"{BAD_SPACES}/{name}.yaml"), (f"{name}.yaml", *fragments), 1)


def run_case(name: str, *fragments: str) -> Case:
    return Case(name, ("search", f"{BAD}/{name}.yaml"), (f"{name}.yaml", *fragments))


def evaluate(archs: str, out: str = "{tmp}/out.csv", checkpoint: str = "{ckpt}") -> tuple[str, ...]:
    return ("evaluate", "--checkpoint", checkpoint, "--archs", archs, "--out", out, "--space", SPACE)


def fit(table: str, out: str = "{tmp}/predictor") -> tuple[str, ...]:
    return ("predictor", "fit", "--space", SPACE, "--table", table, "--target", "val_acc", "--model", "gbdt",
            "--out", out)  # fmt: skip


CASES = [
    # space files: bytes, YAML structure, constraints, sizes
    space_case("binary", "binary data", "NUL byte"),
    space_case("not_utf8", "not UTF-8", "0xe9"),
    space_case("empty", "the file is empty"),
    space_case("deep_nesting", "at 'macro[0][0]", "nested more than 100 levels"),
    space_case("duplicate_key", "at 'dimensions[0].type'", "duplicate key", "line 5", "line 7"),
    space_case("alias_bomb", "aliases expand to more than 2,000,000 values"),
    space_case("recursive_alias", "recursive alias"),
    space_case("constraint_attribute", "at 'constraints[0]'", "attribute access", "().__class__"),
    space_case("constraint_division", "at 'constraints[0]'", "cannot be evaluated", "ZeroDivisionError"),
    space_case("constraint_types", "at 'constraints[0]'", "string ('cell.edge_1_0')", "number ('3')", "'<'"),
    space_case("constraint_typo", "at 'constraints[0]'", "'nor_conv_3x33'", "not one of its choices"),
    space_case("constraint_nested", "at 'constraints[0]'", "nested more than 50 levels"),
    space_case("empty_space", "at 'constraints'", "no architecture satisfies every constraint", "729 combinations"),
    space_case("huge_integer", "at 'dimensions[1]'", "50,000,000 values", "at most 1,000,000"),
    space_case("huge_integer_3e9", "at 'dimensions[1]'", "3,000,000,000 values", "at most 1,000,000"),
    space_case("too_many_values", "at 'dimensions[1]'", "3,000,018 values in all", "at most 2,000,000"),
    Case("space-show-binary", ("spaces", "show", f"{BAD_SPACES}/binary.yaml"), ("binary.yaml", "binary data")),
    Case(
        "space-cost-dup",
        ("cost", ARCH, "--space", f"{BAD_SPACES}/duplicate_key.yaml"),
        ("duplicate_key.yaml", "at 'dimensions[0].type'", "duplicate key"),
    ),
    # run files
    run_case("run_binary", "binary data"),
    run_case("run_not_utf8", "not UTF-8"),
    run_case("run_duplicate_key", "at 'trials'", "duplicate key"),
    run_case("run_deep_nesting", "at 'sampler.options.x", "nested more than 100 levels"),
    run_case("run_long_study", "at 'study'", "at most 512 characters", "10,000 characters"),
    run_case("run_dir_under_a_file", "at 'run_dir'", "run_binary.yaml' is not a folder"),
    run_case("run_storage_under_a_file", "at 'storage'", "run_binary.yaml' is not a folder"),
    # command-line arguments: options, output locations (checked before any work)
    Case(
        "cost-device-free-model",
        ("cost", ARCH, "--space", SPACE, "--model", "analytical", "--device", "nonsense"),
        ("--device nonsense", "cost model 'analytical' has no devices"),
    ),
    Case(
        "pareto-csv-unwritable",
        ("pareto", "--storage", "sqlite:///{tmp}/study.db", "--csv", f"{NOWHERE}/f.csv"),
        ("--csv", NOWHERE, "no file can be created in '/proc'"),
    ),
    Case(
        "pareto-csv-folder",
        ("pareto", "--storage", "sqlite:///{tmp}/study.db", "--csv", "{tmp}"),
        ("--csv", "is a folder"),
    ),
    Case(
        "pareto-csv-under-a-file",
        ("pareto", "--storage", "sqlite:///{tmp}/study.db", "--csv", f"{BAD}/run_binary.yaml/f.csv"),
        ("--csv", "run_binary.yaml' is not a folder"),
    ),
    Case(
        "export-out-unwritable",
        ("export", "--storage", "sqlite:///{tmp}/study.db", "--out", f"{NOWHERE}/bundle"),
        ("--out", NOWHERE, "no file can be created in '/proc'"),
    ),
    Case(
        "export-out-is-a-file",
        ("export", "--storage", "sqlite:///{tmp}/study.db", "--out", f"{BAD}/run_binary.yaml"),
        ("--out", "run_binary.yaml", "not a folder"),
    ),
    Case(
        "evaluate-out-unwritable",
        evaluate(f"{BAD}/table_bad_arch.csv", out=f"{NOWHERE}/out.csv"),
        ("--out", NOWHERE, "no file can be created in '/proc'"),
    ),
    Case("evaluate-out-folder", evaluate(f"{BAD}/table_bad_arch.csv", out="{tmp}"), ("--out", "is a folder")),
    Case(
        "fit-out-unwritable",
        fit(f"{BAD}/table_constant_target.csv", out=f"{NOWHERE}/predictor"),
        ("--out", NOWHERE, "no file can be created in '/proc'"),
    ),
    Case(
        "profile-out-unwritable",
        ("profile", "--space", SPACE, "--out", f"{NOWHERE}/lut.csv"),
        ("--out", NOWHERE, "no file can be created in '/proc'"),
    ),
    # tables (CSV) and architecture lists (YAML)
    Case("evaluate-header-only", evaluate(f"{BAD}/table_header_only.csv"), ("table_header_only.csv", "no rows")),
    Case("evaluate-empty-file", evaluate(f"{BAD}/table_empty.csv"), ("table_empty.csv", "the file is empty")),
    Case("evaluate-binary", evaluate(f"{BAD}/table_binary.csv"), ("table_binary.csv", "binary data")),
    Case("evaluate-not-utf8", evaluate(f"{BAD}/table_not_utf8.csv"), ("table_not_utf8.csv", "not UTF-8")),
    Case(
        "evaluate-duplicate-column",
        evaluate(f"{BAD}/table_duplicate_column.csv"),
        ("table_duplicate_column.csv", "column 'val_acc' appears more than once"),
    ),
    Case(
        "evaluate-no-arch-column",
        evaluate(f"{BAD}/table_no_arch_column.csv"),
        ("table_no_arch_column.csv", "no column 'arch'", "columns: cell, val_acc"),
    ),
    Case("evaluate-ragged", evaluate(f"{BAD}/table_ragged.csv"), ("table_ragged.csv", "line 3")),
    Case("evaluate-bad-arch", evaluate(f"{BAD}/table_bad_arch.csv"), ("table_bad_arch.csv", "row 3", "bogus")),
    Case("evaluate-empty-list", evaluate(f"{BAD}/archs_empty_list.yaml"), ("archs_empty_list.yaml", "empty")),
    Case(
        "evaluate-list-duplicate-key",
        evaluate(f"{BAD}/archs_duplicate_key.yaml"),
        ("archs_duplicate_key.yaml", "at '[0].cell.edge_1_0'", "duplicate key"),
    ),
    Case(
        "fit-constant-target",
        fit(f"{BAD}/table_constant_target.csv"),
        ("table_constant_target.csv", "column 'val_acc'", "same value"),
    ),
    Case("fit-header-only", fit(f"{BAD}/table_header_only.csv"), ("table_header_only.csv", "no rows")),
    Case("fit-binary", fit(f"{BAD}/table_binary.csv"), ("table_binary.csv", "binary data")),
    # checkpoint state.json
    Case(
        "state-truncated",
        evaluate(f"{BAD}/table_bad_arch.csv", checkpoint=f"{BAD}/state_truncated"),
        ("state_truncated/state.json", "not valid JSON"),
    ),
    Case(
        "state-binary",
        evaluate(f"{BAD}/table_bad_arch.csv", checkpoint=f"{BAD}/state_binary"),
        ("state_binary/state.json", "not valid JSON"),
    ),
    Case(
        "state-not-a-checkpoint",
        evaluate(f"{BAD}/table_bad_arch.csv", checkpoint=f"{BAD}/state_not_a_checkpoint"),
        ("state_not_a_checkpoint/state.json", "not a nasplat checkpoint"),
    ),
    Case(
        "state-a-list",
        evaluate(f"{BAD}/table_bad_arch.csv", checkpoint=f"{BAD}/state_list"),
        ("state_list/state.json", "not a nasplat checkpoint"),
    ),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (one-step) checkpoint of the tiny cell space, so that only the table is wrong."""
    from nasplat.datasets import DataSpec, load_splits
    from nasplat.space import load_space
    from nasplat.train import TrainSettings, train_supernet

    space = load_space(REPO / SPACE)
    train, _ = load_splits(DataSpec(name="digits", n_val=100))
    settings = TrainSettings(epochs=1, batch_size=32, max_steps_per_epoch=1)
    run = tmp_path_factory.mktemp("bad-input-checkpoint") / "run"
    net = space.family.build_supernet(space, seed=0)
    return train_supernet(net, space.family.task(space), train, settings, run, progress=False).checkpoint


def _run(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    needs_ckpt = any("{ckpt}" in a for a in case.args)
    ckpt = str(request.getfixturevalue("checkpoint")) if needs_ckpt else ""
    args = [a.replace("{ckpt}", ckpt).replace("{tmp}", str(tmp_path)) for a in case.args]
    proc = nasplat(*args, cwd=REPO)
    assert proc.returncode == case.code, (proc.returncode, proc.stderr)
    line = one_line_error(proc)
    assert proc.stdout.strip() == "", f"work started before the error: {proc.stdout}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    line = _run(case, request, tmp_path)
    for fragment in case.fragments:
        assert fragment in line, line


def test_unwritable_run_dir_is_named_before_work(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    line = _run(run_case("run_dir_unwritable"), request, tmp_path)
    assert "run_dir_unwritable.yaml" in line and "at 'run_dir'" in line, line


def test_device_on_a_device_free_cost_model_in_a_run_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = tmp_path / "run.yaml"
    run.write_text(
        f"space: {REPO / 'tests' / 'spaces' / 'cell-digits.yaml'}\ndataset: {{name: digits}}\n"
        "supernet: {train: {epochs: 1}}\n"
        "objectives: [{metric: accuracy, direction: maximize},"
        " {metric: macs, direction: minimize, cost_model: analytical, device: pixel3}]\n"
        f"trials: 2\nrun_dir: {tmp_path / 'out'}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "nasplat.cli", "check", str(run)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "run.yaml" in line]
    assert any("objectives[1]" in line and "has no devices" in line for line in lines), lines


def test_every_corpus_file_is_used() -> None:
    """Each file of the corpus belongs to a case (a file nobody runs is a case nobody checks)."""
    used = " ".join(" ".join(c.args) for c in CASES) + " run_dir_unwritable"
    for folder in (REPO / BAD, REPO / BAD_SPACES):
        for path in folder.iterdir():
            if folder.name == "bad_spaces" and path.name in _TEST_CLI_SPACES:
                continue
            assert path.stem in used, f"{path} is in the corpus but no case runs it"


_TEST_CLI_SPACES = {
    "malformed.yaml", "unknown_op.yaml", "wrong_type.yaml", "out_of_range.yaml", "unknown_key.yaml",
    "unknown_family.yaml", "bad_macro.yaml", "bad_constraint.yaml", "not_a_mapping.yaml", "missing_labels.yaml",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- the readers
def test_json_reader_names_truncation_duplicates_and_nesting(tmp_path: Path) -> None:
    from nasplat.errors import NasplatError, SpecError
    from nasplat.files import read_json, read_json_mapping

    cases = {
        "truncated.json": ('{"a": [1, 2', "truncated JSON"),
        "dup.json": ('{"a": 1, "a": 2}', "at 'a': duplicate key"),
        "deep.json": ("[" * 100_000 + "]" * 100_000, "too deeply nested"),
        "binary.json": ("\x00{}", "binary data"),
    }
    for name, (text, fragment) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(NasplatError) as info:
            read_json(tmp_path / name)
        assert name in str(info.value) and fragment in str(info.value), str(info.value)
        assert "\n" not in str(info.value)
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(NasplatError, match="expected a JSON object"):
        read_json_mapping(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text('{"a": {"b": [1, 2]}}')
    assert read_json(tmp_path / "ok.json") == {"a": {"b": [1, 2]}}
    with pytest.raises(SpecError, match="at most"):
        read_json(tmp_path / "ok.json", max_bytes=4)


def test_yaml_reader_keeps_valid_yaml_working(tmp_path: Path) -> None:
    from nasplat.files import read_yaml

    f = tmp_path / "ok.yaml"
    f.write_bytes("\ufeffa: &x [1, 2]\nb: *x\nbase: &b {k: 1}\nmerged: {<<: *b, j: 2}\n'1': one\n1: int\n".encode())
    data = read_yaml(f)
    assert data == {"a": [1, 2], "b": [1, 2], "base": {"k": 1}, "merged": {"k": 1, "j": 2}, "1": "one", 1: "int"}


def test_constraint_errors_at_run_time_are_spec_errors() -> None:
    """An error only some assignments reach (past the checks at declaration) still names the constraint."""
    from nasplat.errors import SpecError
    from nasplat.space import Constraint

    c = Constraint("x == 1 or 10 / x > 1", {"x": [0, 1, 2]}, "s.yaml", "constraints[3]")
    assert c.holds({"x": 1}) and c.holds({"x": 2})
    with pytest.raises(SpecError, match=r"s\.yaml: at 'constraints\[3\]': constraint cannot be evaluated .* x=0"):
        c.holds({"x": 0})
    for text, fragment in [
        ("x.real == 1", "unknown label 'x.real'"),
        ("(1).real == 1", "attribute access"),
        ("x == None", "the constant None"),
        ("x in 3", "right side of 'in'"),
        ("x * 'a' == 'aa'", "needs two numbers"),
    ]:
        with pytest.raises(SpecError, match=fragment):
            Constraint(text, {"x": [0, 1, 2]}, "s.yaml", "constraints[0]")


def test_output_checks_leave_nothing_behind(tmp_path: Path) -> None:
    from nasplat.errors import NasplatError
    from nasplat.files import check_output_dir, check_output_file, folder_problem

    check_output_file(tmp_path / "new" / "deeper" / "out.csv", "--out")
    check_output_dir(tmp_path / "bundle", "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert folder_problem(tmp_path / "file" / "sub") == f"'{tmp_path / 'file'}' is not a folder"
    with pytest.raises(NasplatError, match=r"--csv .*is a folder"):
        check_output_file(tmp_path, "--csv")
    with pytest.raises(NasplatError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", "--out")
