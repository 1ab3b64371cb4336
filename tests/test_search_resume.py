"""A search killed with SIGKILL mid-batch resumes: no finished trial lost, the dead batch retried once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nasplat.study import load_study, make_storage

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")


def run_file(tmp_path: Path, trials: int) -> Path:
    run = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_train": 600, "n_val": 300, "batch_size": 64},
        "supernet": {"train": {"epochs": 1}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "params_count", "direction": "minimize", "cost_model": "analytical"},
        ],
        "constraints": [{"metric": "macs", "max": 400000, "cost_model": "analytical"}],
        "sampler": {"name": "nsga2", "options": {"population_size": 8}},
        "trials": trials,
        "batch_size": 4,
        "run_dir": str(tmp_path / "run"),
        "study": "resume",
        "heartbeat_s": 1,
        "grace_s": 2,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def states(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    study = load_study(make_storage(url), "resume")
    out: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials():
        out.setdefault(t.state.name, []).append(t)
    return out


def kill_mid_batch(proc: subprocess.Popen[str], url: str, tmp_path: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """SIGKILL ``proc`` once the study has finished trials and a running batch; the states just after."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}")
        if not (tmp_path / "run" / "study.db").exists():
            continue
        try:
            now = states(url)
        except Exception:
            continue
        done = [t for t in now.get("COMPLETE", []) if t.system_attrs.get("failed_trial") is None]
        if len(done) >= 4 and now.get("RUNNING"):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return states(url)
    pytest.fail("the search never had running trials to kill")


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume(tmp_path: Path) -> None:
    path = run_file(tmp_path, trials=24)
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    env = {**os.environ, "COLUMNS": "200"}
    before: dict[str, list[optuna.trial.FrozenTrial]] = {}
    # Kill while a batch is running. The batch may finish between the look and the kill: then the killed
    # process is simply resumed and killed again (what a user would do), until a kill lands mid-batch.
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "nasplat.cli", "search", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            before = kill_mid_batch(proc, url, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if before.get("RUNNING"):
            break
        time.sleep(3)  # let stale trials of the missed kill age past the grace period
    assert before.get("RUNNING"), "no kill landed while a batch was running"
    finished = {t.number: t.values for t in before["COMPLETE"]}
    dead = {t.number: t.params for t in before["RUNNING"]}

    time.sleep(3)  # longer than the grace period: the dead worker's trials are now stale
    res = subprocess.run([sys.executable, "-m", "nasplat.cli", "search", str(path), "--resume"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    after = states(url)
    assert len(after["COMPLETE"]) == 24
    assert "RUNNING" not in after and "WAITING" not in after
    complete = {t.number: t for t in after["COMPLETE"]}
    for number, values in finished.items():  # nothing finished was lost or changed
        assert complete[number].values == values
    failed = {t.number for t in after.get("FAIL", [])}
    assert set(dead) <= failed  # the dead batch was failed...
    retried = [t for t in after["COMPLETE"] if t.system_attrs.get("failed_trial") in dead]
    assert {t.system_attrs["failed_trial"] for t in retried} == set(dead)  # ...and each of its trials re-run once
    for t in retried:  # the retry keeps every choice the dead trial had made (it may die mid-way through them)
        assert dead[t.system_attrs["failed_trial"]].items() <= t.params.items()
    # the constraint was recorded on every trial, and the front holds feasible trials only
    assert all("macs<=400000.0" in t.constraints for t in after["COMPLETE"])


def test_trial_killed_before_its_first_heartbeat_is_retried(tmp_path: Path) -> None:
    from nasplat.study import fail_silent_trials

    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=1, grace_s=1)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize"])
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    dead = study.ask()  # its worker "dies" here: the trial never beats
    dead.suggest_categorical("x", ["a", "b"])
    assert fail_silent_trials(study, grace_s=60) == 0  # too young to call dead
    time.sleep(1.5)
    assert fail_silent_trials(study, grace_s=1) == 1
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[dead.number].state == optuna.trial.TrialState.FAIL
    assert by_number[alive.number].state == optuna.trial.TrialState.RUNNING  # it has a heartbeat
    waiting = [t for t in by_number.values() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == by_number[dead.number].params
