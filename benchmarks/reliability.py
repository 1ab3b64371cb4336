"""Fault and bad-input figures for docs/reliability.md: kill -9 of search drivers, parallel drivers on one
study, and the bad-input corpus, each counted (tries, lost, duplicated, clean).

    .venv/bin/python benchmarks/reliability.py --rounds 8 --out docs/reliability-figures.md
    .venv/bin/python benchmarks/reliability.py --postgres-url postgresql://127.0.0.1:5433/nasplat  # drivers on PG

Everything is seeded; the machine's load changes where a kill lands, not what must hold.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def kills(rounds: int, trials: int, per_round: int) -> list[str]:
    from nasplat.testing.faults import kill_and_resume

    rows = []
    totals = {"kills": 0, "mid": 0, "lost": 0, "dup": 0, "unretried": 0, "exact": 0, "clean": 0}
    for r in range(rounds):
        rng = np.random.default_rng(100 + r)
        at = sorted(rng.choice(np.arange(2, trials - 2), size=per_round, replace=False).tolist())
        with tempfile.TemporaryDirectory() as d:
            rep = kill_and_resume(Path(d), trials=trials, kill_at=at)
        clean = not rep.problems and rep.lost == 0 and rep.complete == trials and rep.unretried == 0
        totals["kills"] += rep.kills
        totals["mid"] += rep.landed_mid_batch
        totals["lost"] += rep.lost
        totals["dup"] += rep.duplicates
        totals["unretried"] += rep.unretried
        totals["exact"] += rep.complete == trials
        totals["clean"] += clean
        rows.append(
            f"| {r} | {at} | {rep.kills} | {rep.landed_mid_batch} | {rep.lost} | {rep.complete}/{trials} | "
            f"{rep.unretried} | {rep.duplicates} | {'yes' if clean else 'NO: ' + '; '.join(rep.problems)} |"
        )
        print(rows[-1], flush=True)
    return [
        "## Search driver killed with SIGKILL, then resumed",
        "",
        f"{rounds} rounds of a {trials}-trial search (tabular estimator on `cell-digits`, random sampler, batches of 4);",
        f"each round kills {per_round} successive drivers once the study shows the seeded number of completed trials,",
        "then a last driver finishes. *held*: kills that landed while the driver held running trials.",
        "",
        "| round | killed at (completed trials) | kills | held | finished lost or changed | completed/budget | "
        "held trials never re-queued | repeated architectures | clean |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Totals: {totals['kills']} kills ({totals['mid']} while trials were held), {totals['lost']} finished trials lost "
        f"or changed, budget exact in {totals['exact']}/{rounds} rounds, {totals['unretried']} held trials never "
        f"re-queued, {totals['dup']} repeated architectures, {totals['clean']}/{rounds} rounds clean.",
        "",
    ]


def drivers(rounds: int, trials: int, n: int, storage: str | None) -> list[str]:
    from nasplat.testing.faults import parallel_drivers

    rows = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            url = None
            if storage:
                url = storage
                _drop(storage)
            t0 = time.perf_counter()
            rep = parallel_drivers(Path(d), trials=trials, drivers=n, storage=url, seed=r)
            secs = time.perf_counter() - t0
        rows.append(
            f"| {r} | {storage.split('://')[0] if storage else 'sqlite'} | {n} | {rep.complete}/{trials} | "
            f"{rep.given_back} | {rep.duplicates} | {rep.failed_drivers} | {secs:.0f} |"
        )
        print(rows[-1], flush=True)
    return [
        f"## {n} drivers on one study at once",
        "",
        f"{rounds} rounds; the drivers start together with the same run file and seed ({trials} trials, batches of 4).",
        "",
        "| round | storage | drivers | completed/budget | asked past the budget, given back | repeated architectures | "
        "drivers failed | seconds |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _drop(url: str) -> None:
    import optuna

    from nasplat.study import make_storage

    storage = make_storage(url)
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if s.study_name == "faults":
            optuna.delete_study(study_name="faults", storage=storage)


def corpus() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_bad_input.py")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    return [
        "## Bad-input corpus",
        "",
        "`tests/test_bad_input.py` runs every file of `tests/bad_inputs/` and `tests/bad_spaces/` through the real",
        "CLI (space files, run files, CLI arguments, tables, `state.json`) and asserts exit code 2 (or 1), one line,",
        "no traceback, the file and key named.",
        "",
        f"Result: `{summary[-1].strip() if summary else proc.stdout.strip()[-200:]}`",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--kills-per-round", type=int, default=4)
    ap.add_argument("--drivers", type=int, default=3)
    ap.add_argument("--postgres-url", default=None, help="also run the parallel drivers on this PostgreSQL database")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability-figures.md")
    args = ap.parse_args()
    lines = [
        "# Reliability figures",
        "",
        f"Produced by `benchmarks/reliability.py` on {platform.node()} ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}. What each promise means: docs/reliability.md.",
        "",
    ]
    lines += kills(args.rounds, args.trials, args.kills_per_round)
    lines += drivers(max(2, args.rounds // 2), args.trials, args.drivers, None)
    if args.postgres_url:
        lines += drivers(max(2, args.rounds // 2), args.trials, args.drivers, args.postgres_url)
    lines += corpus()
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
