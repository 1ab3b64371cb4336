"""Scale-out: evaluation actors, Ray Train workers and search drivers, on one node and on a multi-node cluster.

Parts (each runs in a fresh process, so each gets its own Ray session):

- ``eval``: ``RayPoolEstimator`` with 1, 2 and 4 actors evaluating the same 48 architectures with the
  ``supernet`` estimator (inherit weights, recalibrate BatchNorm, score on the validation split) of a small
  cell supernet on digits; architectures per second (median of 3 batches) after a warm-up batch. On one node (a local Ray cluster
  of 4 logical CPUs) and on a ``ray.cluster_utils.Cluster`` of one driver-only head and 4 worker nodes of one
  CPU each (actors spread one per node), all on 127.0.0.1.
- ``train``: ``train_supernet_ray`` with 1 and 2 workers (batch 32 per worker: weak scaling), training
  images/s inside epochs (median of epochs after the first) and the wall time with Ray Train's start-up; on
  one node and on the cluster (2 worker nodes of one CPU each).
- ``drivers``: 1 versus 3 ``nasplat search`` drivers on one study in a PostgreSQL server this script starts
  (tabular estimator: the storage is the work), trials/s over the span of the study's trials, and the
  storage round trip per trial (Optuna ask + tell through nasplat's storage) from 1 and from 3 processes.

    .venv/bin/python benchmarks/scale_out.py [--out docs/bench-scale-out.md] [--json results.json]

On the project's machine every "node" shares the same 2 cores: the cluster numbers show what the distribution
costs (scheduling, object transfer, all-reduce over TCP), not what more machines would add; the page says how
the ratios project to N machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE = str(REPO / "tests" / "spaces" / "cell-digits.yaml")
N_ARCHS = 48
#: batches timed per configuration (the median is reported)
REPEATS = 3
#: training epochs, each a full pass over digits' training split (every epoch after the first is timed)
EPOCHS = 5


# ------------------------------------------------------------------------------------------- the test cluster
@contextlib.contextmanager
def loopback_cluster(worker_nodes: int) -> Iterator[str]:
    """A head with no CPUs (the driver's node) and ``worker_nodes`` nodes of one CPU, on 127.0.0.1 with a
    private token and a private Ray folder; yields its address. (The tests' module fixture builds the same.)"""
    tmp = tempfile.mkdtemp(prefix="nsb-", dir="/tmp")
    os.environ.update({"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    from ray.cluster_utils import Cluster

    from nasplat.measure._actors import _loopback_node

    with _loopback_node():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 0, "include_dashboard": False},
        )
        for _ in range(worker_nodes):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield str(cluster.address)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------- parts
def part_eval(where: str, checkpoint: str) -> dict[str, Any]:
    import numpy as np

    from nasplat.datasets import DataSpec
    from nasplat.measure import RayPoolEstimator, connect_ray
    from nasplat.space import load_space

    space = load_space(SPACE)
    rng = np.random.default_rng(0)
    archs: dict[str, Any] = {}
    while len(archs) < N_ARCHS + 4:
        a = space.sample(rng)
        archs[a.key] = a
    batch = list(archs.values())
    data = DataSpec(name="digits", n_val=200, batch_size=64)
    options = {"checkpoint": checkpoint, "data": data, "seed": 0, "calib_batches": 2}
    out: dict[str, Any] = {}
    place: contextlib.AbstractContextManager[str | None] = (
        loopback_cluster(4) if where == "cluster" else contextlib.nullcontext(None)
    )
    with place as address:
        if address is None:
            connect_ray(num_cpus=4)
        for workers in (1, 2, 4):
            t0 = time.perf_counter()
            pool = RayPoolEstimator(space, "supernet", options, workers=workers, address=address)
            try:
                pool.evaluate(batch[N_ARCHS : N_ARCHS + workers])  # warm-up: one architecture per actor
                ready = time.perf_counter() - t0
                times = []
                for _ in range(REPEATS):  # the median of a few batches: the cores are shared with other work
                    t1 = time.perf_counter()
                    pool.evaluate(batch[:N_ARCHS])
                    times.append(time.perf_counter() - t1)
                took = statistics.median(times)
                nodes = len(set(pool.nodes()))
            finally:
                pool.close()
            out[str(workers)] = {"archs_per_s": N_ARCHS / took, "seconds": times, "startup_s": ready, "nodes": nodes}
            print(where, "eval", workers, out[str(workers)], file=sys.stderr, flush=True)
    return out


def part_train(where: str) -> dict[str, Any]:
    from nasplat.datasets import DataSpec
    from nasplat.measure import connect_ray
    from nasplat.space import load_space
    from nasplat.train import TrainSettings, train_supernet_ray

    space = load_space(SPACE)
    data = DataSpec(name="digits", n_val=200, batch_size=32)
    settings = TrainSettings(epochs=EPOCHS, batch_size=32, lr=0.05, seed=0)
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(loopback_cluster(2)) if where == "cluster" else None
        if address is None:
            connect_ray(num_cpus=2)
        for workers in (1, 2):
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nsb-train-")))
            t0 = time.perf_counter()
            result = train_supernet_ray(space, data, settings, run_dir, workers=workers, ray_address=address)
            wall = time.perf_counter() - t0
            rates = [float(r["images_per_s"]) for r in result.history[1:]]
            out[str(workers)] = {"images_per_s": statistics.median(rates), "rates": rates, "wall_s": wall}
            print(where, "train", workers, out[str(workers)], file=sys.stderr, flush=True)
    return out


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql)")
    return candidates[-1].parent


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a free loopback port (as the tests' fixture starts one)."""
    import socket

    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="nsb-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                    "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


_ROUND_TRIP = """
import sys, time, optuna
from nasplat.study import make_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
study = optuna.create_study(study_name=name, storage=make_storage(url), load_if_exists=True)
d = optuna.distributions.FloatDistribution(0, 1)
sys.stdin.readline()  # every process starts its loop together
t0 = time.perf_counter()
for _ in range(n):
    t = study.ask({"x": d})
    study.tell(t, t.params["x"])
print((time.perf_counter() - t0) / n)
"""


def part_drivers(trials: int) -> dict[str, Any]:
    from nasplat.study import load_study, make_storage
    from nasplat.testing.faults import parallel_drivers

    out: dict[str, Any] = {}
    with postgres() as url:
        for m in (1, 3):
            folder = Path(tempfile.mkdtemp(prefix=f"nsb-drivers-{m}-"))
            url_m = url  # one database, one study per configuration (the run file names it 'faults')
            with contextlib.suppress(Exception):
                import optuna

                optuna.delete_study(study_name="faults", storage=make_storage(url_m))
            t0 = time.perf_counter()
            report = parallel_drivers(folder, trials=trials, drivers=m, storage=url_m)
            wall = time.perf_counter() - t0
            done = [t for t in load_study(make_storage(url_m), "faults").get_trials() if t.state.name == "COMPLETE"]
            ends = [t.datetime_complete for t in done if t.datetime_complete is not None]
            starts = [t.datetime_start for t in done if t.datetime_start is not None]
            span = (max(ends) - min(starts)).total_seconds()
            # storage round trip per trial, measured alone: m processes asking and telling at once
            cmd = [sys.executable, "-c", _ROUND_TRIP, url, f"rt-{m}", "60"]
            procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(m)]
            time.sleep(8.0)  # a benchmark, not a test: let the processes import before the loops start together
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            per_trial = [float(p.communicate(timeout=300)[0].strip()) for p in procs]
            out[str(m)] = {
                "complete": report.complete, "given_back": report.given_back, "duplicates": report.duplicates,
                "failed_drivers": report.failed_drivers, "wall_s": wall, "span_s": span,
                "trials_per_s": report.complete / span, "storage_ms_per_trial": 1000 * statistics.mean(per_trial),
            }  # fmt: skip
            print("drivers", m, out[str(m)], file=sys.stderr, flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    return out


def _checkpoint(folder: Path) -> str:
    """A small trained supernet (3 epochs in this process) for the evaluation part."""
    from nasplat.search import parse_run, prepare_supernet
    from nasplat.space import load_space

    run = parse_run(
        {
            "space": SPACE,
            "dataset": {"name": "digits", "n_val": 200, "batch_size": 64},
            "supernet": {"train": {"epochs": 3}},
            "objectives": [{"metric": "accuracy", "direction": "maximize"}],
            "trials": 1,
            "run_dir": str(folder),
        }
    )
    return str(prepare_supernet(run, load_space(SPACE), lambda _: None, progress=False))


def _run_part(args: list[str]) -> Any:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    sys.stderr.write("".join(ln + "\n" for ln in proc.stderr.splitlines() if ln.startswith(("one", "cluster",
                                                                                           "drivers"))))  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"part {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ page
def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _spread(times: Any) -> str:
    """Largest over smallest of the timed batches or epochs (1.00: steady; far above it: the shared cores'
    noise)."""
    if not isinstance(times, list) or len(times) < 2:
        return "-"
    return f"{max(times) / min(times):.2f}"


def write_page(results: dict[str, Any], path: Path, command: str) -> None:
    ev, tr, dr = results["eval"], results["train"], results["drivers"]
    lines = [
        "# Scale-out: evaluation actors, Ray Train workers, search drivers",
        "",
        f"Produced by `benchmarks/scale_out.py` ({command}), {results['date']}, on {results['machine']}; load "
        f"average {results['load_before']} before, {results['load_after']} after (the cores were shared with "
        "other work). The multi-node cluster is Ray's own test cluster (`ray.cluster_utils.Cluster`): a head with "
        "no CPUs (the driver's node) and worker nodes of one CPU each, every raylet its own node, all on 127.0.0.1 "
        "of this one machine with token authentication.",
        "",
        "**What limits these numbers.** Every node here shares the same 2 cores. Adding actors, workers or nodes "
        "beyond 2 cannot add compute; what the table shows past that point is what the distribution itself costs "
        "(scheduling, object transfer, all-reduce over loopback TCP, more processes on the same cores). The "
        "projection to N machines below says which of the costs grows with N.",
        "",
        f"## Evaluation throughput ({N_ARCHS} architectures, `supernet` estimator, cell-digits)",
        "",
        "Each actor builds the estimator once (loads the checkpoint and the data), then evaluates its share of each "
        "batch: inherit the path's weights, recalibrate BatchNorm on 2 batches, score 200 validation images. "
        "Architectures/s: the median over 3 batches of 48, after a warm-up batch; start-up is the pool's "
        "construction plus the warm-up; spread is the slowest timed batch over the fastest.",
        "",
        "| actors | one node: archs/s | spread | start-up s | cluster: archs/s | spread | start-up s | nodes used | "
        "cluster / one node |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in ("1", "2", "4"):
        a, b = ev["one"][w], ev["cluster"][w]
        lines.append(
            f"| {w} | {a['archs_per_s']:.2f} | {_spread(a['seconds'])} | {a['startup_s']:.1f} | {b['archs_per_s']:.2f} | "
            f"{_spread(b['seconds'])} | {b['startup_s']:.1f} | {b['nodes']} | {_ratio(b['archs_per_s'], a['archs_per_s'])} |"
        )
    one, cl = ev["one"], ev["cluster"]
    lines += [
        "",
        f"Speed-up over 1 actor: one node **{_ratio(one['2']['archs_per_s'], one['1']['archs_per_s'])}** (2), "
        f"**{_ratio(one['4']['archs_per_s'], one['1']['archs_per_s'])}** (4); cluster "
        f"**{_ratio(cl['2']['archs_per_s'], cl['1']['archs_per_s'])}** (2), "
        f"**{_ratio(cl['4']['archs_per_s'], cl['1']['archs_per_s'])}** (4).",
        "",
        "## Supernet training throughput (Ray Train, DDP over gloo, batch 32 per worker)",
        "",
        "Images/s inside epochs (median of epochs 2-5, each a full pass over the 1,237 training images; spread: "
        "the fastest epoch over the slowest); wall includes Ray Train's start-up. One node: a local cluster of 2 "
        "CPUs (1 worker gets 2 threads, 2 workers 1 each); cluster: 2 worker nodes of 1 CPU (1 thread per worker, "
        "each worker on its own node).",
        "",
        "| workers | one node: images/s | spread | wall s | cluster: images/s | spread | wall s | cluster / one node |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in ("1", "2"):
        a, b = tr["one"][w], tr["cluster"][w]
        lines.append(
            f"| {w} | {a['images_per_s']:.0f} | {_spread(a.get('rates'))} | {a['wall_s']:.1f} | "
            f"{b['images_per_s']:.0f} | {_spread(b.get('rates'))} | {b['wall_s']:.1f} | "
            f"{_ratio(b['images_per_s'], a['images_per_s'])} |"
        )
    lines += [
        "",
        f"2 workers over 1: one node **{_ratio(tr['one']['2']['images_per_s'], tr['one']['1']['images_per_s'])}**, "
        f"cluster **{_ratio(tr['cluster']['2']['images_per_s'], tr['cluster']['1']['images_per_s'])}**.",
        "",
        f"## Search drivers on one PostgreSQL study ({dr['1']['complete']} trials, tabular estimator)",
        "",
        "`nasplat search` drivers started together on the same run file (a PostgreSQL server on 127.0.0.1 started "
        "by the script, `fsync=off`); trials/s over the span from the first trial's start to the last one's end. "
        "Storage round trip: Optuna `ask` + `tell` through nasplat's storage, per trial, from 1 and from 3 "
        "processes at once (60 trials each).",
        "",
        "| drivers | complete | given back | duplicates | span s | trials/s | storage ms/trial | wall s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in ("1", "3"):
        d = dr[m]
        lines.append(
            f"| {m} | {d['complete']} | {d['given_back']} | {d['duplicates']} | {d['span_s']:.1f} | "
            f"{d['trials_per_s']:.2f} | {d['storage_ms_per_trial']:.1f} | {d['wall_s']:.1f} |"
        )
    lines += [
        "",
        f"3 drivers over 1: **{_ratio(dr['3']['trials_per_s'], dr['1']['trials_per_s'])}** trials/s; storage round "
        f"trip {_ratio(dr['3']['storage_ms_per_trial'], dr['1']['storage_ms_per_trial'])} as long.",
        "",
        "## Where the time goes, and the projection to N machines",
        "",
        "- **Evaluation** is embarrassingly parallel: each actor works on its own chunk; only architectures (a few "
        "hundred bytes each) and metrics cross the network, and the checkpoint and the data are loaded once per "
        "actor, at start-up (the start-up column: it grows with the actors here because they import torch and load "
        "on the same 2 cores at once; on N machines it stays one actor's start-up). A batch takes as long as its "
        "slowest chunk, so on N machines throughput grows about linearly in N while the batch holds several "
        "architectures per actor (`batch_size` in the run file: at least 2-4 per actor). With 1 actor, one node "
        "and cluster do the same thing (remote calls to one actor process of one thread), so the cluster / one "
        "node column at 1 actor shows how much the machine's load moved between the two parts, which ran minutes "
        "apart; read the other rows against it. On this machine 2 cores are the ceiling: a third and fourth actor "
        "only add processes to share them.",
        "- **Training** pays an all-reduce of every gradient per step (DDP over gloo; NCCL on GPUs) and rank 0's "
        "checkpoint write once per epoch, to the shared run folder. The cell-digits supernet is tiny (a step is a "
        "few milliseconds), so the all-reduce and Python's per-step overhead weigh as much as the compute, and "
        "on one 2-core machine 2 workers compete with 1 worker that uses both threads. On N machines the work per "
        "worker and step is fixed (batch per worker), the ring all-reduce moves about 2(N-1)/N of the gradient "
        "per worker and step, so images/s grows close to N when a step's compute dominates its gradient "
        "transfer (larger spaces and images, GPUs with NCCL) and flattens for tiny supernets like this one. The "
        "one-node 1-worker row is the only one whose worker runs 2 intra-op threads: on cores that other "
        "processes also use, such a worker keeps waiting for its own threads at every operation, so under load "
        "it loses far more than the 1-thread workers of the other rows (compare the rows only on a quiet "
        "machine).",
        "- **Search drivers** share one study: each trial costs a few storage round trips (ask, the claims check, "
        "tell, heartbeats). With the tabular estimator the storage is the whole work, so the 3-driver row measures "
        "the PostgreSQL server and the drivers' Python on the same 2 cores under 3 concurrent writers: the round "
        "trip per trial grows with the writers. With a real estimator (seconds per trial) the storage share is "
        "under 1 % and M drivers on M machines scale with M until the server's connections (`max_connections`) "
        "or its write rate (about 1000 / storage ms per trial, per driver) is reached; the budget stays exact "
        "(trials asked beyond it are given back before any evaluation), and 'duplicates' counts repeat proposals "
        "(completed trials of an architecture already completed), which take the stored result.",
        "",
        "**Published anchors.** PyTorch's DDP paper (Li et al., *PyTorch Distributed: Experiences on "
        "Accelerating Data Parallel Training*, VLDB 2020) reports near-linear scaling to 256 GPUs for ResNet-50 "
        "and BERT, networks whose step compute dominates the all-reduce; the cell-digits supernet here is the "
        "opposite case, a step of a few milliseconds. Optuna's documentation of distributed optimization (several "
        "processes on one RDB storage) promises a speed-up with the number of workers for objectives that take "
        "long against the storage's round trip, which is the condition the drivers' bullet states.",
        "",
        f"**Noise.** Load average {results['load_before']} before and {results['load_after']} after on 2 cores: "
        "other work shared the machine, so a ratio between two rows is only meaningful well beyond the spread "
        "column; the start-up and per-call overheads are the robust numbers here.",
        "",
        "Raw numbers: the JSON this script prints (`--json`).",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["eval", "train", "drivers"])
    parser.add_argument("--where", choices=["one", "cluster"], default="one")
    parser.add_argument("--checkpoint")
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench-scale-out.md")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--page-from", type=Path, help="only write the page from a JSON this script wrote")
    args = parser.parse_args()
    if args.page_from:
        write_page(json.loads(args.page_from.read_text()), args.out, f"`--trials {args.trials}`")
        return
    if args.part == "eval":
        print(json.dumps(part_eval(args.where, args.checkpoint)))
        return
    if args.part == "train":
        print(json.dumps(part_train(args.where)))
        return
    if args.part == "drivers":
        print(json.dumps(part_drivers(args.trials)))
        return
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="nsb-ckpt-") as tmp:
        ckpt = _checkpoint(Path(tmp))
        results: dict[str, Any] = {
            "eval": {w: _run_part(["--part", "eval", "--where", w, "--checkpoint", ckpt]) for w in ("one", "cluster")},
            "train": {w: _run_part(["--part", "train", "--where", w]) for w in ("one", "cluster")},
            "drivers": _run_part(["--part", "drivers", "--trials", str(args.trials)]),
        }
    import torch

    results.update(
        {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "load_before": load_before,
            "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        }
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    write_page(results, args.out, f"`--trials {args.trials}`")


if __name__ == "__main__":
    main()
