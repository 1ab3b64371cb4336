"""`nasplat finetune` end to end on a tiny digits study with a real local Ray cluster: finalists trained as
stand-alone networks on Ray Tune, results written onto the original trials, Kendall tau recorded, fine-tuned
weights exported, an interrupted run resumed without repeating finished work, one-line CLI errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from nasplat.errors import NasplatError
from nasplat.export import export_trial, study_space
from nasplat.finetune import FinetuneSettings, load_module, run_finetune, select_trials
from nasplat.search import parse_run, run_search
from nasplat.study import load_study, make_storage, pareto_frame

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")
STUDY = "ft"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A searched study (trained supernet, 10 trials) and a pristine copy of its database."""
    root = tmp_path_factory.mktemp("finetune")
    run = {
        "space": SPACE,
        "run_dir": str(root / "run"),
        "study": STUDY,
        "dataset": {"name": "digits", "n_train": 600, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 3}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": 10,
        "batch_size": 10,
    }
    result = run_search(parse_run(run), log=lambda _: None, progress=False)
    db = root / "run" / "study.db"
    pristine = root / "pristine.db"
    shutil.copyfile(db, pristine)
    return {"url": result.storage_url, "root": root, "pristine": pristine}


def _study(url: str) -> optuna.Study:
    return load_study(make_storage(url), STUDY)  # a fresh load: Optuna caches finished trials per study object


def _ranked(study: optuna.Study) -> list[int]:
    """Trial numbers, one per architecture, best inherited accuracy first."""
    seen: set[str] = set()
    out = []
    for t in sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: -t.values[0]):
        if t.user_attrs["arch_key"] not in seen:
            seen.add(t.user_attrs["arch_key"])
            out.append(t.number)
    return out


def _nasplat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "nasplat.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process, through its own entry point (error handling included)."""
    from nasplat.cli import main

    monkeypatch.setattr(sys, "argv", ["nasplat", *args])
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_finetune_writes_back_to_the_original_trials_and_export_ships_it(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasplat.measure import connect_ray

    url = str(tiny["url"])
    study = _study(url)
    before = [(t.number, t.state, t.values) for t in study.trials]
    picks = _ranked(study)[:3]
    # "front" selects the study's Pareto front (by inherited values)
    front, _ = pareto_frame(study)
    assert [t.number for t in select_trials(study, "front")] == [int(n) for n in front["trial"]]

    logs: list[str] = []
    ray = connect_ray(num_cpus=2)  # a real local Ray cluster of two CPUs
    try:
        result = run_finetune(
            study, ",".join(map(str, picks)), FinetuneSettings(epochs=2, samples=2), progress=False, log=logs.append
        )
    finally:
        ray.shutdown()

    study = _study(url)
    # nothing added, nothing changed: same trials, states and objective values
    assert [(t.number, t.state, t.values) for t in study.trials] == before
    tuned = {t.number: t for t in study.trials if "finetune:accuracy" in t.user_attrs}
    assert sorted(tuned) == sorted(picks)
    for n, t in tuned.items():
        a = t.user_attrs
        assert 0.0 <= a["finetune:accuracy"] <= 100.0 and 0.0 <= a["finetune:test_accuracy"] <= 100.0
        assert a["finetune:from_scratch"] is False and a["finetune:run"] == "finetune"
        cfg = a["finetune:config"]
        assert 0.005 <= cfg["lr"] <= 0.1 and 1e-5 <= cfg["weight_decay"] <= 1e-3
        assert cfg["epochs"] in (1, 2) and 1 <= cfg["epochs_trained"] <= cfg["epochs"]
        ckpt = Path(a["finetune:checkpoint"])
        assert (ckpt / "model.safetensors").is_file()
        # the recorded accuracy is that of the shipped weights, measured again on the search's validation split
        row = next(r for r in result.rows if r["trial"] == n)
        assert row["val"]["accuracy"] == a["finetune:accuracy"] and row["tune_trials"] == 2
    # the rank agreement between inherited and stand-alone accuracy is recorded on the study
    from scipy.stats import kendalltau

    inherited = [tuned[n].user_attrs["metric:accuracy"] for n in picks]
    standalone = [tuned[n].user_attrs["finetune:accuracy"] for n in picks]
    tau = study.user_attrs["finetune:kendall_tau"]
    expected = kendalltau(inherited, standalone).statistic
    assert (tau is None and math.isnan(expected)) or tau == pytest.approx(expected)
    summary = study.user_attrs["finetune:summary"]
    assert summary["trials"] == picks and summary["finetuned"] == standalone and summary["from_scratch"] is False
    assert any("Kendall tau" in line for line in logs)

    # Pareto utilities rank by either accuracy
    by_ft, _ = pareto_frame(study, by="finetuned")
    assert set(by_ft["trial"]) <= set(picks) and len(by_ft) >= 1
    for _, r in by_ft.iterrows():
        assert r["accuracy"] == tuned[r["trial"]].user_attrs["finetune:accuracy"]
        assert r["inherited:accuracy"] == tuned[r["trial"]].user_attrs["metric:accuracy"]
    code, out, err = _cli(capsys, monkeypatch, "pareto", "--storage", url, "--study", STUDY, "--by", "finetuned")
    assert code == 0, err
    assert "by fine-tuned values" in out and "inherited:accuracy" in out

    # the inherited start is the supernet's own path (BN recalibrated as for export), not a re-initialised net
    n = picks[0]
    init = load_file(str(Path(result.run_dir) / "inits" / f"trial-{n}" / "model.safetensors"))
    inherited_bundle = export_trial(study, tuned[n], tmp_path / "inherited", finetuned=False)
    shipped_inherited = load_file(str(inherited_bundle.weights))
    assert init.keys() == shipped_inherited.keys()
    assert all(torch.equal(init[k], shipped_inherited[k]) for k in init)

    # export of a fine-tuned trial ships the fine-tuned weights (the default once a trial is fine-tuned)
    bundle = export_trial(study, tuned[n], tmp_path / "finetuned")
    shipped = load_file(str(bundle.weights))
    tuned_weights = load_file(str(Path(tuned[n].user_attrs["finetune:checkpoint"]) / "model.safetensors"))
    assert shipped.keys() == tuned_weights.keys() and all(torch.equal(shipped[k], tuned_weights[k]) for k in shipped)
    meta = json.loads(bundle.metrics.read_text())
    assert meta["provenance"]["weights"] == "finetuned"
    assert meta["metrics"]["finetune:accuracy"] == tuned[n].user_attrs["finetune:accuracy"]

    import importlib.util

    spec = importlib.util.spec_from_file_location("ft_bundle_load", bundle.load_script)
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        from_bundle = loader.load(bundle.bundle_dir)(x)
        from_finetuned = load_module(Path(tuned[n].user_attrs["finetune:checkpoint"])).eval()(x)
        from_inherited = loader.load(inherited_bundle.bundle_dir)(x)
    assert torch.allclose(from_bundle, from_finetuned, atol=1e-5)
    assert not torch.allclose(from_bundle, from_inherited, atol=1e-3)


@pytest.mark.slow
def test_cli_from_scratch_interrupted_then_resumed(tiny: dict, tmp_path: Path) -> None:
    from ray.tune import ExperimentAnalysis

    url = str(tiny["url"])
    study = _study(url)
    picks = _ranked(study)[-2:]  # not the trials of the test above
    out = tmp_path / "runs"
    args = ["finetune", "--storage", url, "--study", STUDY, "--trials", ",".join(map(str, picks)), "--from-scratch",
            "--epochs", "2", "--samples", "2", "--out", str(out), "--quiet"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    exp = out / "scratch" / "tune"
    with open(tmp_path / "first.out", "w") as fout, open(tmp_path / "first.err", "w") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "nasplat.cli", *args], stdout=fout, stderr=ferr, env=env)
        deadline = time.monotonic() + 180
        while not list(exp.glob("*/checkpoint_000000")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)  # Ctrl+C after the first Tune trial reported an epoch
        rc = proc.wait(timeout=120)
    err = (tmp_path / "first.err").read_text()
    assert rc == 130, err
    assert "interrupted: fine-tuning stopped with" in err and "run the same command again" in err
    assert "Traceback" not in err
    saved = ExperimentAnalysis(str(exp)).trials
    finished = {t.trial_id: (Path(t.path) / "result.json").read_text() for t in saved if t.status == "TERMINATED"}
    assert len(finished) < len(saved) == 4
    checkpoints = {}  # epochs held by each trial's checkpoint in the saved experiment state
    for t in saved:
        if t.checkpoint is not None:
            checkpoints[t.trial_id] = json.loads((Path(t.checkpoint.path) / "state.json").read_text())["epoch"]
    reported = {}  # result lines each trial had written when interrupted
    for t in saved:
        results = Path(t.path) / "result.json" if t.path else None
        reported[t.trial_id] = len(results.read_text().splitlines()) if results and results.is_file() else 0
    assert not any("finetune:accuracy" in _study(url).trials[n].user_attrs for n in picks)  # nothing written yet

    proc2 = _nasplat(*args)
    assert proc2.returncode == 0, proc2.stderr
    assert "resuming the fine-tuning run" in proc2.stdout and "done: 2 architectures" in proc2.stdout
    resumed = ExperimentAnalysis(str(exp)).trials
    assert len(resumed) == 4 and all(t.status == "TERMINATED" for t in resumed)
    for t in resumed:
        text = (Path(t.path) / "result.json").read_text()
        if t.trial_id in finished:  # finished before the interrupt: not run again
            assert text == finished[t.trial_id]
            continue
        # an unfinished trial goes on from the checkpoint the saved experiment knew (Tune's restore), so its
        # epochs after the resume start right after that checkpoint's, not from the first epoch again; one whose
        # checkpoint already held every epoch (interrupted before its last result was recorded) reports that
        # result again instead of training on.
        # Which results a trial had written when the interrupt came is a race with Tune's driver: its result file
        # is synced to the run folder apart from (and may be ahead of) the saved experiment state. Tune restores a
        # trial's result file only with its checkpoint and then appends to it; a trial the saved state knew no
        # checkpoint of starts again from its first epoch: its new results (they replace the old file, which a
        # driver in a new Ray session cannot append to) begin at the last epoch 1 of the file.
        epochs_seen = [json.loads(line)["epoch"] for line in text.splitlines()]
        done_before = checkpoints.get(t.trial_id, 0)
        if done_before:
            new = epochs_seen[reported.get(t.trial_id, 0) :]
        else:
            new = epochs_seen[max((i for i, e in enumerate(epochs_seen) if e == 1), default=0) :]
        first = done_before + 1 if done_before < t.config["epochs"] else done_before
        assert new and new == list(range(first, first + len(new))), (epochs_seen, done_before)

    study = _study(url)
    for n in picks:
        a = study.trials[n].user_attrs
        assert a["finetune:from_scratch"] is True and a["finetune:run"] == "scratch"
    # fresh weights: the starting network is not the supernet's path
    space = study_space(study)
    supernet = space.family.build_supernet(space, seed=0)
    from nasplat.model import load_checkpoint

    load_checkpoint(supernet, Path(study.user_attrs["checkpoint"]))
    inherited = supernet.extract(space.from_key(study.trials[picks[0]].user_attrs["arch_key"])).state_dict()
    fresh = load_file(str(out / "scratch" / "inits" / f"trial-{picks[0]}" / "model.safetensors"))
    weights = [k for k in fresh if k.endswith("weight") and fresh[k].ndim > 1]
    assert weights and not any(torch.equal(fresh[k], inherited[k]) for k in weights)


def test_selection_and_settings_errors(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "copy.db"
    shutil.copyfile(Path(str(tiny["pristine"])), db)
    url = f"sqlite:///{db}"
    study = _study(url)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    with pytest.raises(NasplatError, match=r"trial must be 'front', 'front\+N' or trial numbers"):
        select_trials(study, "1,x")
    with pytest.raises(NasplatError, match=f"trial {failed.number} is FAIL, not COMPLETE"):
        select_trials(study, f"0,{failed.number}")
    with pytest.raises(ValidationError, match="lr_min"):
        FinetuneSettings(lr_min=0.5, lr_max=0.1)
    with pytest.raises(ValidationError, match="epoch_choices"):
        FinetuneSettings(epochs=2, epoch_choices=(3,))

    line = _one_line_error(
        *_cli(capsys, monkeypatch, "finetune", "--storage", url, "--study", STUDY, "--trials", "0,99")
    )
    assert "has no trial 99" in line
    bad = str(failed.number)
    line = _one_line_error(*_cli(capsys, monkeypatch, "finetune", "--storage", url, "--study", STUDY, "--trials", bad))
    assert f"trial {failed.number} is FAIL, not COMPLETE" in line
    line = _one_line_error(
        *_cli(capsys, monkeypatch, "pareto", "--storage", url, "--study", STUDY, "--by", "finetuned")
    )
    assert "run 'nasplat finetune' first" in line
    line = _one_line_error(*_cli(capsys, monkeypatch, "finetune", "--storage", url, "--lr-min", "1", "--lr-max", "0.1"))
    assert "lr_min" in line
