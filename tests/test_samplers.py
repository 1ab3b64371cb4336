"""nasplat's own samplers through Optuna's ask/tell and optimize, and the tabular benchmark command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from nasplat.search import EvolutionSampler, crowding, make_sampler, pareto_ranks
from nasplat.space import load_space, parse_space
from nasplat.study import suggest_architecture

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def flat() -> Any:
    import tests.test_space  # noqa: F401 - registers the schema-only family "test-flat"

    dims = [{"labels": [f"layer{i}.op" for i in range(8)], "type": "categorical", "choices": list("abcde")}]
    return parse_space({"name": "flat8", "version": 1, "family": "test-flat", "dimensions": dims,
                        "macro": {"input_shape": [1, 8, 8]}}, "flat8.yaml")  # fmt: skip


def score(arch: Any) -> float:
    return float(sum(v == "c" for _, v in arch))


def best_after(sampler: optuna.samplers.BaseSampler, space: Any, n: int) -> float:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n):
        t = study.ask()
        study.tell(t, score(suggest_architecture(t, space)))
    return float(study.best_value)


def test_evolution_beats_random_on_a_separable_problem(flat: Any) -> None:
    evo = [
        best_after(EvolutionSampler(flat, seed=s, population_size=10, tournament_size=3), flat, 120) for s in range(3)
    ]
    rnd = [best_after(optuna.samplers.RandomSampler(seed=s), flat, 120) for s in range(3)]
    assert np.mean(evo) >= np.mean(rnd) + 2, (evo, rnd)


def test_children_are_single_mutations_of_the_population(flat: Any) -> None:
    sampler = EvolutionSampler(flat, seed=0, population_size=6, tournament_size=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    archs = []
    for _ in range(30):
        t = study.ask()
        a = suggest_architecture(t, flat)
        archs.append(a)
        study.tell(t, score(a))
    for i in range(6, 30):
        population = archs[i - 6 : i]
        diffs = [sum(x != y for (_, x), (_, y) in zip(p, archs[i], strict=True)) for p in population]
        assert min(diffs) == 1, (i, diffs)


def test_same_seed_same_proposals(flat: Any) -> None:
    def run(seed: int) -> list[str]:
        study = optuna.create_study(
            direction="maximize", sampler=EvolutionSampler(flat, seed=seed, population_size=5, tournament_size=2)
        )
        keys = []
        for _ in range(25):
            t = study.ask()
            a = suggest_architecture(t, flat)
            keys.append(a.key)
            study.tell(t, score(a))
        return keys

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_works_with_optimize_and_multi_objective(flat: Any) -> None:
    sampler = make_sampler(
        "evolution", seed=0, n_objectives=2, space=flat, options={"population_size": 8, "tournament_size": 3}
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        a = suggest_architecture(trial, flat)
        return score(a), float(sum(v == "a" for _, v in a))

    study.optimize(objective, n_trials=40)
    assert len(study.best_trials) >= 1


def test_ranks_and_crowding() -> None:
    v = np.array([[1.0, 1.0], [2.0, 2.0], [0.5, 3.0], [3.0, 3.0]])
    assert pareto_ranks(v, ["minimize", "minimize"]).tolist() == [0, 1, 0, 2]
    c = crowding(np.array([[0.0, 3.0], [1.0, 1.0], [3.0, 0.0]]))
    assert np.isinf(c[0]) and np.isinf(c[2]) and np.isfinite(c[1])


def test_bad_sampler_options_are_one_line_errors(flat: Any) -> None:
    from nasplat.errors import NasplatError, UnknownNameError

    with pytest.raises(
        NasplatError, match=r"sampler 'evolution' has no option 'populaton_size'; allowed: .*population_size"
    ):
        make_sampler("evolution", seed=0, n_objectives=1, space=flat, options={"populaton_size": 3})
    with pytest.raises(UnknownNameError, match="evolution"):
        make_sampler("nope", seed=0, n_objectives=1, space=flat)


def test_bench_tabular_cli_writes_trajectories(tmp_path: Path) -> None:
    space = load_space("nb201")
    rng = np.random.default_rng(0)
    rows = [(space.to_string(a), float(rng.random())) for a in space.enumerate()]
    table = tmp_path / "table.csv"
    table.write_text("cell,score\n" + "".join(f"{a},{s}\n" for a, s in rows))
    out = tmp_path / "traj.jsonl"
    cmd = [sys.executable, "-m", "nasplat.cli", "bench", "tabular", "--table", str(table), "--arch-column", "cell",
           "--space", "nb201", "--objective", "score:max", "--sampler", "evolution", "--budget", "30",
           "--seeds", "0-1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 60
    lookup = dict(rows)
    for seed in (0, 1):
        mine = [r for r in recs if r["seed"] == seed]
        assert [r["step"] for r in mine] == list(range(1, 31))
        assert len({r["arch"] for r in mine}) == 30  # distinct evaluations
        assert all(r["score"] == pytest.approx(lookup[r["arch"]]) for r in mine)
    bad = subprocess.run(
        [*cmd[:-2], "--objective", "score", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "COLUMN:max" in bad.stderr and "Traceback" not in bad.stderr


def test_guided_sampler_learns_the_objective(flat: Any) -> None:
    from nasplat.search import GuidedSampler

    def run(sampler: optuna.samplers.BaseSampler) -> float:
        return best_after(sampler, flat, 40)

    onehot = {"encoder": "onehot"}  # the schema-only test family has no layers to count
    guided = [run(GuidedSampler(flat, seed=s, n_init=10, candidates=200, predictor_params=onehot)) for s in range(2)]
    rnd = [run(optuna.samplers.RandomSampler(seed=s)) for s in range(2)]
    assert min(guided) >= max(rnd) + 1, (guided, rnd)


def test_guided_sampler_multi_objective_and_bad_predictor(flat: Any) -> None:
    from nasplat.errors import NasplatError

    sampler = make_sampler(
        "guided",
        seed=0,
        n_objectives=2,
        space=flat,
        options={"n_init": 8, "candidates": 100, "predictor_params": {"encoder": "onehot"}},
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    keys = set()
    for _ in range(24):
        t = study.ask()
        a = suggest_architecture(t, flat)
        keys.add(a.key)
        study.tell(t, (score(a), float(sum(v == "a" for _, v in a))))
    assert len(keys) == 24  # never proposes an architecture twice
    with pytest.raises(NasplatError, match="predictor"):
        make_sampler("guided", seed=0, n_objectives=1, space=flat, options={"predictor": "nope"})


def test_guided_sampler_records_predictor_quality_and_predictions(flat: Any) -> None:
    from nasplat.search import GuidedSampler

    sampler = GuidedSampler(flat, seed=0, n_init=10, candidates=200, predictor_params={"encoder": "onehot"})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.set_user_attr("objectives", [{"metric": "score", "direction": "maximize"}])
    for _ in range(60):
        t = study.ask()
        study.tell(t, score(suggest_architecture(t, flat)))
    quality = study.user_attrs["predictor_quality"]
    assert quality and all(r["metric"] == "score" and r["model"] == "gbdt" for r in quality)
    assert quality[-1]["trials"] > quality[0]["trials"]
    assert all(-1.0 <= r["kendall_tau"] <= 1.0 for r in quality)
    predicted = [t for t in study.trials if "predicted:score" in t.user_attrs]
    assert len(predicted) >= 20  # every guided proposal carries the prediction that chose it


def test_hv_gains_and_greedy_order_spread_a_batch_along_the_front() -> None:
    from nasplat.search import greedy_front_order, hv_gains

    front = np.array([[1.0, 3.0], [3.0, 1.0]])  # maximisation form
    ref = np.array([0.0, 0.0])
    pts = np.array([[2.0, 2.0], [2.05, 2.0], [0.5, 0.5], [3.5, 0.5], [2.0, 2.1]])
    gains = hv_gains(pts, front, ref)
    assert gains[0] == pytest.approx(1.0) and gains[2] == 0.0  # fills the corner; dominated adds nothing
    assert gains[3] == pytest.approx(0.25)  # beyond the end of the front: (3.5 - 3) x 0.5
    order = greedy_front_order(pts, front, ref, np.ones(2), n_pick=3)
    # three candidates fill the same corner; once one is picked the others add almost nothing there, so the
    # second pick extends the end of the front instead
    assert order[0] in (1, 4) and order[1] == 3, order
    assert sorted(order) == list(range(5)) and order[-1] == 2  # the dominated one comes last


def test_greedy_order_explores_the_candidates_own_front() -> None:
    from nasplat.search import greedy_front_order

    front = np.array([[5.0, 5.0]])
    ref = np.array([0.0, 0.0])
    # only candidate 0 adds to the measured front; the candidates' own front is 0 and 1 (its ends) and 2
    pts = np.array([[5.5, 1.0], [0.1, 4.9], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]])
    plain = greedy_front_order(pts, front, ref, np.ones(2), n_pick=1, explore=0.0)
    assert plain == [0, 2, 3, 4, 1]  # the gain, then by shortfall to the measured front (1 is far behind)
    explored = greedy_front_order(pts, front, ref, np.ones(2), n_pick=2, explore=1.0)
    assert explored[:2] == [0, 1]  # the two ends of the candidates' own front
    # the share is kept across calls: with explore 0.5, every second proposal explores
    assert greedy_front_order(pts, front, ref, np.ones(2), n_pick=2, explore=0.5, start=0)[:2] == [0, 1]


def test_guided_multi_objective_finds_a_better_front_than_random(flat: Any) -> None:
    from nasplat.pareto import hypervolume
    from nasplat.search import GuidedSampler

    table = np.random.default_rng(7).random((2, 8, 5))  # per position and choice: a gain and a cost
    gain_of = {c: i for i, c in enumerate("abcde")}

    def objectives(a: Any) -> tuple[float, float]:
        idx = [gain_of[str(v)] for _, v in a]
        gain = sum(table[0, i, j] for i, j in enumerate(idx))
        cost = sum(table[1, i, j] + table[0, i, j] ** 2 for i, j in enumerate(idx))  # gain costs: a trade-off
        return float(gain), float(cost)

    def run(sampler: optuna.samplers.BaseSampler, n: int = 40) -> tuple[float, list[str]]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        seen, keys = [], []
        for _ in range(n):
            t = study.ask()
            a = suggest_architecture(t, flat)
            seen.append(objectives(a))
            keys.append(a.key)
            study.tell(t, seen[-1])
        return hypervolume(np.array(seen), [0.0, 16.0], ["maximize", "minimize"]), keys

    onehot = {"encoder": "onehot"}
    guided = [run(GuidedSampler(flat, seed=s, n_init=8, candidates=150, predictor_params=onehot)) for s in range(3)]
    rnd = [run(optuna.samplers.RandomSampler(seed=s))[0] for s in range(6)]
    assert np.mean([h for h, _ in guided]) > max(rnd), ([h for h, _ in guided], rnd)
    again = run(GuidedSampler(flat, seed=0, n_init=8, candidates=150, predictor_params=onehot))
    assert again[1] == guided[0][1]  # seeded: the same proposals


def test_guided_chooses_the_encoding_per_objective() -> None:
    """Latency-like costs of a cell depend on its dead edges, which the canonical form drops; accuracy-like
    metrics do not. The sampler's cross-validation picks the encoding that ranks each one better."""
    from nasplat.search import GuidedSampler

    space = load_space("nb201")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(60)]
    canon = [space.family.canonical(space, a) for a in archs]
    convs = {"nor_conv_3x3": 3.0, "nor_conv_1x1": 1.0, "avg_pool_3x3": 0.5}
    built_cost = [sum(convs.get(str(v), 0.0) for _, v in a) for a in archs]  # counts dead edges too
    function = [sum(convs.get(str(v), 0.0) for _, v in c) for c in canon]  # a property of what is computed
    values = np.array([function, built_cost]).T
    sampler = GuidedSampler(space, seed=0, candidates=20)
    assert sampler._objective_params(archs, values, 0) == {"canonical": True}
    assert sampler._objective_params(archs, values, 1) == {"canonical": False}
    fixed = GuidedSampler(space, seed=0, predictor_params={"canonical": True})
    assert fixed._objective_params(archs, values, 1) == {}  # the user's setting wins
    with pytest.raises(ValueError, match="explore"):
        GuidedSampler(space, seed=0, explore=1.5)


def test_guided_front_pool_offers_canonical_forms_and_caps_equivalents() -> None:
    from nasplat.search import GuidedSampler

    space = load_space("nb201")
    canon = space.family.canonical
    # an identity cell with a dead conv edge (node 2 never reaches the output), and other cells
    dead = space.from_string("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|none~2|")
    rng = np.random.default_rng(1)
    others = [space.sample(rng) for _ in range(15)]
    archs = [dead, *others]
    values = np.array([[90.0, 0.5]] + [[50.0, 5.0]] * len(others))  # dead is the whole front
    feasible = np.ones(len(archs), dtype=bool)
    directions = ["maximize", "minimize"]
    cls = canon(space, dead).key
    assert canon(space, dead).key != dead.key

    sampler = GuidedSampler(space, seed=0, candidates=100, parents=1, equivalents=0.5)
    pool = sampler._front_pool(archs, values, directions, feasible)
    keys = [a.key for a in pool]
    assert keys[0] == cls  # the simplest build of the front member's function comes first
    assert len(pool) == 200 and len(set(keys)) == 200 and not set(keys) & {a.key for a in archs}
    # once the class holds its share of the evaluated architectures, no more of its members are offered
    twin = space.from_string("|skip_connect~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|none~2|")
    assert canon(space, twin).key == cls
    capped = GuidedSampler(space, seed=0, candidates=100, parents=1, equivalents=0.05)  # cap: 2 of 17
    pool = capped._front_pool([*archs, twin], np.vstack([values, [[90.0, 0.6]]]), directions,
                              np.ones(len(archs) + 1, dtype=bool))  # fmt: skip
    assert all(canon(space, a).key != cls for a in pool)
    assert any(canon(space, a).key == cls for a in sampler._front_pool(archs, values, directions, feasible))
