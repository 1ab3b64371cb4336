"""docs/runfile.md and docs/families.md stay true: every example validates, every key is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nasplat import registry
from nasplat.datasets import DataSpec
from nasplat.search import Constraint, EstimatorSection, Objective, RunSpec, SamplerSection, SupernetSection, parse_run
from nasplat.space import parse_space
from nasplat.train import TrainSettings

ROOT = Path(__file__).parent.parent


def yaml_blocks(doc: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.S)


@pytest.mark.parametrize("block", yaml_blocks("runfile.md"))
def test_runfile_examples_validate(block: str) -> None:
    run = parse_run(yaml.safe_load(block), "docs/runfile.md")
    registry.check_options("sampler", run.sampler.name, run.sampler.options, fixed=("seed", "n_objectives", "space"))
    registry.check_options("estimator", run.estimator.name, run.estimator.options)


def test_runfile_documents_every_key() -> None:
    text = (ROOT / "docs" / "runfile.md").read_text()
    for model in (
        RunSpec,
        DataSpec,
        SupernetSection,
        TrainSettings,
        EstimatorSection,
        Objective,
        Constraint,
        SamplerSection,
    ):
        for key in model.model_fields:
            assert f"| `{key}` |" in text, f"docs/runfile.md does not document {model.__name__}.{key}"


@pytest.mark.parametrize("block", yaml_blocks("families.md"))
def test_family_examples_validate(block: str) -> None:
    path = ROOT / block.splitlines()[0].lstrip("# ").strip()
    assert path.read_text().rstrip() == "\n".join(block.splitlines()[1:]).rstrip(), f"{path} changed: update the doc"
    parse_space(yaml.safe_load(block), str(path), path)


def test_families_document_every_macro_key() -> None:
    text = (ROOT / "docs" / "families.md").read_text()
    shipped = [n for n in registry.available("family") if registry.get("family", n).__module__.startswith("nasplat")]
    assert {"cell", "hybrid", "quant", "controlnet"} <= set(shipped)
    for name in shipped:  # the families nasplat ships (tests register throw-away ones of their own)
        section = text.split(f"## `{name}`", 1)
        assert len(section) == 2, f"docs/families.md has no section for family '{name}'"
        body = section[1].split("\n## ", 1)[0]
        for key in registry.get("family", name).macro_model.model_fields:
            assert f"| `{key}` |" in body, f"docs/families.md does not document {name}'s macro key '{key}'"
