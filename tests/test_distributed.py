"""Batched evaluation on Ray actors gives exactly the numbers in-process evaluation gives, survives a killed
actor (every architecture gets its metrics exactly once), and the local Ray cluster is private: it listens on
127.0.0.1 only, with token authentication; joining it needs the token, and an address where nothing answers
fails in seconds with one line."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from nasplat.search import parse_run, run_search
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
    from nasplat.measure._actors import _EvaluatorActor

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
    from nasplat.measure import connect_ray

    ray = connect_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Any, dict[str, Any], list[Any]]:
    """The tiny space, the tabular estimator's options and 12 distinct architectures of it."""
    return tiny_case(tmp_path)


def tiny_case(folder: Path) -> tuple[Any, dict[str, Any], list[Any]]:
    """What the ``tiny`` fixture gives, written under ``folder`` (tests/test_cluster.py uses it too)."""
    import numpy as np

    from nasplat.space import load_space

    space_file, table = _tiny_table(folder)
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
    from nasplat.measure import RayPoolEstimator

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
    from nasplat.measure import RayPoolEstimator

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
    from nasplat.errors import NasplatError
    from nasplat.measure import RayPoolEstimator

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


# --------------------------------------------------------------------------------------------------------------
# the local cluster is private: loopback only, token authentication; joining needs the token

_CLUSTER = """\
import json, os, sys
from nasplat.measure import connect_ray
ray = connect_ray(num_cpus=1)
@ray.remote
def pid():
    return os.getpid()
worker = ray.get(pid.remote())  # a worker process is up as well, with its own server
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "token": os.environ.get("RAY_AUTH_TOKEN"),
                  "mode": os.environ.get("RAY_AUTH_MODE"), "worker": worker}), flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""
_JOIN = """\
import sys
from nasplat.measure import connect_ray
from nasplat.errors import NasplatError
try:
    ray = connect_ray(sys.argv[1])
except NasplatError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
print("joined", int(ray.cluster_resources()["CPU"]))
"""


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening(pids: set[int]) -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(pid, address, port) of every listening TCP socket the processes hold, read from /proc."""
    owner: dict[int, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = pid
        except OSError:  # the process ended meanwhile
            continue
    out: list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A" or int(cols[9]) not in owner:  # 0A: LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
            ip = ipaddress.ip_address(raw)
            out.append((owner[int(cols[9])], ip, int(hex_port, 16)))
    return out


def _is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_local_cluster_listens_on_loopback_only_and_requires_the_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}  # nasplat's defaults
    ray_token_file = Path.home() / ".ray" / "auth_token"
    had_token_file = ray_token_file.exists()
    cluster = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert cluster.stdout is not None
        info = json.loads(cluster.stdout.readline())
        assert info["mode"] == "token" and len(info["token"]) == 64  # a fresh 256-bit token, auth on
        assert ray_token_file.exists() == had_token_file  # the token lives in the processes' environment only
        host, port = info["gcs"].rsplit(":", 1)
        assert host == "127.0.0.1"
        ray_pids = _descendants(cluster.pid)
        assert info["worker"] in ray_pids
        sockets = _listening(ray_pids)
        assert int(port) in {p for _, _, p in sockets}  # the GCS is among them: the check sees Ray's servers
        assert {pid for pid, _, _ in sockets} >= {cluster.pid, info["worker"]}  # driver and worker too
        exposed = [(pid, str(ip), p) for pid, ip, p in sockets if not _is_loopback(ip)]
        assert exposed == [], f"Ray servers listening beyond loopback: {exposed}"

        quick = {"RAY_gcs_server_port_wait_time_s": "2"}  # Ray's connection retries: seconds, not the default 20
        join = [sys.executable, "-c", _JOIN, info["gcs"]]
        ok = subprocess.run(join, env={**env, "RAY_AUTH_TOKEN": info["token"], "RAY_AUTH_MODE": "token"},
                            capture_output=True, text=True, timeout=WAIT_S)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert "joined 1" in ok.stdout
        for label, extra in {"wrong token": {"RAY_AUTH_TOKEN": "0" * 64, "RAY_AUTH_MODE": "token"},
                             "no token": {"RAY_AUTH_MODE": "disabled"}}.items():  # fmt: skip
            bad = subprocess.run(join, env={**env, **quick, **extra}, capture_output=True, text=True, timeout=WAIT_S)
            assert bad.returncode == 2, (label, bad.stdout, bad.stderr)
            last = bad.stderr.strip().splitlines()[-1]
            assert last.startswith(f"cannot join the Ray cluster at {info['gcs']}"), (label, last)
            assert "Authentication token is missing or incorrect" in last, (label, last)
    finally:
        if cluster.stdin is not None:
            cluster.stdin.close()
        cluster.wait(WAIT_S)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_ray_address_fails_fast_in_one_line(tmp_path: Path) -> None:
    from test_cli import nasplat, one_line_error

    space, table = _tiny_table(tmp_path)
    run = tmp_path / "run.yaml"
    run.write_text(
        f"space: {space}\n"
        "dataset: {name: digits}\n"
        f"estimator: {{name: tabular, options: {{table: {table}, columns: {{val_acc: maximize}}}}}}\n"
        "objectives:\n  - {metric: val_acc, direction: maximize}\n"
        "sampler: {name: random}\ntrials: 2\n"
        f"run_dir: {tmp_path / 'run'}\nstorage: sqlite:///{tmp_path / 'study.db'}\nstudy: s\n"
    )
    address = f"127.0.0.1:{_unused_port()}"  # nothing listens there (bound a moment ago, then closed)
    t0 = time.monotonic()
    proc = nasplat("search", str(run), "--ray-address", address)
    took = time.monotonic() - t0
    line = one_line_error(proc)
    assert f"cannot join the Ray cluster at {address}" in line and "connection refused" in line
    assert took < 30, f"took {took:.0f} s"
