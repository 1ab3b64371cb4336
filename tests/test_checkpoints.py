"""Supernet checkpoints that are checked: a missing ``latest`` recovers instead of retraining, damaged files are
refused with one line naming them (a resume falls back to the checkpoint before), checkpoints written before
digests existed still load, and a checkpoint is refused for data of another shape or class count.

Real checkpoints of the tiny ``tests/spaces/cell-digits.yaml`` supernet, damaged on disk, met through the
command line where a user would meet them (``nasplat evaluate``, ``nasplat train-supernet``, ``nasplat search``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nasplat.errors import NasplatError
from nasplat.space import load_space

HERE = Path(__file__).parent
SPACE = str(HERE / "spaces" / "cell-digits.yaml")
ARCHS = ["|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
         "|nor_conv_1x1~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|"]  # fmt: skip
DIGEST_KEYS = ("files", "weights_digest", "state_sha256")


class Stop(Exception):
    pass


def run_spec(run_dir: Path, **over: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_train": 600, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 3, "max_steps_per_epoch": 4}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        "sampler": {"name": "random"},
        "trials": 2,
        "batch_size": 2,
        "run_dir": str(run_dir),
        "study": "ckpt",
    }
    run.update(over)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A supernet run folder as the run file below leaves it when stopped after epoch 2 of 3 (epoch-0001,
    epoch-0002, latest): trained through the same code path as ``nasplat train-supernet --in-process``."""
    from nasplat.search import parse_run, prepare_supernet

    root = tmp_path_factory.mktemp("ckpt")

    def stop_after_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise Stop

    run = parse_run(run_spec(root / "run"))
    with pytest.raises(Stop):
        prepare_supernet(run, load_space(SPACE), stop_after_epoch_2, progress=False)
    ckpts = root / "run" / "supernet" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-0001", "epoch-0002", "latest"]
    return root / "run" / "supernet"


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained run (the search's run_dir; the supernet lives in its ``supernet`` folder)."""
    shutil.copytree(trained, tmp_path / "run" / "supernet")
    return tmp_path / "run"


def ckpts(run_dir: Path) -> Path:
    return run_dir / "supernet" / "checkpoints"


def write_run_file(run_dir: Path, **over: Any) -> Path:
    path = run_dir.parent / "run.yaml"
    path.write_text(yaml.safe_dump(run_spec(run_dir, **over)))
    return path


def write_archs(tmp_path: Path) -> Path:
    path = tmp_path / "archs.csv"
    path.write_text("arch\n" + "\n".join(ARCHS) + "\n")
    return path


def nasplat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "nasplat.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def evaluate(ckpt: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return nasplat("evaluate", "--checkpoint", str(ckpt), "--space", SPACE, "--archs", str(write_archs(tmp_path)),
                   "--out", str(tmp_path / "out.csv"), "--n-val", "200", "--calib-batches", "2", *extra)  # fmt: skip


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def data_region(weights: Path) -> tuple[int, int]:
    """(start, length) of the tensor bytes of a safetensors file (after its 8-byte size and JSON header)."""
    with weights.open("rb") as f:
        (header,) = struct.unpack("<Q", f.read(8))
    start = 8 + header
    return start, weights.stat().st_size - start


def nan_block(weights: Path) -> None:
    """4 KB of float32 NaN over the tensor bytes (as much of them as there are), the file size unchanged."""
    start, length = data_region(weights)
    n = min(4096, length) // 4 * 4
    with weights.open("r+b") as f:
        f.seek(start)
        f.write(struct.pack("<I", 0x7FC00000) * (n // 4))


def flip_two_bytes(path: Path) -> None:
    """Two bytes changed in the middle of the tensor bytes (of the whole file when it is not safetensors)."""
    start, length = data_region(path) if path.suffix == ".safetensors" else (0, path.stat().st_size)
    with path.open("r+b") as f:
        f.seek(start + length // 2)
        pair = f.read(2)
        f.seek(start + length // 2)
        f.write(bytes(b ^ 0x10 for b in pair))


def make_legacy(ckpt: Path) -> None:
    """Make ``ckpt`` look written before checkpoints recorded digests and their data's shape."""
    state = json.loads((ckpt / "state.json").read_text())
    for key in DIGEST_KEYS:
        state.pop(key)
    state["data"] = {k: state["data"][k] for k in ("name", "n_images")}
    (ckpt / "state.json").write_text(json.dumps(state, indent=1))


# --------------------------------------------------------------------------------------------------------------
# what a checkpoint records


def test_checkpoint_records_digests_and_the_data_it_was_trained_on(trained: Path) -> None:
    from nasplat.model import file_sha256

    for ckpt in (trained / "checkpoints" / "epoch-0001", trained / "checkpoints" / "epoch-0002"):
        state = json.loads((ckpt / "state.json").read_text())
        assert state["files"] == {n: file_sha256(ckpt / n) for n in ("model.safetensors", "optimizer.pt")}
        assert len(state["weights_digest"]) == 16 and len(state["state_sha256"]) == 64
        assert state["data"] == {"name": "digits", "n_images": 600, "input_shape": [1, 8, 8], "num_classes": 10}


# --------------------------------------------------------------------------------------------------------------
# 1. a missing `latest`


def test_missing_latest_resumes_from_the_newest_checkpoint_and_deletes_nothing(run_dir: Path) -> None:
    """Before: training started again from scratch and overwrote epoch-0001 and epoch-0002."""
    root = ckpts(run_dir)
    (root / "latest").unlink()
    before = {name: files_of(root / name) for name in ("epoch-0001", "epoch-0002")}
    proc = nasplat("train-supernet", str(write_run_file(run_dir)), "--in-process")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{root / 'latest'} is missing; resuming from epoch-0002, the newest complete checkpoint" in out
    assert "epoch 1/3" not in out and "epoch 2/3" not in out and "epoch 3/3" in out  # only the epoch left
    for name, files in before.items():
        assert files_of(root / name) == files, f"{name} was rewritten"
    assert (root / "latest").read_text().strip() == "epoch-0003"
    state = json.loads((root / "epoch-0003" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]


def test_latest_naming_nothing_evaluate_uses_the_newest_and_says_so(run_dir: Path, tmp_path: Path) -> None:
    root = ckpts(run_dir)
    (root / "latest").write_text("epoch-0009\n")
    proc = evaluate(run_dir / "supernet", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"{root / 'latest'} names epoch-0009, which is not a complete checkpoint; using epoch-0002, the newest "
        f"complete checkpoint in {root}"
    ]
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 1 + len(ARCHS) and "accuracy" in rows[0]


def test_dangling_latest_link_is_recovered(run_dir: Path) -> None:
    from nasplat.model import resolve_checkpoint

    root = ckpts(run_dir)
    (root / "latest").unlink()
    (root / "latest").symlink_to(root / "epoch-0007")
    notes: list[str] = []
    assert resolve_checkpoint(run_dir / "supernet", log=notes.append) == root / "epoch-0002"
    assert notes == [f"{root / 'latest'} points nowhere; using epoch-0002, the newest complete checkpoint in {root}"]


# --------------------------------------------------------------------------------------------------------------
# 2. damaged checkpoints


@pytest.mark.parametrize("damage", [nan_block, flip_two_bytes], ids=["4KB-of-NaN", "2-byte-flip"])
def test_damaged_weights_are_refused_by_evaluate_with_one_line(run_dir: Path, tmp_path: Path, damage: Any) -> None:
    """Before: accepted, wrong accuracies, exit 0."""
    weights = ckpts(run_dir) / "epoch-0002" / "model.safetensors"
    damage(weights)
    line = one_line_error(evaluate(run_dir / "supernet", tmp_path))
    assert f"{weights}: content does not match the digest recorded when it was written" in line, line
    assert "expected" in line and "the file is damaged" in line
    assert not (tmp_path / "out.csv").exists()


def test_damaged_checkpoint_resume_falls_back_to_the_one_before(run_dir: Path) -> None:
    root = ckpts(run_dir)
    weights = root / "epoch-0002" / "model.safetensors"
    flip_two_bytes(weights)
    damaged = files_of(root / "epoch-0002")
    proc = nasplat("train-supernet", str(write_run_file(run_dir)), "--in-process")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{weights}: content does not match" in out
    assert "resuming from epoch-0001, the checkpoint before it" in out
    assert "epoch 2/3" in out and "epoch 3/3" in out and "epoch 1/3" not in out
    # the damaged folder is kept, not deleted; epoch 2 was trained again
    assert files_of(root / "epoch-0002.damaged") == damaged
    assert sorted(p.name for p in root.iterdir()) == [
        "epoch-0001", "epoch-0002", "epoch-0002.damaged", "epoch-0003", "latest",
    ]  # fmt: skip
    from nasplat.model import load_checkpoint

    space = load_space(SPACE)
    assert load_checkpoint(space.family.build_supernet(space), run_dir / "supernet")["epochs_done"] == 3
    assert load_checkpoint(space.family.build_supernet(space), root / "epoch-0002")["epochs_done"] == 2


def test_every_checkpoint_damaged_refuses_to_resume_and_keeps_them(run_dir: Path) -> None:
    from nasplat.search import parse_run, prepare_supernet

    root = ckpts(run_dir)
    for name in ("epoch-0001", "epoch-0002"):
        nan_block(root / name / "model.safetensors")
    before = {name: files_of(root / name) for name in ("epoch-0001", "epoch-0002")}
    with pytest.raises(NasplatError, match="no older intact checkpoint") as info:
        prepare_supernet(parse_run(run_spec(run_dir)), load_space(SPACE), lambda _: None, progress=False)
    assert str(info.value).startswith(f"{root / 'epoch-0001' / 'model.safetensors'}: content does not match")
    assert {name: files_of(root / name) for name in before} == before
    assert sorted(p.name for p in root.iterdir()) == ["epoch-0001", "epoch-0002", "latest"]


def test_damaged_state_or_optimizer(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nasplat.model import load_checkpoint
    from nasplat.search import parse_run, prepare_supernet

    space = load_space(SPACE)
    root = ckpts(run_dir)
    # an edited state.json: the value still parses, the digest says it is not what was written
    state_file = root / "epoch-0001" / "state.json"
    text = state_file.read_text()
    state_file.write_text(text.replace('"epochs_done": 1', '"epochs_done": 2', 1))
    with pytest.raises(NasplatError, match=f"^{state_file}: content does not match the digest"):
        load_checkpoint(space.family.build_supernet(space), root / "epoch-0001")
    state_file.write_text(text)
    # a damaged optimizer state: evaluation does not read it, a resume does and goes back one checkpoint
    optimizer = root / "epoch-0002" / "optimizer.pt"
    flip_two_bytes(optimizer)
    assert load_checkpoint(space.family.build_supernet(space), run_dir / "supernet")["epochs_done"] == 2
    capsys.readouterr()
    prepare_supernet(parse_run(run_spec(run_dir)), space, lambda _: None, progress=False)
    err = capsys.readouterr().err
    assert f"{optimizer}: content does not match" in err and "resuming from epoch-0001" in err
    assert (root / "epoch-0002.damaged" / "optimizer.pt").is_file()
    assert (root / "latest").read_text().strip() == "epoch-0003"


def test_checkpoints_without_digests_still_load_but_not_with_nan(run_dir: Path) -> None:
    from nasplat.model import load_checkpoint

    space = load_space(SPACE)
    ckpt = ckpts(run_dir) / "epoch-0002"
    make_legacy(ckpt)
    assert load_checkpoint(space.family.build_supernet(space), ckpt)["epochs_done"] == 2
    nan_block(ckpt / "model.safetensors")
    with pytest.raises(NasplatError, match=r"model\.safetensors: tensor '.+' holds NaN or infinite values"):
        load_checkpoint(space.family.build_supernet(space), ckpt)


def test_old_ray_checkpoint_is_checked_against_its_replica_digest(run_dir: Path) -> None:
    """Ray Train checkpoints written before ``weights_digest`` carry the replicas' digest of their last epoch."""
    from nasplat.model import load_checkpoint

    space = load_space(SPACE)
    ckpt = ckpts(run_dir) / "epoch-0002"
    state = json.loads((ckpt / "state.json").read_text())
    digest = state["weights_digest"]
    make_legacy(ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    state["history"][-1]["replica_digest"] = digest
    (ckpt / "state.json").write_text(json.dumps(state))
    assert load_checkpoint(space.family.build_supernet(space), ckpt)["epochs_done"] == 2
    flip_two_bytes(ckpt / "model.safetensors")
    with pytest.raises(NasplatError, match=f"weights differ from the ones checkpointed .*expected {digest}"):
        load_checkpoint(space.family.build_supernet(space), ckpt)


# --------------------------------------------------------------------------------------------------------------
# 3. the data a checkpoint was trained on


def _fashion_mnist() -> None:
    from nasplat.datasets import load_dataset

    try:
        load_dataset("fashion_mnist", "test")
    except NasplatError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")


def test_search_with_a_checkpoint_of_other_data_is_refused_before_any_trial(run_dir: Path) -> None:
    """Before: a digits (1x8x8) supernet 'searched' on Fashion-MNIST stored 5-13 % accuracies, exit 0."""
    _fashion_mnist()
    ckpt = run_dir / "supernet"
    run_file = write_run_file(
        run_dir, dataset={"name": "fashion_mnist", "n_val": 200}, supernet={"checkpoint": str(ckpt)}
    )
    line = one_line_error(nasplat("search", str(run_file)))
    assert f"{ckpts(run_dir) / 'epoch-0002'}: supernet trained on 'digits'" in line, line
    assert "(1x8x8 images, 10 classes) cannot evaluate 'fashion_mnist' (1x28x28 images, 10 classes)" in line
    if (run_dir / "study.db").exists():  # nothing was evaluated
        from nasplat.study import make_storage

        storage = make_storage(f"sqlite:///{run_dir / 'study.db'}")
        assert all(not s.n_trials for s in storage.get_all_studies())


def test_evaluate_on_other_data_is_refused(run_dir: Path, tmp_path: Path) -> None:
    _fashion_mnist()
    line = one_line_error(evaluate(run_dir / "supernet", tmp_path, "--dataset", "fashion_mnist"))
    assert "supernet trained on 'digits' (1x8x8 images, 10 classes) cannot evaluate 'fashion_mnist'" in line
    assert not (tmp_path / "out.csv").exists()


def test_old_checkpoint_is_checked_against_the_spaces_declared_shape(run_dir: Path) -> None:
    from nasplat import registry
    from nasplat.datasets import ArrayDataset, DataSpec
    from nasplat.model import check_checkpoint_data, read_checkpoint_state

    space = load_space(SPACE)
    ckpt = ckpts(run_dir) / "epoch-0002"
    make_legacy(ckpt)
    state = read_checkpoint_state(ckpt)
    import torch

    wide = ArrayDataset(
        "wide", torch.zeros((4, 1, 28, 28), dtype=torch.uint8), torch.zeros(4, dtype=torch.int64),
        mean=(0.5,), std=(0.5,), classes=tuple("abcdefghij"),
    )  # fmt: skip
    with pytest.raises(NasplatError, match=r"trained on 'digits' \(1x8x8 images, 10 classes\) cannot evaluate 'wide'"):
        check_checkpoint_data(state, ckpt, space, wide)
    # ...and the same checkpoint still serves its own data
    estimator = registry.build(
        "estimator", "supernet", space, options={"checkpoint": ckpt, "data": DataSpec(name="digits", n_val=200),
                                                 "calib_batches": 1},
    )  # fmt: skip
    (row,) = estimator.evaluate([space.from_string(ARCHS[0])])
    assert 0.0 <= row["accuracy"] <= 100.0


# --------------------------------------------------------------------------------------------------------------
# the Ray Train path


@pytest.mark.slow
def test_ray_training_recovers_a_missing_latest_and_a_damaged_checkpoint(tmp_path: Path) -> None:
    """Before: with `latest` gone the command failed with 'training ended without a checkpoint'."""
    from nasplat.datasets import DataSpec
    from nasplat.model import load_checkpoint
    from nasplat.train import TrainSettings, train_supernet_ray

    space = load_space(SPACE)
    data = DataSpec(name="digits", n_val=200, batch_size=32)
    settings = TrainSettings(epochs=2, batch_size=32, lr=0.05, max_steps_per_epoch=2, seed=1)
    run = tmp_path / "run"
    root = run / "checkpoints"
    first = train_supernet_ray(space, data, settings, run, workers=1)
    assert first.epochs_done == 2 and first.checkpoint == root / "epoch-0002"
    kept = {name: files_of(root / name) for name in ("epoch-0001", "epoch-0002")}

    (root / "latest").unlink()
    again = train_supernet_ray(space, data, settings, run, workers=1)
    assert again.epochs_done == 2 and again.checkpoint == root / "epoch-0002"
    assert (root / "latest").read_text().strip() == "epoch-0002"
    assert {name: files_of(root / name) for name in kept} == kept

    flip_two_bytes(root / "epoch-0002" / "model.safetensors")
    damaged = files_of(root / "epoch-0002")
    third = train_supernet_ray(space, data, settings, run, workers=1)
    assert third.epochs_done == 2 and [h["epoch"] for h in third.history] == [1, 2]
    assert files_of(root / "epoch-0002.damaged") == damaged
    assert load_checkpoint(space.family.build_supernet(space), run)["epochs_done"] == 2
