"""Batched evaluation on Ray actors gives exactly the numbers in-process evaluation gives, survives a killed
actor (every architecture gets its metrics exactly once), and the local Ray cluster is private: it listens on
127.0.0.1 only, with token authentication; joining it needs the token, and an address where nothing answers
fails in seconds with one line."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from nasplat.runfile import parse_run
from nasplat.search import run_search
from nasplat.study import load_study, make_storage

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")


@pytest.mark.slow
def test_ray_actor_pool_matches_in_process(tmp_path: Path) -> None:
    base = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_train": 600, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 1}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "random"},
        "trials": 8,
        "batch_size": 8,
    }
    local = run_search(
        parse_run({**base, "run_dir": str(tmp_path / "a"), "study": "local"}), log=lambda _: None, progress=False
    )
    assert local.checkpoint is not None
    remote_run = {**base, "run_dir": str(tmp_path / "b"), "study": "ray", "workers": 2,
                  "supernet": {"checkpoint": str(local.checkpoint)}}  # fmt: skip
    try:
        remote = run_search(parse_run(remote_run), log=lambda _: None, progress=False)
    finally:
        import ray

        ray.shutdown()

    def results(url: str, name: str) -> dict[str, tuple[float, ...]]:
        study = load_study(make_storage(url), name)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        return {t.user_attrs["arch_key"]: tuple(t.values) for t in done}

    a, b = results(local.storage_url, "local"), results(remote.storage_url, "ray")
    assert len(a) == len(b) == 8
    assert a == b  # same seed, same proposals, same numbers from the actors
    study = load_study(make_storage(remote.storage_url), "ray")
    assert study.get_trials()[0].user_attrs["provenance"]["workers"] == 2


# --------------------------------------------------------------------------------------------------------------
# a killed evaluation actor: restarted, its architectures submitted again, each evaluated exactly once

#: a tiny cell space (3 ops per edge) answered by a benchmark table: actors start in seconds, no training
TINY_SPACE = """\
name: pool-cell
version: 1
family: cell
dimensions:
  - type: categorical
    labels: [cell.edge_1_0, cell.edge_2_0, cell.edge_2_1, cell.edge_3_0, cell.edge_3_1, cell.edge_3_2]
    choices: [skip_connect, nor_conv_1x1, avg_pool_3x3]
macro: {input_shape: [1, 8, 8], num_classes: 10, stem_channels: 4, cells_per_stage: 1, num_stages: 2}
"""
OPS = ("skip_connect", "nor_conv_1x1", "avg_pool_3x3")
#: generous bound for anything observable a test waits on (a file appearing, a process going away)
WAIT_S = 120.0


def _tiny_table(folder: Path) -> tuple[Path, Path]:
    space = folder / "space.yaml"
    space.write_text(TINY_SPACE)
    lines = ["arch,val_acc"]
    for i, ops in enumerate(itertools.product(OPS, repeat=6)):
        a, b, c, d, e, f = ops
        lines.append(f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|,{50 + (i * 37) % 45}")
    table = folder / "table.csv"
    table.write_text("\n".join(lines) + "\n")
    return space, table


def _wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT_S:g} s waiting for {what}")
        time.sleep(0.05)  # polling an observable condition, with a bound: not a guess at how long it takes


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its parent, Ray's raylet, to reap it counts as ended)."""
    try:
        os.kill(pid, 0)
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True


def _gated_actor(gate: Path) -> type:
    """An evaluation actor whose first call in each process records the process id and waits until ``gate/open``
    exists: a test kills it there, in the middle of a batch. A class made in a function travels to the actors by
    value, so its processes need not import this test module."""
    from nasplat.distributed import _EvaluatorActor

    class GatedActor(_EvaluatorActor):
        def evaluate(self, choices: list[dict[str, Any]]) -> list[dict[str, float]]:
            (gate / f"calls-{os.getpid()}").open("a").write(f"{len(choices)}\n")
            if not (gate / "open").exists():
                (gate / f"busy-{os.getpid()}").write_text("")
                deadline = time.monotonic() + 120.0
                while not (gate / "open").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            return super().evaluate(choices)

    return GatedActor


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    from nasplat.distributed import connect_ray

    ray = connect_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Any, dict[str, Any], list[Any]]:
    """The tiny space, the tabular estimator's options and 12 distinct architectures of it."""
    import numpy as np

    from nasplat.space import load_space

    space_file, table = _tiny_table(tmp_path)
    space = load_space(space_file)
    rng = np.random.default_rng(0)
    archs: dict[str, Any] = {}
    while len(archs) < 12:
        a = space.sample(rng)
        archs[a.key] = a
    return space, {"table": str(table), "columns": {"val_acc": "maximize"}}, list(archs.values())


def _expected(space: Any, options: dict[str, Any], archs: list[Any]) -> list[dict[str, float]]:
    from nasplat import registry

    return list(registry.build("estimator", "tabular", space, options=options).evaluate(archs))


@pytest.mark.slow
def test_pool_survives_an_actor_killed_during_a_batch(ray_local: Any, tiny: Any, tmp_path: Path) -> None:
    from nasplat.distributed import RayPoolEstimator

    space, options, archs = tiny
    gate = tmp_path / "gate"
    gate.mkdir()

    class Pool(RayPoolEstimator):
        actor_class = _gated_actor(gate)

    pool = Pool(space, "tabular", options, workers=2, max_restarts=2)
    try:
        victim, other = pool.pids()
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(_capture(pool.evaluate, archs)))
        worker.start()
        _wait_for(
            "both actors to be inside their batch", lambda: all((gate / f"busy-{p}").exists() for p in (victim, other))
        )
        os.kill(victim, signal.SIGKILL)
        _wait_for(f"actor process {victim} to end", lambda: _gone(victim))
        (gate / "open").write_text("")
        worker.join(WAIT_S)
        assert not worker.is_alive()
        (got,) = results
        assert not isinstance(got, BaseException), got
        assert got == _expected(space, options, archs)  # one result per architecture, in order, none twice
        restarted = pool.pids()
        assert restarted[1] == other and restarted[0] != victim  # Ray restarted the killed actor in a new process
        # the killed actor's chunk (every other architecture) was submitted again, to the restarted actor
        calls = {p.name: [int(x) for x in p.read_text().split()] for p in gate.glob("calls-*")}
        assert calls == {f"calls-{victim}": [6], f"calls-{other}": [6], f"calls-{restarted[0]}": [6]}
        assert pool.moved == 0
        assert pool.evaluate(archs[:3]) == _expected(space, options, archs[:3])  # and the pool goes on
    finally:
        pool.close()


@pytest.mark.slow
def test_pool_survives_an_actor_killed_before_a_batch(ray_local: Any, tiny: Any) -> None:
    from nasplat.distributed import RayPoolEstimator

    space, options, archs = tiny
    pool = RayPoolEstimator(space, "tabular", options, workers=2, max_restarts=2)
    try:
        first = pool.pids()
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        for pid in first:
            _wait_for(f"actor process {pid} to end", lambda pid=pid: _gone(pid))
        assert pool.evaluate(archs) == _expected(space, options, archs)
        assert not set(pool.pids()) & set(first)
    finally:
        pool.close()


@pytest.mark.slow
def test_pool_gives_up_in_one_line_when_actors_stay_dead(ray_local: Any, tiny: Any) -> None:
    from nasplat.distributed import RayPoolEstimator
    from nasplat.errors import NasplatError

    space, options, archs = tiny
    pool = RayPoolEstimator(space, "tabular", options, workers=2, max_restarts=0, max_retries=2)
    try:
        pids = pool.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            _wait_for(f"actor process {pid} to end", lambda pid=pid: _gone(pid))
        with pytest.raises(NasplatError) as info:
            pool.evaluate(archs)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("all 2 Ray evaluation workers died and stayed dead")
        assert "max_restarts=0" in message and "max_retries=2" in message
        with pytest.raises(NasplatError, match="all 2 Ray evaluation workers died"):  # and says so again
            pool.evaluate(archs[:1])
    finally:
        pool.close()


def _capture(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except BaseException as exc:  # handed to the test's thread, which asserts on it
        return exc
