"""What the conformance runner knows: the tiny spaces, how to parametrize over the registry, and overrides.

Every registered component is run (``nasplat.registry.available(role)``); nothing here lists them. The tables
below only add what a component cannot tell by itself: how to prepare what it needs (a trained ControlNet base,
a supernet checkpoint, a benchmark or lookup table), options that make a slow one fast on tiny spaces, and
known bugs (strict xfails: fixing the bug makes the case fail until its entry is removed).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from nasplat import registry
from nasplat.space import SearchSpace, load_space

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"


@functools.cache
def tiny_files() -> tuple[str, ...]:
    """The tiny test spaces (file names in ``tests/spaces``)."""
    return tuple(sorted(p.name for p in SPACES_DIR.glob("*.yaml")))


@functools.cache
def family_of(file: str) -> str:
    return str(yaml.safe_load((SPACES_DIR / file).read_text())["family"])


# --------------------------------------------------------------------------------------------------------------
# the tiny spaces, prepared once per session (in a private copy of tests/spaces)


def _train_controlnet_base(space: SearchSpace) -> None:
    """A ControlNet space names a base UNet's weights file: train one briefly next to the space's copy."""
    from nasplat_search_spaces.controlnet import train_base

    train_base(space, dataset="digits", n_val=64, steps=2, batch_size=16, log=None)


#: Family -> what a space of it needs before its supernet can be built.
PREPARE: dict[str, Callable[[SearchSpace], None]] = {"controlnet": _train_controlnet_base}

_folder: Path | None = None


def workdir() -> Path:
    """A folder for this session's prepared files (removed at exit)."""
    global _folder
    if _folder is None:
        import atexit

        _folder = Path(tempfile.mkdtemp(prefix="nasplat-plugins-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder


@functools.cache
def tiny(file: str) -> SearchSpace:
    """The tiny space ``file``, loaded from this session's copy of ``tests/spaces`` and prepared for its family."""
    copy = workdir() / "spaces"
    if not copy.is_dir():
        shutil.copytree(SPACES_DIR, copy)
    space = load_space(copy / file)
    prepare = PREPARE.get(space.spec.family)
    if prepare is not None:
        prepare(space)
    return space


def one_per_family() -> list[str]:
    """One tiny space per registered family (the first file of each), for the costlier suites."""
    out = []
    for fam in registry.available("family"):
        files = [f for f in tiny_files() if family_of(f) == fam]
        if files:
            out.append(files[0])
    return out


# --------------------------------------------------------------------------------------------------------------
# known bugs

#: (role, component, space file) -> reason: the component fails its suite on that space (a real bug, not fixed
#: here). Strict: once it is fixed, the case reports XPASS as a failure until its entry goes.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}
for _file in ("quant-cell-digits.yaml", "quant-resnet-digits.yaml"):
    KNOWN_BUGS[("encoder", "zc", _file)] = (
        "quant's stand-alone layers decode their weights to float32 (search_spaces/quant/standalone.py "
        "decode_weight), so the network cannot run in float64 as the zero-cost synflow proxy runs it "
        "(net.double()): RuntimeError 'expected scalar type Double but found Float'"
    )


def cases(role: str, files: list[str] | tuple[str, ...], checks: Any, *, extra: tuple[Any, ...] = ()) -> Iterator[Any]:
    """``pytest.param(name, file, *extra, check)`` for every registered ``role`` component x space x check."""
    for name in registry.available(role):
        for file in files:
            for x in extra or (None,):
                for check in checks:
                    reason = KNOWN_BUGS.get((role, name, file))
                    marks = [pytest.mark.xfail(reason=reason, strict=True, raises=Exception)] if reason else []
                    args = (name, file, x, check) if extra else (name, file, check)
                    ident = "-".join(str(a) for a in args)
                    yield pytest.param(*args, id=ident, marks=marks)


# --------------------------------------------------------------------------------------------------------------
# estimators: what each needs


def _supernet_estimator(space: SearchSpace, folder: Path) -> dict[str, Any]:
    """A supernet checkpoint trained for one step on a few digits images, and the data to evaluate on."""
    from nasplat.datasets import DataSpec, load_splits
    from nasplat.train import TrainSettings, train_supernet

    data = DataSpec(name="digits", n_train=64, n_val=32, batch_size=32)
    train, _ = load_splits(data)
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.05, seed=0, max_steps_per_epoch=1)
    net = space.family.build_supernet(space, seed=0)
    train_supernet(net, space.family.task(space), train, settings, folder / "run", progress=False)
    return {"checkpoint": folder / "run", "data": data, "calib_batches": 1, "eval_batch_size": 32}


def _tabular_estimator(space: SearchSpace, folder: Path) -> dict[str, Any]:
    """A benchmark table holding the architectures the suite evaluates (``sample_archs``)."""
    import pandas as pd

    from nasplat.testing import sample_archs

    archs = sample_archs(space, 3)
    rows = [{"arch": space.to_string(a), "val_acc": 50.0 + i, "loss": 1.0 / (i + 1)} for i, a in enumerate(archs)]
    path = folder / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return {"table": str(path)}


def _combined_estimator(space: SearchSpace, folder: Path) -> dict[str, Any]:
    """The supernet's options, a reference of 4 architectures and 2 anchors trained 2 steps each."""
    small = {"reference": 4, "anchors": 2, "anchor_steps": 2, "anchor_batch_size": 16}
    return {**_supernet_estimator(space, folder), **small, "zero_cost": {"batch_size": 4, "reference": 4}}


#: Estimator -> (space, folder) -> the options to build it with.
ESTIMATOR_SETUPS: dict[str, Callable[[SearchSpace, Path], dict[str, Any]]] = {
    "supernet": _supernet_estimator,
    "combined": _combined_estimator,
    "tabular": _tabular_estimator,
}


@functools.cache
def estimator_options(name: str, file: str) -> dict[str, Any]:
    setup = ESTIMATOR_SETUPS.get(name)
    if setup is None:
        return {}
    folder = workdir() / "estimators" / name / file
    folder.mkdir(parents=True, exist_ok=True)
    return setup(tiny(file), folder)


# --------------------------------------------------------------------------------------------------------------
# cost models


def _lookup_table(space: SearchSpace, folder: Path) -> dict[str, Any]:
    """A lookup table for device 'conformance-box' holding every layer of the architectures the suite costs."""
    from nasplat.testing import sample_archs
    from nasplat_estimators.lut import LookupTable

    keys = {r.config_key: None for a in sample_archs(space, 3) for r in space.family.layers(space, a)}
    entries = {k: (0.01 * (i + 1), 0.001) for i, k in enumerate(keys)}
    table = LookupTable("conformance-box", space.name, space.hash, "eager", 1, 1, entries=entries, overhead_ms=0.05)
    return {"tables": [str(table.write(folder / "table.csv"))]}


@dataclass(frozen=True)
class CostModelCase:
    """How the runner builds and checks one cost model (defaults: no options, deterministic, every device)."""

    setup: Callable[[SearchSpace, Path], dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = True
    first_device_only: bool = False  # measuring is slow: cost on the first listed device only


_MEASURED = CostModelCase(options={"warmup": 1, "repeats": 2}, deterministic=False, first_device_only=True)
#: Cost model -> how to run it (models without an entry get the defaults).
COST_MODEL_CASES: dict[str, CostModelCase] = {
    "lut": CostModelCase(setup=_lookup_table),
    "measured": _MEASURED,
    "measured_onnx": _MEASURED,
}


@functools.cache
def cost_model_options(name: str, file: str) -> dict[str, Any]:
    case = COST_MODEL_CASES.get(name, CostModelCase())
    options = dict(case.options)
    if case.setup is not None:
        folder = workdir() / "cost_models" / name / file
        folder.mkdir(parents=True, exist_ok=True)
        options.update(case.setup(tiny(file), folder))
    return options


# --------------------------------------------------------------------------------------------------------------
# options that make slow components fast on tiny spaces (the code paths stay the same)

_SMALL_CANDIDATES = [
    {"model": "gbdt", "params": {"n_estimators": 20}},
    {"model": "gp", "params": {"encoder": "onehot", "restarts": 0}},
]
PREDICTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "auto": {"folds": 2, "candidates": _SMALL_CANDIDATES, "blend": 2},
    "auto_zc": {"folds": 2, "candidates": _SMALL_CANDIDATES, "blend": 2},
    "gbdt": {"n_estimators": 30},
    "mlp": {"members": 2, "epochs": 40, "hidden": 16},
    "mlp_rank": {"members": 2, "epochs": 40, "hidden": 16},
    "gp": {"restarts": 0},
    "fewshot_latency": {"reference_size": 50},
}

#: Samplers: model-based proposals start within the suite's trials.
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 3},
    "gp": {"n_startup_trials": 6},  # a Gaussian process fit per trial is slow: two of the eight
    "nsga2": {"population_size": 4},
    "nsga3": {"population_size": 4},
    "evolution": {"population_size": 4, "tournament_size": 2},
    "guided": {"n_init": 3, "candidates": 30, "predictor_params": {"n_estimators": 20}},
}
