"""End to end: a tiny quickstart (digits, the small cell space) from YAML space to exported bundle, resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nasplat.cli import run_quickstart
from nasplat.study import load_study, make_storage, pareto_frame

SPACE = str(Path(__file__).parent / "spaces" / "cell-digits.yaml")


@pytest.mark.slow
def test_tiny_quickstart_end_to_end_and_continue(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    logs: list[str] = []
    summary = run_quickstart(
        out,
        dataset="digits",
        space=SPACE,
        epochs=8,
        trials=12,
        n_val=300,
        n_train=1100,
        log=logs.append,
        trust_archs=3,
        trust_steps=3,
    )

    storage = make_storage(f"sqlite:///{out / 'study.db'}")
    study = load_study(storage, "quickstart")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 12
    for t in complete:
        acc, macs = t.values
        assert 0.0 <= acc <= 100.0 and macs > 0
        assert t.user_attrs["arch_string"].startswith("|")
        assert t.user_attrs["provenance"]["space_hash"] == study.user_attrs["space_hash"]
    # a supernet trained for eight short epochs on digits is well above chance (10 %) for its best subnet
    assert max(t.values[0] for t in complete) > 40.0
    front, _ = pareto_frame(study)
    assert 1 <= len(front) <= 12
    # the estimate was checked: 3 architectures trained from scratch, the exported one among them, and the
    # rank agreement is in the study (what nasplat pareto and the dashboard show) and in the summary
    trust = study.user_attrs["finetune:summary"]
    assert summary["exported_trial"] in trust["trials"] and len(trust["trials"]) == summary["trust"]["n"] == 3
    assert trust["from_scratch"] is True
    assert any(line.startswith("estimate trust: ") and "over 3 architectures" in line for line in logs), logs
    assert any(f"exported trial {summary['exported_trial']}: inherited accuracy" in line for line in logs), logs
    # the exported network learns something in its cells: more parameters than the space's smallest cell
    from nasplat import registry
    from nasplat.export import study_space

    space, cost = study_space(study), registry.build("cost_model", "analytical")
    exported = next(t for t in complete if t.number == summary["exported_trial"])
    floor = cost.estimate(space, space.family.extremes(space)[1])["params_count"]
    if any(cost.estimate(space, space.from_key(k))["params_count"] > floor for k in front["arch_key"]):
        assert cost.estimate(space, space.from_key(exported.user_attrs["arch_key"]))["params_count"] > floor

    bundle = Path(summary["bundle"])
    for name in (
        "weights.safetensors",
        "model.py",
        "config.json",
        "arch.json",
        "metrics.json",
        "load.py",
        "model.onnx",
    ):
        assert (bundle / name).is_file(), name
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert "accuracy" in json.dumps(metrics)

    # the exported model runs from the bundle alone, in a process that never imports nasplat
    code = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('l', r'{bundle / 'load.py'}')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"model = m.load(r'{bundle}')\n"
        "y = model(torch.zeros(3, 1, 8, 8))\n"
        "assert y.shape == (3, 10), y.shape\n"
        "assert not [k for k in sys.modules if k.startswith('nasplat')]\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr

    # running the same run file again with a larger budget continues: no retraining, 12 trials kept
    run_file = Path(summary["run_file"])
    ckpt_mtime = Path(summary["checkpoint"]).stat().st_mtime
    proc = subprocess.run(
        [sys.executable, "-m", "nasplat.cli", "search", str(run_file), "--resume", "--n-trials", "16"],
        capture_output=True, text=True, cwd=Path.cwd(), timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "12 of 16 trials done" in proc.stdout
    study = load_study(make_storage(f"sqlite:///{out / 'study.db'}"), "quickstart")
    numbers = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(numbers) == 16 and set(range(12)) <= set(numbers)
    assert Path(summary["checkpoint"]).stat().st_mtime == ckpt_mtime
