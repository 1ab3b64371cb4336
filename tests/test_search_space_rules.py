"""A search respects the space's constraints: proposals outside them are pruned, never evaluated."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from nasplat.search import parse_run, run_search
from nasplat.space import load_space

SPACE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


def test_constrained_space_search_rejects_proposals_outside_the_constraints(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPACE.read_text())
    spec["name"] = "cell-digits-constrained"
    spec["constraints"] = ["cell.edge_1_0 != 'none'", "cell.edge_3_2 != 'none'"]
    space_file = tmp_path / "constrained.yaml"
    space_file.write_text(yaml.safe_dump(spec))
    run = parse_run(
        {
            "space": str(space_file),
            "dataset": {"name": "digits", "n_train": 400, "n_val": 200, "batch_size": 64},
            "supernet": {"train": {"epochs": 1}},
            "estimator": {"name": "supernet", "options": {"calib_batches": 1}},
            "objectives": [{"metric": "accuracy", "direction": "maximize"}],
            "sampler": {"name": "random"},
            "trials": 24,
            "batch_size": 8,
            "run_dir": str(tmp_path / "run"),
        }
    )
    result = run_search(run, log=lambda _m: None, progress=False)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage_url)
    space = load_space(space_file)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    rejected = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(done) == 24
    assert rejected and all(t.user_attrs["rejected"] for t in rejected)  # random proposes ~36 % outside
    for t in done:
        assert space.satisfies(space.from_key(t.user_attrs["arch_key"]).as_dict())
