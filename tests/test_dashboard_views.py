"""Each dashboard view on its own: its layout builds, and its callbacks' work (the ``*_state`` functions)
answers from a real study, without a browser or a server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dash")

from nasplat_dashboards.demo import DemoStudy, write_demo_search
from nasplat_dashboards.views import VIEWS, architecture, pareto, studies, training, trials
from nasplat_dashboards.views.common import PAGE_SIZE_RANGE, ViewEnv

STUDY = "views-random"


@pytest.fixture(scope="module")
def env() -> Iterator[ViewEnv]:
    folder = Path(tempfile.mkdtemp(prefix="nasplat-views-"))
    try:
        url = write_demo_search(folder, [DemoStudy(STUDY, "random", 12, seed=3)])
        yield ViewEnv(url, folder / "exports")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ids(component: Any) -> set[str]:
    """Every string id in a Dash component tree."""
    found: set[str] = set()
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, (list, tuple)):
            stack.extend(c)
            continue
        if isinstance(getattr(c, "id", None), str):
            found.add(c.id)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)
    return found


def test_every_view_has_a_module_and_a_container() -> None:
    from nasplat_dashboards.app import VIEW_MODULES

    assert [m.__name__.rsplit(".", 1)[-1] for m in VIEW_MODULES] == list(VIEWS)
    for module in VIEW_MODULES:
        name = module.__name__.rsplit(".", 1)[-1]
        assert f"view-{name}" in ids(module.layout())


def test_studies_view(env: ViewEnv) -> None:
    assert "studies-table" in ids(studies.layout())
    rows, cols, msg = studies.studies_state(env)
    assert msg is None and [r["study"] for r in rows] == [STUDY]
    assert rows[0]["status"] == "finished" and rows[0]["trials"] == "12/12"
    assert {c["id"] for c in cols} >= {"study", "status", "hypervolume"}
    assert studies.picked_study({"row": 0}, rows) == STUDY
    assert studies.picked_study({"row": 5}, rows) is None
    title, attrs, _cols = studies.attributes_state(env, STUDY)
    assert STUDY in title and {"key": "objective 0", "value": "val_acc (maximize)"} in attrs


def test_pareto_view_shows_the_measured_trust(tmp_path: Path) -> None:
    import optuna

    url = write_demo_search(tmp_path, [DemoStudy("trusted", "random", 6, seed=1)])
    study = optuna.load_study(study_name="trusted", storage=url)
    study.set_user_attr(
        "finetune:summary",
        {"trials": [0, 1, 2, 3, 4], "kendall_tau": 0.6, "spearman": 0.7, "metric": "val_acc", "from_scratch": True,
         "run": "trust"},
    )  # fmt: skip
    local = ViewEnv(url, tmp_path / "exports")
    state = pareto.controls_state(local, "trusted", "study", None, None, None, None, [], [], None)
    x, y, z, bounds = state[3], state[4], state[5], state[10]
    status = pareto.pareto_state(local, x, y, z, None, [], "pareto", [], bounds, "trusted")[3]
    assert "estimate trust: Kendall tau 0.60" in status and "over 5 architectures trained from scratch" in status


def test_pareto_view(env: ViewEnv) -> None:
    assert {"pareto-graph", "axis-x", "front-table"} <= ids(pareto.layout())
    state = pareto.controls_state(env, STUDY, "study", None, None, None, None, [], [], None)
    _, _, _, x, y, z, _, constrain, _, sliders, bounds = state
    assert (x, y, z) == ("val_acc", "macs", None) and "val_acc" in constrain and len(sliders) == len(bounds)
    positions = [0 if b[2] == "maximize" else pareto.SLIDER_STEPS for b in bounds.values()]
    slider_ids = [{"type": "constraint", "metric": m} for m in bounds]
    _fig, _hv_trials, _hv_time, status, msg, front, _cols, texts, shown = pareto.pareto_state(
        env, x, y, z, None, positions, "pareto", slider_ids, bounds, STUDY
    )
    assert msg is None and "of 12 completed trials within the constraints" in status
    assert "estimate trust: not measured" in status  # values inherited from a supernet, never checked
    assert front and all("trial" in r for r in front) and shown[0] == STUDY and len(texts) == len(bounds)
    # an unknown study says so, in one line
    *_, msg, _front, _cols, _texts, _shown = pareto.pareto_state(env, x, y, z, None, [], "pareto", [], {}, "nope")
    assert "no study 'nope'" in str(msg.children)


def test_trials_view(env: ViewEnv) -> None:
    assert {"trials-table", "parallel-graph"} <= ids(trials.layout())
    rows, _cols, pages, status, msg = trials.trials_state(env, STUDY, 0, 10**9, [], "")
    assert msg is None and len(rows) == 12 and pages == 1 and status.startswith("12 of 12 trials match")
    assert PAGE_SIZE_RANGE[1] >= 12  # the huge page size asked for was clamped, and still shows them all
    rows, *_ = trials.trials_state(env, STUDY, 0, 5, [{"column_id": "val_acc", "direction": "desc"}], "")
    assert len(rows) == 5 and rows[0]["val_acc"] == max(r["val_acc"] for r in rows)
    *_, msg = trials.trials_state(env, STUDY, 0, 5, [], "{val_acc} >= high")
    assert "holds numbers" in str(msg.children)
    options, value = trials.color_options(env, STUDY, None, True)
    assert value == "val_acc" and {"label": "macs", "value": "macs"} in options
    assert trials.parallel_state(env, STUDY, "val_acc").data


def test_architecture_view(env: ViewEnv) -> None:
    assert {"arch-graph", "export-command", "export-button"} <= ids(architecture.layout())
    options, value = architecture.options_state(env, STUDY, None, None, "study", None)
    assert options[0]["label"].startswith("★ front") and value in {o["value"] for o in options}
    asked = architecture.options_state(env, STUDY, None, {"study": STUDY, "trial": 3}, "trial-request", value)
    assert asked[1] == 3
    title, fig, _note, choices, *_rest, msg, name = architecture.arch_state(env, 3, STUDY)
    assert title.startswith(f"Trial 3 of '{STUDY}' · COMPLETE") and msg is None and choices and fig is not None
    assert name == f"{STUDY}-trial3"
    assert "is not allowed" in architecture.command_state(env, 3, STUDY, "../elsewhere", [])
    command = architecture.command_state(env, 3, STUDY, "b", ["yes"])
    assert command.startswith("nasplat export") and str(env.export_root / "b") in command and "--overwrite" in command


def test_training_view(env: ViewEnv) -> None:
    assert {"training-graph", "predictor-graph"} <= ids(training.layout())
    train, quality, predicted, msg = training.training_state(env, STUDY)
    assert msg is None
    for fig in (train, quality, predicted):  # a tabular search trains no supernet and uses no predictor
        assert "no data yet" in fig.layout.annotations[0].text
    *_, msg = training.training_state(env, None)
    assert "choose a study" in str(msg.children)
