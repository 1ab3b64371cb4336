"""The run file: one validated declaration of a search (space, data, supernet, objectives, sampler, budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nasplat.datasets import DataSpec
from nasplat.space import read_yaml_mapping, register_schema, spec_error_from_validation
from nasplat.train import TrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SupernetSection(_Strict):
    checkpoint: str | None = Field(default=None, description="an existing run or checkpoint dir; else train")
    train: TrainSettings | None = Field(
        default=None,
        description="training settings (nasplat.train.TrainSettings); seed, batch_size and augment "
        "default to the run's seed and the dataset's batch_size and augment",
    )
    workers: int | None = Field(
        default=None, ge=1, description="Ray Train workers (DDP); default: train in the searching process"
    )
    ray_address: str | None = Field(default=None, description="join this Ray cluster to train (default: local)")
    max_failures: int = Field(default=3, ge=0, description="worker-group restarts allowed before giving up")


class EstimatorSection(_Strict):
    name: str = "supernet"
    options: dict[str, Any] = Field(default_factory=dict)


class Objective(_Strict):
    metric: str = Field(description="a metric of the estimator or of the cost model named here")
    direction: Literal["maximize", "minimize"]
    cost_model: str | None = Field(default=None, description="take the metric from this cost model")
    device: str | None = None

    @property
    def source(self) -> str:
        return f"cost_model:{self.cost_model}" if self.cost_model else "estimator"


class Constraint(_Strict):
    """A bound every reported trial must meet, e.g. ``{metric: latency_ms, max: 5, cost_model: roofline}``.

    Passed to the sampler through Optuna's constraint API (``trial.set_constraint``): samplers that support
    constraints (nsga2, nsga3, tpe, gp, evolution) steer away from infeasible trials, and the Pareto front
    only holds feasible ones.
    """

    metric: str
    max: float | None = None
    min: float | None = None
    cost_model: str | None = Field(default=None, description="take the metric from this cost model")
    device: str | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Constraint:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self

    @property
    def name(self) -> str:
        return f"{self.metric}<={self.max}" if self.max is not None else f"{self.metric}>={self.min}"

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (<= 0: feasible), as Optuna's constraints want it."""
        return value - self.max if self.max is not None else float(self.min) - value  # type: ignore[arg-type]


class SamplerSection(_Strict):
    name: str = "nsga2"
    options: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Strict):
    """A search run. In a run file, relative paths are taken relative to the file (:func:`resolve_run_paths`)."""

    space: str = Field(description="a registered space name or a YAML path")
    dataset: DataSpec
    supernet: SupernetSection = Field(default_factory=SupernetSection)
    estimator: EstimatorSection = Field(default_factory=EstimatorSection)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    sampler: SamplerSection = Field(default_factory=SamplerSection)
    trials: int = Field(ge=1, description="total completed trials wanted in the study")
    batch_size: int = Field(default=8, ge=1, description="architectures proposed and evaluated together")
    workers: int = Field(default=1, ge=1, description="Ray actors evaluating each batch (1: in this process)")
    ray_address: str | None = Field(default=None, description="join this Ray cluster (default: a local one)")
    run_dir: str = "nasplat-runs/default"
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite file in run_dir")
    study: str = Field(
        default="default", min_length=1, max_length=512, description="study name (Optuna stores at most 512 characters)"
    )
    seed: int = 0
    heartbeat_s: int = Field(default=10, ge=1, description="running trials prove they are alive this often")
    grace_s: int = Field(default=60, ge=1, description="a running trial silent this long has lost its worker")

    @model_validator(mode="before")
    @classmethod
    def _train_defaults(cls, data: Any) -> Any:
        """``supernet.train`` takes the run's seed and the dataset's batch size and augmentation unless it sets them."""
        if not isinstance(data, dict):
            return data
        sup, ds = data.get("supernet"), data.get("dataset")
        if not isinstance(sup, dict) or not isinstance(sup.get("train"), dict):
            return data
        ds = ds if isinstance(ds, dict) else {}
        fields = DataSpec.model_fields
        train = {
            "seed": data.get("seed", 0),
            "batch_size": ds.get("batch_size", fields["batch_size"].default),
            "augment": ds.get("augment", fields["augment"].default),
            **sup["train"],
        }
        return {**data, "supernet": {**sup, "train": train}}

    @model_validator(mode="after")
    def _unique_metrics(self) -> RunSpec:
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective metrics must be distinct, got {names}")
        return self

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(Path(self.run_dir) / 'study.db').as_posix()}"


def parse_run(data: dict[str, Any], file: str | None = None) -> RunSpec:
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(file, exc) from None


def _resolve(value: Any, base: Path, *, must_exist: bool) -> Any:
    """``value`` taken relative to ``base`` when it is a relative path; for inputs (``must_exist``), a path that
    exists only relative to the current folder keeps working as it did before run files were file-relative."""
    if not isinstance(value, str) or not value or value.startswith("~"):
        return value
    p = Path(value)
    if p.is_absolute():
        return value
    candidate = base / p
    if must_exist and not candidate.exists() and p.exists():
        return value
    return str(candidate)


def resolve_run_paths(data: dict[str, Any], run_file: str | Path) -> dict[str, Any]:
    """The run file's mapping with its relative paths taken relative to the file's folder, so a run folder can be
    moved or copied (with its run file) and still works, and writes only inside itself: ``space`` (when a YAML
    path), ``run_dir``, a SQLite ``storage``, ``supernet.checkpoint``, ``dataset.root`` and the estimator's
    ``table`` and ``checkpoint`` options."""
    base = Path(run_file).resolve().parent
    out = dict(data)
    space = out.get("space")
    if isinstance(space, str) and space.endswith((".yaml", ".yml")):
        out["space"] = _resolve(space, base, must_exist=True)
    out["run_dir"] = _resolve(out.get("run_dir", RunSpec.model_fields["run_dir"].default), base, must_exist=False)
    storage = out.get("storage")
    if isinstance(storage, str) and storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        out["storage"] = "sqlite:///" + _resolve(storage.removeprefix("sqlite:///"), base, must_exist=False)
    for section, key in (("supernet", "checkpoint"), ("dataset", "root")):
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            out[section] = {**part, key: _resolve(part[key], base, must_exist=True)}
    est = out.get("estimator")
    if isinstance(est, dict) and isinstance(est.get("options"), dict):
        options = dict(est["options"])
        for key in ("table", "checkpoint"):
            if key in options:
                options[key] = _resolve(options[key], base, must_exist=True)
        out["estimator"] = {**est, "options": options}
    return out


def load_run(path: str | Path) -> RunSpec:
    """A run file, validated, its relative paths taken relative to the file."""
    p = Path(path)
    return parse_run(resolve_run_paths(read_yaml_mapping(p), p), str(p))


register_schema(RunSpec)
