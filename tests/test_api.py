"""The README's Python section runs as written, and the API's names are the ones ``nasplat.__all__`` lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

import nasplat

ROOT = Path(__file__).parent.parent


def readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_all_names_exist() -> None:
    import nasplat.export
    import nasplat.pareto
    import nasplat.search  # submodules must not shadow the API's functions

    for name in nasplat.__all__:
        assert hasattr(nasplat, name), name
        assert type(getattr(nasplat, name)).__name__ != "module", name
    assert {"run_search", "load_run", "pareto_front", "trials", "export_trial", "components", "train_supernet"} <= set(
        nasplat.__all__
    )


def test_components_lists_every_role() -> None:
    comps = nasplat.components()
    assert {"sampler", "estimator", "cost_model", "family", "strategy"} <= set(comps)
    assert {"nsga2", "guided", "evolution"} <= set(comps["sampler"])
    assert "analytical" in comps["cost_model"]


def test_readme_python_section_runs(tmp_path: Path) -> None:
    run = {
        "space": str(ROOT / "tests" / "spaces" / "cell-digits.yaml"),
        "dataset": {"name": "digits", "n_train": 400, "n_val": 200, "batch_size": 64},
        "supernet": {"train": {"epochs": 1, "lr": 0.05}},
        "estimator": {"name": "supernet", "options": {"calib_batches": 2}},
        "objectives": [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "macs", "direction": "minimize", "cost_model": "analytical"},
        ],
        "sampler": {"name": "nsga2", "options": {"population_size": 4}},
        "trials": 8,
        "batch_size": 4,
        "run_dir": str(tmp_path / "run"),
        "study": "api",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    proc = subprocess.run(
        [sys.executable, "-c", readme_python()], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "nsga2" in proc.stdout and "accuracy" in proc.stdout
    assert "model.onnx" in proc.stdout and "load.py" in proc.stdout
    front = nasplat.pareto_front(f"sqlite:///{tmp_path / 'run' / 'study.db'}", "api")
    assert len(front) >= 1 and {"accuracy", "macs", "arch"} <= set(front.columns)
    assert len(nasplat.trials(f"sqlite:///{tmp_path / 'run' / 'study.db'}", "api")) == 8
