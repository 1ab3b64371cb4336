"""Seeded samplers do not replay their proposals in a resumed driver or in parallel drivers (issue 17, point 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from nasplat import registry
from nasplat.search import driver_sampler, make_sampler, parse_run, reseed_sampler
from nasplat.space import load_space
from nasplat.study import suggest_architecture

SPACE = Path(__file__).parent / "spaces" / "cell-digits.yaml"


def _keys(study: optuna.Study) -> list[str]:
    return [str(t.user_attrs["arch_key"]) for t in sorted(study.get_trials(), key=lambda t: t.number)]


@pytest.mark.parametrize("name", registry.available("sampler"))
def test_every_registered_sampler_can_be_reseeded(name: str) -> None:
    import nasplat.search._evolution  # noqa: F401 - registers nasplat's own samplers

    space = load_space(SPACE)
    sampler = make_sampler(name, seed=0, n_objectives=2, space=space)
    assert reseed_sampler(sampler, 1) >= 1


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2", "evolution"])
def test_two_drivers_with_one_seed_do_not_propose_the_same(name: str, tmp_path: Path) -> None:
    """Two drivers of one study, built with the same seed, asking in turn."""
    space = load_space(SPACE)
    url = f"sqlite:///{tmp_path / 's.db'}"

    def driver(wrap: bool) -> optuna.Study:
        inner = make_sampler(name, seed=7, n_objectives=1, space=space)
        sampler = driver_sampler(inner, 7) if wrap else inner
        return optuna.load_study(study_name="s", storage=url, sampler=sampler)

    for wrap in (False, True):
        optuna.create_study(study_name="s", storage=url, direction="maximize")
        a, b = driver(wrap), driver(wrap)
        seen: list[tuple[str, str]] = []
        for _ in range(6):
            for who, study in (("a", a), ("b", b)):
                t = study.ask()
                arch = suggest_architecture(t, space)
                seen.append((who, arch.key))
                study.tell(t, float(len(seen)))
        first = [k for w, k in seen if w == "a"]
        second = [k for w, k in seen if w == "b"]
        if wrap:
            assert len(set(first) & set(second)) <= 1, name  # chance collisions only
        elif name == "random":
            assert first == second  # the failure being fixed: the same stream twice
        optuna.delete_study(study_name="s", storage=url)


def _run(tmp_path: Path, trials: int) -> Any:
    return parse_run(
        {
            "space": str(SPACE),
            "dataset": {"name": "digits", "n_val": 200},
            "estimator": {
                "name": "tabular",
                "options": {
                    "table": str(tmp_path / "table.csv"),
                    "arch_column": "arch",
                    "columns": {"acc": "maximize"},
                },
            },
            "objectives": [{"metric": "acc", "direction": "maximize"}],
            "sampler": {"name": "random"},
            "trials": trials,
            "batch_size": 3,
            "run_dir": str(tmp_path / "run"),
            "study": "drivers",
            "seed": 5,
        }
    )


def _table(tmp_path: Path) -> None:
    import numpy as np

    space = load_space(SPACE)
    rng = np.random.default_rng(0)
    rows = ["arch,acc"] + [f'"{space.to_string(a)}",{rng.random():.6f}' for a in space.enumerate()]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")


def test_a_continued_search_proposes_new_architectures(tmp_path: Path) -> None:
    from nasplat.search import run_search
    from nasplat.study import load_study, make_storage

    _table(tmp_path)
    first = run_search(_run(tmp_path, 6), log=lambda _m: None, progress=False)
    run_search(_run(tmp_path, 12), log=lambda _m: None, progress=False)  # a rerun continues the study
    keys = _keys(load_study(make_storage(first.storage_url), "drivers"))
    assert len(keys) == 12
    assert len(set(keys)) >= 11  # before: the continued run replayed the first 6 proposals

    # the same seed still gives the same run
    other = tmp_path / "again"
    other.mkdir()
    (other / "table.csv").write_text((tmp_path / "table.csv").read_text())
    run_search(_run(other, 6), log=lambda _m: None, progress=False)
    again = _keys(load_study(make_storage(f"sqlite:///{other / 'run' / 'study.db'}"), "drivers"))
    assert again == keys[:6]
