"""MultiObjectiveASHA: its decisions on hand-made results (the scheduler's contract: Tune calls on_trial_add and
on_trial_result, and acts on the answer), restore of its rungs from a trial's history, and one real Ray Tune run
where dominated trials stop at the first rung and the front runs to max_t."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.schedulers import TrialScheduler

from nasplat.errors import NasplatError
from nasplat.finetune import MultiObjectiveASHA

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
OBJ = {"accuracy": "max", "macs": "min"}


class FakeTrial:
    """What the scheduler reads of a Tune trial: its id, config, last result and folder."""

    def __init__(self, trial_id: str, config: dict[str, Any] | None = None, last: dict[str, Any] | None = None,
                 path: str | None = None) -> None:  # fmt: skip
        self.trial_id = trial_id
        self.config = config or {}
        self.run_metadata = SimpleNamespace(last_result=last or {})
        self.path = path


def _report(s: MultiObjectiveASHA, trial: FakeTrial, it: int, **metrics: float) -> str:
    return str(s.on_trial_result(None, trial, {"training_iteration": it, **metrics}))


def _arrive(s: MultiObjectiveASHA, points: list[tuple[float, float]], it: int = 1) -> list[str]:
    """New trials, one per point, each reporting (accuracy, macs) at iteration ``it`` in this order."""
    out = []
    for i, (acc, macs) in enumerate(points):
        t = FakeTrial(f"t{len(s._level)}_{i}")
        s.on_trial_add(None, t)
        out.append(_report(s, t, it, accuracy=acc, macs=macs))
    return out


def test_rungs_are_grace_period_times_powers_of_eta_below_max_t() -> None:
    assert MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2).milestones == [1, 2, 4]
    assert MultiObjectiveASHA(OBJ, max_t=10, grace_period=1, reduction_factor=3).milestones == [1, 3, 9]
    assert MultiObjectiveASHA(OBJ, max_t=4, grace_period=2, reduction_factor=2).milestones == [2]
    assert MultiObjectiveASHA(OBJ, max_t=1, grace_period=1).milestones == []


def test_a_dominated_trial_stops_and_a_non_dominated_one_carries_on() -> None:
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2)
    # the first arrival has nothing to lose to; the second is not dominated (cheaper, less accurate)
    assert _arrive(s, [(90.0, 10.0), (80.0, 5.0)]) == [CONTINUE, CONTINUE]
    # dominated by the first (less accurate and dearer): two of three results rank ahead of it
    assert _arrive(s, [(70.0, 20.0)]) == [STOP]
    # better accuracy than all at a higher cost: on the front, kept although the rung now holds four
    assert _arrive(s, [(95.0, 30.0)]) == [CONTINUE]
    # a fresh dominated one still stops; the stopped ones' results stay on the rung as evidence
    assert _arrive(s, [(85.0, 12.0)]) == [STOP]
    assert len(s._rungs[0].points) == 5
    # the same trials at the next rung: judged again, there, against what that rung holds
    assert s.stopped() and set(s.stopped().values()) == {"across"}


def test_asynchronous_arrival_order_decides_like_asha() -> None:
    """Judged on arrival: a dominated trial that comes before its dominators carries on (as in ASHA)."""
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2)
    assert _arrive(s, [(70.0, 20.0), (90.0, 10.0), (80.0, 5.0), (60.0, 30.0)]) == [CONTINUE, CONTINUE, CONTINUE, STOP]


def test_one_objective_keeps_the_top_share_like_asha() -> None:
    """With one objective the rule is ASHA's: carry on when fewer than n/eta results are strictly better."""
    s = MultiObjectiveASHA({"loss": "min"}, max_t=9, grace_period=1, reduction_factor=3)
    decisions = []
    for i, loss in enumerate([0.5, 0.4, 0.9, 0.3, 0.8, 0.45, 0.2]):
        t = FakeTrial(f"t{i}")
        s.on_trial_add(None, t)
        decisions.append(_report(s, t, 1, loss=loss))
    # 0.9: 2 of 3 better (2 >= 1); 0.8: 3 of 5 better; 0.45: 3 of 6 better (3 >= 2)
    assert decisions == [CONTINUE, CONTINUE, STOP, CONTINUE, STOP, STOP, CONTINUE]


def test_crowding_breaks_ties_within_a_large_front() -> None:
    """When the front alone holds more than n/eta results, its crowded stretches go and its ends stay."""
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2)
    # three mutually non-dominated results, eta 2: only 1.5 carry on, and the middle one has the least room
    assert _arrive(s, [(90.0, 100.0), (60.0, 10.0), (70.0, 30.0)]) == [CONTINUE, CONTINUE, STOP]
    # eta 1.25 (the top 80 % carry on): four front members all fit; a fifth right beside (80, 60) has the least
    # crowding distance of the five (0.67 against 1.17 and 0.83; the two ends are infinite): 4 ahead, 4 >= 4
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=1.25)
    assert _arrive(s, [(90.0, 100.0), (60.0, 10.0), (80.0, 60.0), (70.0, 30.0)]) == [CONTINUE] * 4
    assert _arrive(s, [(79.0, 58.0)]) == [STOP]
    # a new end of the front (infinite crowding distance) is kept
    assert _arrive(s, [(95.0, 200.0)]) == [CONTINUE]


def test_static_objectives_come_from_the_config() -> None:
    s = MultiObjectiveASHA(OBJ, max_t=4, grace_period=1, reduction_factor=2, static={"macs": "costs/macs"})
    a, b = FakeTrial("a", {"costs": {"macs": 10.0}}), FakeTrial("b", {"costs": {"macs": 20.0}})
    for t in (a, b):
        s.on_trial_add(None, t)
    assert _report(s, a, 1, accuracy=90.0) == CONTINUE
    assert _report(s, b, 1, accuracy=85.0, macs=1.0) == STOP  # a reported macs is ignored: the config's counts
    c = FakeTrial("c", {"costs": {}})
    s.on_trial_add(None, c)
    with pytest.raises(NasplatError, match="config has no key 'costs/macs'"):
        _report(s, c, 1, accuracy=99.0)


def test_groups_compete_within_and_are_ranked_by_their_best_across() -> None:
    """Samples of one architecture compete with each other; an architecture whose best is dominated stops."""
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2, group="arch", static={"macs": "macs"})
    archs = {"A": 10.0, "B": 5.0, "D": 20.0}
    trials = {
        name: FakeTrial(name, {"arch": name[0], "macs": archs[name[0]]}) for name in ["A1", "A2", "B1", "D1", "D2"]
    }
    for t in trials.values():
        s.on_trial_add(None, t)
    assert _report(s, trials["A1"], 1, accuracy=80.0) == CONTINUE
    assert _report(s, trials["A2"], 1, accuracy=90.0) == CONTINUE  # better than its sibling
    assert _report(s, trials["B1"], 1, accuracy=70.0) == CONTINUE  # cheaper: B is on the front of groups
    # D's first sample beats A's worse one but D (20 MMACs) is dominated by A's best (90 %, 10 MMACs)
    assert _report(s, trials["D1"], 1, accuracy=85.0) == STOP
    assert s.stopped()["D1"] == "across"
    # A's worse sample, at rung 2 after A2 got there: it loses within its group
    assert _report(s, trials["A2"], 2, accuracy=92.0) == CONTINUE
    assert _report(s, trials["A1"], 2, accuracy=81.0) == STOP
    assert s.stopped()["A1"] == "within"
    # group D's point at rung 1 is its best sample's: a better second sample lifts D onto the front
    assert _report(s, trials["D2"], 1, accuracy=95.0) == CONTINUE
    text = s.debug_string()
    assert "grouped by 'arch'" in text and "2 trials stopped early (1 dominated across groups, 1 within" in text


def test_results_without_an_objective_or_progress_are_not_judged_and_max_t_stops() -> None:
    s = MultiObjectiveASHA(OBJ, time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    a, b = FakeTrial("a"), FakeTrial("b")
    assert (
        str(s.on_trial_result(None, a, {"epoch": 1, "accuracy": 90.0, "macs": 1.0})) == CONTINUE
    )  # added on first sight
    s.on_trial_add(None, b)
    assert str(s.on_trial_result(None, b, {"epoch": 1, "accuracy": 10.0})) == CONTINUE  # no macs: not judged
    assert str(s.on_trial_result(None, b, {"training_iteration": 1, "accuracy": 10.0, "macs": 9.0})) == CONTINUE
    assert len(s._rungs[0].points) == 1
    assert str(s.on_trial_result(None, b, {"epoch": 1, "accuracy": math.nan, "macs": 9.0})) == STOP  # NaN: worst
    assert str(s.on_trial_result(None, a, {"epoch": 4, "accuracy": 91.0, "macs": 1.0})) == STOP  # max_t reached


def test_a_restored_trial_brings_its_history_back_into_the_rungs(tmp_path: Path) -> None:
    """Tune starts a restored experiment with a fresh scheduler; the trials' recorded results refill its rungs."""
    folder = tmp_path / "trial_a"
    folder.mkdir()
    lines = [{"training_iteration": i, "accuracy": 90.0 + i, "macs": 10.0} for i in (1, 2, 3)]
    (folder / "result.json").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    s = MultiObjectiveASHA(OBJ, max_t=8, grace_period=1, reduction_factor=2)
    # the saved state knew the trial up to iteration 2 (the file may run ahead of it)
    a = FakeTrial("a", last={"training_iteration": 2, "accuracy": 92.0, "macs": 10.0}, path=str(folder))
    s.on_trial_add(None, a)
    assert [sorted(r.points) for r in s._rungs] == [["a"], ["a"], []]
    assert s._rungs[1].points["a"].tolist() == [-92.0, 10.0]  # minimisation form
    assert not s.stopped()
    # without a result file, the last result stands for the rungs it passed
    b = FakeTrial("b", last={"training_iteration": 1, "accuracy": 95.0, "macs": 5.0}, path=str(tmp_path / "gone"))
    s.on_trial_add(None, b)
    assert sorted(s._rungs[0].points) == ["a", "b"]
    # a newcomer dominated by both restored results stops at once
    assert _arrive(s, [(80.0, 20.0)]) == [STOP]
    # the restored trial goes on from iteration 3 (its next rung is 4)
    assert _report(s, a, 3, accuracy=93.0, macs=10.0) == CONTINUE
    s.on_trial_add(None, a)  # added twice (Tune re-adds a trial it restarts): nothing replayed again
    assert len(s._rungs[0].points) == 3
    s.on_trial_error(None, a)
    assert "a" in s._rungs[0].points  # its results stay as evidence


def test_bad_arguments_name_what_was_expected() -> None:
    cases = [
        ({"objectives": {}}, "at least one metric"),
        ({"objectives": {"accuracy": "up"}}, "objective 'accuracy' has direction 'up'; expected 'max' or 'min'"),
        ({"objectives": OBJ, "static": {"params": "p"}}, "static names 'params', which is not an objective"),
        ({"objectives": OBJ, "grace_period": 5, "max_t": 4}, "need 0 < grace_period <= max_t"),
        ({"objectives": OBJ, "reduction_factor": 1}, "reduction_factor must exceed 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(NasplatError, match=message.replace("(", r"\(").replace(")", r"\)")):
            MultiObjectiveASHA(**kwargs)
    s = MultiObjectiveASHA({"accuracy": "maximize", "macs": "minimize"}, group="arch")
    assert s.objectives == OBJ
    with pytest.raises(NasplatError, match="config has no group key 'arch'"):
        s.on_trial_add(None, FakeTrial("x"))


def test_finetune_builds_the_scheduler_it_is_told() -> None:
    from ray.tune.schedulers import FIFOScheduler

    from nasplat.finetune import FinetuneSettings
    from nasplat.finetune._tune import PerArchitectureASHA, finetune_scheduler

    objectives = {"accuracy": "max", "macs": "min"}
    mo = finetune_scheduler(FinetuneSettings(epochs=4, scheduler="mo-asha"), objectives)
    assert isinstance(mo, MultiObjectiveASHA)
    assert mo.group == "finalist" and mo.objectives == objectives and mo.milestones == [1, 2]
    assert mo.time_attr == "epoch" and mo.static == {}
    assert isinstance(finetune_scheduler(FinetuneSettings(), objectives), PerArchitectureASHA)
    plain = finetune_scheduler(FinetuneSettings(scheduler="none"), objectives)
    assert type(plain) is FIFOScheduler


def test_finetune_ranks_on_stand_alone_accuracy_and_the_study_objectives() -> None:
    import optuna

    from nasplat.finetune._finetune import scheduler_objectives

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", [{"metric": m} for m in ("accuracy", "macs", "latency_ms")])
    assert scheduler_objectives(study, "accuracy", "max") == {"accuracy": "max", "macs": "min", "latency_ms": "min"}
    costs_only = optuna.create_study(directions=["minimize"])
    costs_only.set_user_attr("objectives", [{"metric": "params_count"}])
    assert scheduler_objectives(costs_only, "accuracy", "max") == {"accuracy": "max", "params_count": "min"}


def test_cli_rejects_an_unknown_scheduler_in_one_line(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # fmt: skip
    import sys

    from nasplat.cli import main

    monkeypatch.setattr(sys, "argv", ["nasplat", "finetune", "--storage", f"sqlite:///{tmp_path}/x.db",
                                      "--scheduler", "hyperband"])  # fmt: skip
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code != 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    assert "--scheduler must be one of asha, mo-asha, none; got 'hyperband'" in lines[0]


def test_a_real_ray_tune_run_stops_the_dominated_and_runs_the_front_to_max_t(tmp_path: Path) -> None:
    """Trials one at a time (so arrival order, which the decisions depend on, is fixed): A and B are the front
    of architectures, A's second sample loses to its sibling, D's samples are dominated."""
    import ray
    from ray import tune

    from nasplat.measure import connect_ray

    table = {  # name -> (architecture, accuracy at the first iteration)
        "A-good": ("A", 80.0), "B": ("B", 70.0), "A-bad": ("A", 50.0), "D-1": ("D", 60.0), "D-2": ("D", 65.0),
    }  # fmt: skip
    macs = {"A": 10.0, "B": 5.0, "D": 20.0}

    def trainable(config: dict[str, Any]) -> None:  # defined here, so Ray ships it by value
        for it in range(1, 5):
            tune.report({"accuracy": config["start"] + it, "name": config["name"]})

    started = ray.is_initialized()
    connect_ray(num_cpus=2)
    try:
        scheduler = MultiObjectiveASHA(
            OBJ, max_t=4, grace_period=1, reduction_factor=2, group="arch", static={"macs": "macs"}
        )
        names = list(table)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={
                "name": tune.grid_search(names),
                "start": tune.sample_from(lambda spec: table[spec.config.name][1]),
                "arch": tune.sample_from(lambda spec: table[spec.config.name][0]),
                "macs": tune.sample_from(lambda spec: macs[table[spec.config.name][0]]),
            },
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo", verbose=0),
        )
        grid = tuner.fit()
    finally:
        if not started:
            ray.shutdown()
    assert not grid.errors
    iterations = {r.config["name"]: r.metrics["training_iteration"] for r in grid}
    order = [r.config["name"] for r in sorted(grid, key=lambda r: r.metrics["trial_id"])]
    assert sorted(order) == sorted(names)
    assert iterations == {"A-good": 4, "B": 4, "A-bad": 1, "D-1": 1, "D-2": 1}, (iterations, order)
