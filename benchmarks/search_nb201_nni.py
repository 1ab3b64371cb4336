"""NNI 3.0's multi-trial strategies on the NAS-Bench-201 table, written as ``nasplat bench tabular`` trajectories.

Runs in its own environment (``bash benchmarks/nni_env.sh`` makes ``.venv-nni``): NNI 3.0 pins an old filelock
and its RL strategy needs tianshou 0.5 and gym, so it stays out of nasplat's install.

The space is NNI's own NAS-Bench-201 model space (``nni.nas.hub.pytorch.NasBench201``: six edges
``cell/{from}_{to}``, five operations each). Evaluating a sample is a look-up of its row in the table
(``val_acc`` is reported to the strategy as the final metric; the model is never built). The strategies are NNI's
own classes from ``nni.nas.strategy``, driven by NNI's sequential execution engine in this process.

Budget = distinct cells evaluated, as in ``nasplat bench tabular``: a cell a strategy proposes again is answered
from a cache (the strategy still gets its metric) and does not use budget; a run stops at ``budget`` distinct
cells or after ``20 * budget`` proposals. Every distinct evaluation writes one JSON line
``{"sampler", "seed", "step", "arch", "val_acc", "seconds"}`` with ``arch`` in the table's string form, so
``benchmarks/search_nb201.py --nni-trajectories FILE`` scores them with the same regret code.

Usage (in .venv-nni): python benchmarks/search_nb201_nni.py --out runs/nni-nb201.jsonl [--strategies
random,evolution,evolution-p20,tpe,rl] [--seeds 0-19] [--budget 300] [--check-table]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NASPLAT_DATA_DIR", REPO.parent / "shared" / "data")) / "nb201"

# NNI's hub space names two operations differently from the NAS-Bench-201 table.
OP_TO_TABLE = {
    "none": "none",
    "skip_connect": "skip_connect",
    "conv_1x1": "nor_conv_1x1",
    "conv_3x3": "nor_conv_3x3",
    "avg_pool_3x3": "avg_pool_3x3",
}
N_NODES = 4  # input node 0, intermediate nodes 1-2, output node 3
PROPOSALS_PER_BUDGET = 20  # the same cap on repeated proposals as nasplat.search.run_tabular


def arch_string(sample: dict[str, Any]) -> str:
    """The table's form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` of a sample ``{'cell/{from}_{to}': op}``."""
    nodes = []
    for to in range(1, N_NODES):
        nodes.append("|" + "|".join(f"{OP_TO_TABLE[sample[f'cell/{fr}_{to}']]}~{fr}" for fr in range(to)) + "|")
    return "+".join(nodes)


def load_table(path: Path) -> dict[str, float]:
    import csv

    with path.open() as f:
        return {row["arch"]: float(row["val_acc"]) for row in csv.DictReader(f)}


def check_table(val_of: dict[str, float]) -> None:
    """Every sample of NNI's space maps to a distinct table row and every row is reached."""
    import itertools

    labels = [f"cell/{fr}_{to}" for to in range(1, N_NODES) for fr in range(to)]
    strings = {arch_string(dict(zip(labels, ops))) for ops in itertools.product(OP_TO_TABLE, repeat=len(labels))}
    missing = strings - val_of.keys()
    extra = val_of.keys() - strings
    print(f"{len(strings)} samples of the NNI space, {len(val_of)} table rows; "
          f"not in table: {len(missing)}, table rows not reached: {len(extra)}", file=sys.stderr)  # fmt: skip
    if missing or extra:
        raise SystemExit("the NNI space and the table disagree")


def quiet_nni() -> None:
    """NNI logs every trial at INFO and warns about the newer torch/numpy/gym; keep warnings of its own only."""
    warnings.filterwarnings("ignore")
    import nni.nas.strategy  # noqa: F401 - sets up NNI's log handlers, then lower them

    logging.getLogger("nni").setLevel(logging.WARNING)


def make_strategy(name: str, seed: int) -> Any:
    """NNI's own strategies with their default settings (plus the seed where the class takes one)."""
    import nni.nas.strategy as st

    if name == "random":
        return st.Random(dedup=True, seed=seed)
    if name == "evolution":
        return st.RegularizedEvolution(seed=seed, dedup=True)
    if name == "evolution-p20":  # nasplat's evolution sampler's population and tournament sizes
        return st.RegularizedEvolution(population_size=20, sample_size=5, seed=seed, dedup=True)
    if name == "tpe":
        return st.TPE(optimize_mode="maximize", seed=seed)
    if name == "rl":
        # PolicyBasedRL takes no seed: its PPO policy draws from torch's global generator, seeded per run here.
        import numpy as np
        import torch

        torch.manual_seed(seed)
        np.random.seed(seed)
        return st.PolicyBasedRL()
    raise SystemExit(f"unknown strategy '{name}' (random, evolution, evolution-p20, tpe, rl)")


def run_one(
    name: str, seed: int, budget: int, val_of: dict[str, float], emit: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """One seed of one strategy; returns a summary (distinct cells, proposals, seconds)."""
    import nni
    from nni.nas.evaluator import Evaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import hpo

    # HPOTunerStrategy (TPE) sleeps 1 s between proposals, waiting for a remote trial; the sequential engine has
    # already finished the trial when submit_models returns, so the wait only costs wall time.
    hpo.time = types.SimpleNamespace(sleep=lambda _s: None)  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    seen: dict[str, float] = {}
    proposals = 0

    class TableLookup(Evaluator):
        """Looks the sample's cell up in the table instead of training it (no model is instantiated)."""

        def evaluate(self, model: Any) -> Any:  # pragma: no cover - _execute is used
            raise NotImplementedError

        def _execute(self, model: Any) -> Any:
            nonlocal proposals
            proposals += 1
            arch = arch_string(model.sample)
            if arch not in seen:
                seen[arch] = val_of[arch]
                emit({"sampler": f"nni-{name}", "seed": seed, "step": len(seen), "arch": arch,
                      "val_acc": seen[arch], "seconds": round(time.perf_counter() - t0, 4)})  # fmt: skip
            nni.report_final_result(seen[arch])
            return seen[arch]

    class DistinctBudgetEngine(SequentialExecutionEngine):
        def budget_available(self) -> bool:
            return len(seen) < budget and proposals < PROPOSALS_PER_BUDGET * budget

    space = RawFormatModelSpace.from_model(NasBench201(), TableLookup())
    engine = DistinctBudgetEngine()
    strategy = make_strategy(name, seed)
    strategy.initialize(space, engine)
    strategy.run()
    engine.shutdown()
    return {"strategy": name, "seed": seed, "distinct": len(seen), "proposals": proposals,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--strategies", default="random,evolution,evolution-p20,tpe,rl")
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--table", type=Path, default=DATA / "cifar10-12epoch.csv")
    ap.add_argument("--out", type=Path, default=None, help="trajectories, one JSON line per distinct evaluation")
    ap.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    ap.add_argument("--check-table", action="store_true", help="only check that the space matches the table")
    args = ap.parse_args()
    quiet_nni()
    import torch

    torch.set_num_threads(1)
    val_of = load_table(args.table)
    check_table(val_of)
    if args.check_table:
        return
    if args.out is None:
        ap.error("--out is required (unless --check-table)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a" if args.append else "w") as f:

        def emit(rec: dict[str, Any]) -> None:
            f.write(json.dumps(rec) + "\n")

        for name in args.strategies.split(","):
            for seed in parse_seeds(args.seeds):
                summary = run_one(name, seed, args.budget, val_of, emit)
                f.flush()
                print(json.dumps(summary), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
