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


def _backdate(url: str, trial_id: int, seconds: int) -> None:
    """Make a trial look as if it had started ``seconds`` ago (instead of sleeping until it has)."""
    import datetime

    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :id"),
            {"t": datetime.datetime.now() - datetime.timedelta(seconds=seconds), "id": trial_id},
        )
    engine.dispose()


def test_trial_killed_before_its_first_heartbeat_is_retried(tmp_path: Path) -> None:
    from nasplat.study import recover_stale_trials

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = make_storage(url, heartbeat_s=1, grace_s=60)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize"])
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    dead = study.ask()  # its worker "dies" here: the trial never beats
    dead.suggest_categorical("x", ["a", "b"])
    assert recover_stale_trials(study, grace_s=60) == 0  # too young to call dead
    _backdate(url, dead._trial_id, 120)
    assert recover_stale_trials(study, grace_s=60) == 1
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[dead.number].state == optuna.trial.TrialState.FAIL
    assert by_number[alive.number].state == optuna.trial.TrialState.RUNNING  # it has a fresh heartbeat
    waiting = [t for t in by_number.values() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == by_number[dead.number].params


DRIVER = """
import sys
import optuna
from nasplat.study import make_storage, mark_driver
storage = make_storage(sys.argv[1], heartbeat_s=1, grace_s=3600)
study = optuna.load_study(study_name="s", storage=storage)
trial = study.ask()
trial.suggest_categorical("x", ["a", "b", "c"])
storage.record_heartbeat(trial._trial_id)
mark_driver(storage, trial)
"""


def test_trial_of_a_dead_local_driver_is_retried_at_once(tmp_path: Path) -> None:
    """A trial whose driver process on this host has exited is not waited for (the grace period is an hour)."""
    from nasplat.study import recover_stale_trials

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = make_storage(url, heartbeat_s=1, grace_s=3600)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize"])
    mine = study.ask()  # held by this (live) process: never taken
    storage.record_heartbeat(mine._trial_id)
    subprocess.run([sys.executable, "-c", DRIVER, url], check=True, timeout=120)
    assert recover_stale_trials(study, grace_s=3600) == 1
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["FAIL", "RUNNING", "WAITING"]


def test_a_kill_inside_recovery_loses_no_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after queueing the retry but before failing the trial: the next recovery queues no second retry."""
    from nasplat.study import recover_stale_trials

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = make_storage(url, heartbeat_s=1, grace_s=60)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize"])
    for _ in range(3):
        t = study.ask()
        t.suggest_categorical("x", ["a", "b"])
        _backdate(url, t._trial_id, 120)
    real = storage.set_trial_state_values
    calls = {"n": 0}

    def killed_on_second(*args: object, **kwargs: object) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the driver dies between queueing trial 1's retry and failing trial 1
        return bool(real(*args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "set_trial_state_values", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        recover_stale_trials(study, grace_s=60)
    monkeypatch.setattr(storage, "set_trial_state_values", real)
    assert recover_stale_trials(study, grace_s=60) == 2  # trials 1 and 2 (trial 0 was failed before the kill)
    trials = study.get_trials()
    assert sorted(t.state.name for t in trials) == ["FAIL"] * 3 + ["WAITING"] * 3
    origins = sorted(t.system_attrs["failed_trial"] for t in trials if t.state.name == "WAITING")
    assert origins == [0, 1, 2]  # one retry each: none lost, none twice
