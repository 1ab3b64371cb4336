"""The multi-node story on one machine: a Ray cluster of several nodes (``ray.cluster_utils.Cluster``: a head and
worker nodes, each a raylet with its own resources, all on 127.0.0.1 with token authentication) that the module
starts and stops itself.

- evaluation actors land one per node, and a node removed in the middle of a batch loses nothing: its actor is
  restarted on a surviving node and its architectures are submitted again, each measured exactly once;
- a run file with ``ray_address`` trains the supernet on Ray Train from a separate driver (``nasplat
  train-supernet``) with its two workers on two nodes and checkpoints in the run folder (the folder every node
  reaches); a worker's node is removed mid-run, the worker group restarts on the surviving nodes from the last
  checkpoint, and every epoch is trained exactly once;
- the README's "Run on a cluster" section: its ``ray`` and ``nasplat`` commands and flags are the real ones,
  its run file validates against the schema, and it points training, evaluation and fine-tuning at the head it
  starts.

A killed driver on a Ray Train run is tested on one node (``tests/test_distributed_train.py``, the same resume
from the run folder); fine-tuning is tested on one node (``tests/test_finetune.py``): on this cluster Ray Tune's
start-up alone costs over a minute here, more than this module's share of the suite's time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")
#: generous bound for anything observable a test waits on (a file appearing, a node going away)
WAIT_S = 240.0
#: GCS health checks every 0.5 s, a node declared dead after 3 missed ones: a killed node is noticed in ~2 s
#: instead of Ray's default ~15 s (the same settings an operator would tune on a real cluster)
FAST_FAILURE_DETECTION = {
    "health_check_timeout_ms": 10_000,  # a busy raylet still has 10 s to answer each check (Ray's default)
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}


def _wait_for(what: str, done: Callable[[], bool], proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT_S:g} s waiting for {what}")
        time.sleep(0.05)  # polling an observable condition, with a bound: not a guess at how long it takes


@dataclass
class LocalCluster:
    """A multi-node Ray cluster on this machine; ``nodes`` maps a name (also a custom resource) to its node."""

    cluster: Any
    env: dict[str, str]
    nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add(self, name: str, num_cpus: int = 1) -> Any:
        from nasplat.measure._actors import _loopback_node

        with _loopback_node():
            node = self.cluster.add_node(node_ip_address="127.0.0.1", num_cpus=num_cpus, resources={name: 1})
        self.nodes[name] = node
        self.cluster.wait_for_nodes()
        return node

    def remove(self, name: str) -> None:
        """Kill every process of the node at once (SIGKILL: a machine lost, not a polite shutdown)."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)
        self.cluster.wait_for_nodes()

    def name_of(self, node_id: str) -> str:
        return next(n for n, node in self.nodes.items() if node.node_id == node_id)

    def node_of_pid(self, pid: int) -> str:
        """The name of the node whose raylet started process ``pid`` (Ray's workers are its children)."""
        from ray._private import ray_constants

        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        for name, node in self.nodes.items():
            (raylet,) = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET]
            if raylet.process.pid == ppid:
                return name
        raise AssertionError(f"process {pid} (parent {ppid}) belongs to no node of the cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A head (the driver's node) and two worker nodes of one CPU each, on 127.0.0.1, with a private token.

    Ray's temporary folder is a private one (``RAY_TMPDIR``), so the address file a head writes there (what
    Ray's ``ray.init()`` joins when given no address) is seen by nothing else on this machine."""
    import ray

    if ray.is_initialized():  # a Ray session an earlier test left behind: this module's driver is its own
        ray.shutdown()
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    tmp = tempfile.mkdtemp(prefix="nsc-", dir="/tmp")  # short: Ray's socket paths live under it
    os.environ.update({"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    os.environ.pop("RAY_ADDRESS", None)
    _reread_ray_environment()
    from ray.cluster_utils import Cluster

    from nasplat.measure._actors import _loopback_node

    handle: LocalCluster | None = None
    try:
        with _loopback_node():
            raw = Cluster(
                initialize_head=True,
                head_node_args={
                    "node_ip_address": "127.0.0.1", "num_cpus": 1, "resources": {"head": 1},
                    "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION,
                },
            )  # fmt: skip
        handle = LocalCluster(raw, env={**os.environ, "COLUMNS": "200"}, nodes={"head": raw.head_node})
        handle.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        handle.add("node_a")
        handle.add("node_b")
        yield handle
    finally:
        import ray

        ray.shutdown()
        if handle is not None:
            handle.cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reread_ray_environment()
        shutil.rmtree(tmp, ignore_errors=True)


def _reread_ray_environment() -> None:
    """Make this process's Ray read its authentication mode and token from the environment again (it caches
    both on first use, and an earlier test's local cluster may have used other ones), as ``ray.init`` does."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# --------------------------------------------------------------------------------------------------------------
# evaluation actors: one per node; a node lost mid-batch re-queues its architectures


def _tiny(folder: Path) -> tuple[Any, dict[str, Any], list[Any]]:
    """The tiny table-backed cell space of test_distributed, its estimator options and 12 distinct archs."""
    from test_distributed import tiny_case

    return tiny_case(folder)


def _gated_actor(gate: Path) -> type:
    """An evaluation actor that records each call (process id, batch size) and, in each process's first call,
    waits until ``gate/open`` exists: the test removes a node while its actor is inside a batch."""
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


def test_actors_on_every_node_and_a_lost_node_requeues_its_batch(cluster: LocalCluster, tmp_path: Path) -> None:
    from nasplat import registry
    from nasplat.measure import RayPoolEstimator, connect_ray

    connect_ray(cluster.address)  # this process is a driver of the cluster too, on the head node
    space, options, archs = _tiny(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()

    class Pool(RayPoolEstimator):
        actor_class = _gated_actor(gate)

    # half a CPU each: a node's actor, restarted elsewhere, finds room on a surviving node
    pool = Pool(space, "tabular", options, workers=3, cpus_per_worker=0.5, address=cluster.address)
    try:
        placed = [cluster.name_of(n) for n in pool.nodes()]
        assert sorted(placed) == ["head", "node_a", "node_b"], placed  # one actor on every node
        pids = pool.pids()
        results: list[Any] = []

        def run() -> None:
            try:
                results.append(pool.evaluate(archs))
            except BaseException as exc:  # handed to the test's thread, which asserts on it
                results.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        _wait_for("every actor to be inside its batch", lambda: all((gate / f"busy-{p}").exists() for p in pids))
        lost = placed.index("node_b")
        cluster.remove("node_b")
        (gate / "open").write_text("")
        worker.join(WAIT_S)
        assert not worker.is_alive()
        (got,) = results
        assert not isinstance(got, BaseException), got
        expected = registry.build("estimator", "tabular", space, options=options).evaluate(archs)
        assert got == expected  # one result per architecture, in order, none lost, none twice

        after = [cluster.name_of(n) for n in pool.nodes()]
        assert after[lost] in {"head", "node_a"}  # Ray restarted the lost node's actor on a surviving node
        assert [a for i, a in enumerate(after) if i != lost] == [a for i, a in enumerate(placed) if i != lost]
        new_pid = pool.pids()[lost]
        calls = {p.name: [int(x) for x in p.read_text().split()] for p in gate.glob("calls-*")}
        # each actor had a chunk of 4; the lost one's chunk went once more, to the restarted actor, and no other
        assert calls == {**{f"calls-{p}": [4] for p in pids}, f"calls-{new_pid}": [4]}, calls
        assert pool.moved == 0
        assert pool.evaluate(archs[:3]) == expected[:3]  # and the pool goes on
    finally:
        pool.close()
        cluster.add("node_c")  # the cluster is three nodes again for what follows


# --------------------------------------------------------------------------------------------------------------
# supernet training from a run file with ray_address: two workers on two nodes, a worker's node lost mid-run


def _driver(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nasplat.cli", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip


def _rank_pids(workers: Path) -> dict[int, int]:
    out = {}
    for f in workers.glob("rank-*.pid"):
        with contextlib.suppress(ValueError):  # a file being written
            out[int(f.stem.split("-")[1])] = int(f.read_text())
    return out


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _epochs_in(ckpt: Path) -> list[int]:
    return [int(h["epoch"]) for h in json.loads((ckpt / "state.json").read_text())["history"]]


def test_ray_train_over_two_nodes_survives_losing_a_workers_node(cluster: LocalCluster, tmp_path: Path) -> None:
    from nasplat.model import resolve_checkpoint

    epochs = 8
    shared = tmp_path / "shared"  # the folder every node reaches (here: one machine's disk)
    run = {
        "space": SPACE,
        "dataset": {"name": "digits", "n_val": 200, "batch_size": 32},
        "supernet": {
            "train": {"epochs": epochs, "lr": 0.05, "max_steps_per_epoch": 6},
            "workers": 2, "max_failures": 2, "ray_address": cluster.address,
        },
        "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        "trials": 4,
        "run_dir": str(shared / "run"),
        "study": "cluster",
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    ckpts = shared / "run" / "supernet" / "checkpoints"
    workers = shared / "run" / "supernet" / "workers"

    driver = _driver(["train-supernet", str(path)], tmp_path / "driver.log", cluster.env)
    try:
        _wait_for("epoch 2's checkpoint", (ckpts / "epoch-0002").is_dir, driver)
        # the two workers (one CPU each) are on two nodes
        pids = _rank_pids(workers)
        placed = {rank: cluster.node_of_pid(pid) for rank, pid in pids.items()}
        assert sorted(placed) == [0, 1] and len(set(placed.values())) == 2, placed
        # lose the node of a worker (not the head: the driver's node) in the middle of the run
        rank = 1 if placed[1] != "head" else 0
        lost = placed[rank]
        cluster.remove(lost)
        assert not _alive(pids[rank])
        _wait_for(
            "the restarted worker group",
            lambda: (new := _rank_pids(workers)).keys() == {0, 1} and new[rank] != pids[rank],
            driver,
        )  # fmt: skip
        again = {r: cluster.node_of_pid(p) for r, p in _rank_pids(workers).items() if _alive(p)}
        assert len(again) < 2 or (len(set(again.values())) == 2 and lost not in again.values()), again
        assert driver.wait(WAIT_S) == 0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(WAIT_S)
    log = (tmp_path / "driver.log").read_text(errors="replace")
    assert "Ray Train: 2 worker(s) on 2 node(s)" in log, log[-3000:]
    assert re.search(r"resumed from epoch-000[2-9]", log), log[-3000:]  # the new group went on from a checkpoint
    final = resolve_checkpoint(shared / "run" / "supernet")
    assert _epochs_in(final) == list(range(1, epochs + 1))  # every epoch exactly once: none lost, none repeated


# --------------------------------------------------------------------------------------------------------------
# the README's "Run on a cluster" section: its commands, flags and run file are the real ones


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Each command line of a shell block (continuations joined, comments and `export` lines left out)."""
    import shlex

    joined = block.replace("\\\n", " ")
    out = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "export ")):
            out.append(shlex.split(line))
    return out


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_readme_cluster_section_names_real_commands_flags_and_keys() -> None:
    import typer
    from ray.scripts.scripts import cli as ray_cli

    from nasplat.cli._main import app
    from nasplat.measure._actors import _TOKEN_SOURCES
    from nasplat.search import parse_run

    section = _readme_section("Run on a cluster")
    nasplat_cli = typer.main.get_command(app)
    commands = [c for block in _blocks(section, "bash") for c in _commands(block)]
    seen = Counter(c[0] for c in commands)
    assert seen["ray"] >= 3 and seen["nasplat"] >= 4, commands
    for cmd in commands:
        group = ray_cli if cmd[0] == "ray" else nasplat_cli
        sub = group.commands.get(cmd[1])  # type: ignore[union-attr,attr-defined]
        assert sub is not None, f"{cmd[0]} has no command '{cmd[1]}'"
        flags = {a.split("=", 1)[0] for a in cmd[2:] if a.startswith("--")}
        assert flags <= _options(sub), f"{' '.join(cmd[:2])}: unknown {sorted(flags - _options(sub))}"
    heads = [c for c in commands if c[:2] == ["ray", "start"] and "--head" in c]
    joins = [c for c in commands if c[:2] == ["ray", "start"] and "--address" in c]
    assert len(heads) == 1 and len(joins) == 1
    port = heads[0][heads[0].index("--port") + 1]
    head_ip = heads[0][heads[0].index("--node-ip-address") + 1]
    address = f"{head_ip}:{port}"
    assert joins[0][joins[0].index("--address") + 1] == address  # workers join the head as started
    # the token variables are the ones nasplat passes on when it joins a cluster
    assert "RAY_AUTH_MODE=token" in section and all(k in section for k in _TOKEN_SOURCES[:1])

    (run_yaml,) = _blocks(section, "yaml")
    run = parse_run(yaml.safe_load(run_yaml))  # the whole run file validates against the real schema
    assert run.ray_address == run.supernet.ray_address == address  # evaluation and training on the cluster
    assert run.workers > 1 and (run.supernet.workers or 0) > 1
    assert run.storage is not None and run.storage.startswith("postgresql")  # a study every driver reaches
    assert run.run_dir.startswith("/shared/") and str(run.dataset.root).startswith("/shared/")
    finetune = next(c for c in commands if c[:2] == ["nasplat", "finetune"])
    assert finetune[finetune.index("--storage") + 1] == run.storage
    assert finetune[finetune.index("--ray-address") + 1] == address
    searches = [c for c in commands if c[:2] == ["nasplat", "search"]]
    assert any(c[c.index("--ray-address") + 1] == address for c in searches if "--ray-address" in c)
