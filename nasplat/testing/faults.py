"""Fault injection for searches: kill -9 a real `nasplat search` driver at seeded points, resume, and check
what nasplat promises (docs/reliability.md): nothing finished is lost or changed, the study ends with exactly
its budget of completed trials, no architecture is evaluated twice beyond what the cache absorbs, and every
trial a dead driver held is queued again once.

Used by ``tests/test_faults.py`` (a few kills) and ``benchmarks/reliability.py`` (many, with figures)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def tabular_run(folder: Path, *, trials: int, sampler: str = "random", seed: int = 0, batch_size: int = 4) -> Path:
    """A run file searching tests' ``cell-digits`` space over a seeded random table (no training: fast)."""
    from nasplat.space import load_space

    space_file = Path(__file__).resolve().parents[2] / "tests" / "spaces" / "cell-digits.yaml"
    space = load_space(space_file)
    table = folder / "table.csv"
    if not table.exists():
        rng = np.random.default_rng(0)
        rows = [f'"{space.to_string(a)}",{rng.random():.6f},{rng.random():.6f}' for a in space.enumerate()]
        table.write_text("arch,acc,lat\n" + "\n".join(rows) + "\n")
    run = {
        "space": str(space_file),
        "dataset": {"name": "digits", "n_val": 100},
        "estimator": {
            "name": "tabular",
            "options": {"table": str(table), "columns": {"acc": "maximize", "lat": "minimize"}},
        },
        "objectives": [{"metric": "acc", "direction": "maximize"}, {"metric": "lat", "direction": "minimize"}],
        "sampler": {"name": sampler},
        "trials": trials,
        "batch_size": batch_size,
        "run_dir": str(folder / "run"),
        "study": "faults",
        "seed": seed,
        "heartbeat_s": 1,
        "grace_s": 30,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


@dataclass
class KillReport:
    """What one run of :func:`kill_and_resume` saw."""

    kills: int = 0
    landed_mid_batch: int = 0
    lost: int = 0  # finished trials missing or changed after the resume
    complete: int = 0
    budget: int = 0
    duplicates: int = 0  # completed trials beyond the first of the same architecture that were not retries
    unretried: int = 0  # trials a dead driver held that were never queued again
    problems: list[str] = field(default_factory=list)


def _trials(url: str) -> list[Any]:
    from nasplat.study import load_study, make_storage

    try:
        return list(load_study(make_storage(url), "faults").get_trials(deepcopy=False))
    except Exception:  # the study may not exist yet, or be mid-creation
        return []


def kill_and_resume(folder: Path, *, trials: int, kill_at: list[int], timeout_s: float = 300.0) -> KillReport:
    """Run the search in ``folder``, SIGKILL the driver once it has completed ``k`` trials for each ``k`` in
    ``kill_at`` (a new driver each time), then let a last driver finish; check the study."""
    run_file = tabular_run(folder, trials=trials)
    url = f"sqlite:///{folder / 'run' / 'study.db'}"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "nasplat.cli", "search", str(run_file)]
    report = KillReport(budget=trials)
    finished: dict[int, tuple[float, ...]] = {}
    held: set[int] = set()
    for k in kill_at:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            now = _trials(url)
            if sum(t.state.name == "COMPLETE" for t in now) >= k:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                report.kills += 1
                break
            time.sleep(0.02)  # polling the study: the kill point is what the study shows, not a time
        else:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                report.problems.append(f"driver never reached {k} completed trials")
        snapshot = _trials(url)
        running = {t.number for t in snapshot if t.state.name == "RUNNING"}
        report.landed_mid_batch += bool(running)
        held |= running
        for t in snapshot:
            if t.state.name == "COMPLETE":
                finished[t.number] = tuple(t.values)
    last = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if last.returncode != 0:
        report.problems.append(f"final driver exited {last.returncode}: {last.stderr.strip()[-300:]}")
    after = {t.number: t for t in _trials(url)}
    for number, values in finished.items():
        t = after.get(number)
        if t is None or t.state.name != "COMPLETE" or tuple(t.values) != values:
            report.lost += 1
    complete = [t for t in after.values() if t.state.name == "COMPLETE"]
    report.complete = len(complete)
    retried_from = {t.system_attrs.get("failed_trial") for t in after.values()} | {
        h for t in after.values() for h in t.system_attrs.get("retry_history", [])
    }
    report.unretried = len([n for n in held if n not in retried_from and after[n].state.name != "COMPLETE"])
    fresh = [t for t in complete if t.system_attrs.get("failed_trial") is None]
    counts = Counter(str(t.user_attrs.get("arch_key")) for t in fresh)
    report.duplicates = sum(c - 1 for c in counts.values())
    if any(t.state.name in ("RUNNING", "WAITING") for t in after.values()):
        report.problems.append("trials left running or waiting")
    return report


@dataclass
class DriversReport:
    """What :func:`parallel_drivers` saw."""

    drivers: int = 0
    complete: int = 0
    budget: int = 0
    given_back: int = 0  # trials asked beyond the budget and given back before any evaluation
    duplicates: int = 0  # completed trials of an architecture another completed trial already had
    failed_drivers: int = 0
    problems: list[str] = field(default_factory=list)


def parallel_drivers(
    folder: Path, *, trials: int, drivers: int, storage: str | None = None, seed: int = 0
) -> DriversReport:
    """Start ``drivers`` `nasplat search` processes on one study at once (the same run file and seed) and check
    the study once they have all finished."""
    run_file = tabular_run(folder, trials=trials, seed=seed)
    if storage is not None:
        data = yaml.safe_load(run_file.read_text())
        data["storage"] = storage
        run_file.write_text(yaml.safe_dump(data))
    url = storage or f"sqlite:///{folder / 'run' / 'study.db'}"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "nasplat.cli", "search", str(run_file)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(drivers)
    ]
    report = DriversReport(drivers=drivers, budget=trials)
    for p in procs:
        _out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            report.failed_drivers += 1
            report.problems.append(err.strip()[-300:])
    from nasplat.study import load_study, make_storage

    after = load_study(make_storage(url), "faults").get_trials(deepcopy=False)
    complete = [t for t in after if t.state.name == "COMPLETE"]
    report.complete = len(complete)
    report.given_back = sum(
        1
        for t in after
        if t.state.name == "PRUNED" and str(t.user_attrs.get("rejected", "")).startswith("over the study")
    )
    counts = Counter(str(t.user_attrs.get("arch_key")) for t in complete)
    report.duplicates = sum(c - 1 for c in counts.values())
    return report
