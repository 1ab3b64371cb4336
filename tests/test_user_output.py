"""What a user sees during a search: progress lines off a terminal, ETA, a near-chance warning, Ctrl+C, and a
front with one row per network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from nasplat.search._run import _clock, _near_chance
from nasplat.space import load_space
from nasplat.train import LineProgress

SPACE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


def test_line_progress_prints_heartbeats_and_the_end() -> None:
    lines: list[str] = []
    quiet = LineProgress(interval_s=3600.0, write=lines.append)
    task = quiet.add_task("epoch 1/2", total=10, loss=0.0)
    for n in range(1, 10):
        quiet.update(task, completed=n, loss=1.0 / n)
    assert lines == []  # within the interval: nothing
    quiet.update(task, completed=10, loss=0.1)
    assert len(lines) == 1 and lines[0].startswith("epoch 1/2: 10/10 steps") and "loss 0.1" in lines[0]
    chatty = LineProgress(interval_s=0.0, write=lines.append)
    task = chatty.add_task("epoch 2/2", total=3)
    for n in range(1, 4):
        chatty.update(task, completed=n)
    assert [line.split(":")[1].split()[0] for line in lines[1:]] == ["1/3", "2/3", "3/3"]


def test_clock() -> None:
    assert (_clock(9.4), _clock(252), _clock(3907)) == ("9 s", "4:12", "1:05:07")


def test_near_chance_warning() -> None:
    space = load_space(SPACE)  # 10 classes: chance is 10 %
    warning = _near_chance(space, [{"accuracy": 9.0}, {"accuracy": 12.5}])
    assert warning is not None and "12.5 %" in warning and "10.0 %" in warning
    assert _near_chance(space, [{"accuracy": 9.0}, {"accuracy": 41.0}]) is None
    assert _near_chance(space, [{"loss": 1.0}]) is None


def test_front_merges_equivalent_networks(tmp_path: Path) -> None:
    from nasplat.study import pareto_frame
    from nasplat.study import record as study_record

    space = load_space(SPACE)
    classes: dict[str, list[str]] = {}
    for a in space.enumerate():
        classes.setdefault(space.family.canonical(space, a).key, []).append(a.key)
    same = next(keys for keys in classes.values() if len(keys) >= 3)[:3]
    other = next(keys for keys in classes.values() if keys[0] not in same)[0]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for key, value in study_record.space_attrs(space).items():
        study.set_user_attr(key, value)
    for key, values in ((same[0], (0.9, 2.0)), (same[1], (0.9, 2.0)), (same[2], (0.9, 2.0)), (other, (0.5, 1.0))):
        trial = study.ask()
        trial.set_user_attr("arch_key", key)
        study.tell(trial, list(values))
    front, _ = pareto_frame(study)
    assert len(front) == 2  # the three equivalent cells are one network: one row
    row = front[front["arch_key"].isin(same)].iloc[0]
    assert row["equivalents"] == 2


#: a driver whose estimator stops in the middle of its second evaluation, announces it on stdout and waits there
#: for the signal (once per run folder): the interrupt lands mid-batch on every machine, however loaded
_PAUSING_DRIVER = """
import signal, sys
from pathlib import Path
from estimators.accuracy import TabularEstimator
from nasplat.registry import register


@register("estimator", "pausing-tabular")
class PausingTabular(TabularEstimator):
    name = "pausing-tabular"

    def __init__(self, space, table, marker, columns=None):
        super().__init__(space, table, columns=columns)
        self.marker, self.calls = Path(marker), 0

    def evaluate(self, archs):
        self.calls += 1
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text("paused")
            print("PAUSED-MID-BATCH", flush=True)
            signal.pause()  # Ctrl+C raises KeyboardInterrupt here
        return super().evaluate(archs)


from nasplat.cli._main import main

sys.argv = ["nasplat", "search", sys.argv[1]]
main()
"""


@pytest.mark.slow
def test_ctrl_c_names_what_was_kept_and_queues_the_batch_again(tmp_path: Path) -> None:
    from nasplat.study import load_study, make_storage
    from nasplat.testing.faults import tabular_run

    path = tabular_run(tmp_path, trials=12, batch_size=4)
    run = yaml.safe_load(path.read_text())
    run["estimator"]["name"] = "pausing-tabular"
    run["estimator"]["options"]["marker"] = str(tmp_path / "paused")
    run["study"] = "ctrl-c"
    path.write_text(yaml.safe_dump(run))
    driver = tmp_path / "driver.py"
    driver.write_text(_PAUSING_DRIVER)
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    cmd = [sys.executable, str(driver), str(path)]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # blocks until the driver stops mid-batch (or ends: then the asserts below say so)
        seen.append(line)
        if "PAUSED-MID-BATCH" in line:
            running = [t for t in load_study(make_storage(url), "ctrl-c").get_trials() if t.state.name == "RUNNING"]
            assert running, "".join(seen)  # the interrupt lands while a batch is being evaluated
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted:" in output and "queued again" in output and "Traceback" not in output, output[-3000:]
    study = load_study(make_storage(url), "ctrl-c")
    assert sum(t.state.name == "COMPLETE" for t in study.get_trials()) >= 4  # the batches before are kept
    failed = [t for t in study.get_trials() if t.state.name == "FAIL"]
    waiting = {t.system_attrs.get("failed_trial") for t in study.get_trials() if t.state.name == "WAITING"}
    assert len(failed) == 4 and {t.number for t in failed} <= waiting  # every interrupted architecture is queued again
    assert "4 unfinished architecture(s) queued again" in output, output[-3000:]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ETA" in again.stdout
    final = load_study(make_storage(url), "ctrl-c").get_trials()
    assert sum(t.state.name == "COMPLETE" for t in final) == 12
    retried = {t.system_attrs.get("failed_trial") for t in final if t.state.name == "COMPLETE"}
    assert {t.number for t in failed} <= retried
