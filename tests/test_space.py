"""The space schema, Architecture and the runtime SearchSpace (family-independent parts)."""

from __future__ import annotations

import json
import string
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasplat.errors import NasplatError, SpecError, UnknownNameError
from nasplat.model import Family
from nasplat.registry import register
from nasplat.space import Architecture, parse_space


@register("family", "test-flat")
class FlatFamily(Family):
    """A family with no network, to test the schema on its own (never used outside tests)."""

    name: ClassVar[str] = "test-flat"

    def build_supernet(self, space: Any) -> Any:
        raise NotImplementedError

    def layers(self, space: Any, arch: Any) -> Any:
        raise NotImplementedError

    def task(self, space: Any) -> Any:
        raise NotImplementedError


MACRO = {"input_shape": [1, 8, 8], "num_classes": 10}


def flat_space(dims: list[dict[str, Any]], constraints: list[str] | None = None) -> Any:
    return parse_space(
        {"name": "flat", "version": 1, "family": "test-flat", "dimensions": dims, "macro": MACRO,
         "constraints": constraints or []},
        "flat.yaml",
    )  # fmt: skip


DIMS = [
    {"label": "stage1.block1.kernel_size", "type": "ordinal", "choices": [3, 5, 7]},
    {"label": "stage1.depth", "type": "integer", "low": 1, "high": 4},
    {"labels": ["op.a", "op.b"], "type": "categorical", "choices": ["conv", "pool", "skip"]},
]


def test_flat_dimensions_and_size() -> None:
    space = flat_space(DIMS)
    assert space.labels == ["stage1.block1.kernel_size", "stage1.depth", "op.a", "op.b"]
    assert space.dimension("stage1.depth").choices == [1, 2, 3, 4]
    assert space.size() == 3 * 4 * 3 * 3
    assert len(list(space.enumerate())) == space.size()
    assert space.encoding_width == 3 + 4 + 3 + 3


def test_sample_is_seeded_and_valid() -> None:
    space = flat_space(DIMS)
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(0)
    samples = {space.sample(rng) for _ in range(300)}
    assert len(samples) > 50  # not stuck
    for s in samples:
        space.validate(s)


def test_mutate_changes_one_dimension_and_ordinal_moves_to_neighbour() -> None:
    space = flat_space(DIMS)
    rng = np.random.default_rng(1)
    arch = space.make({"stage1.block1.kernel_size": 3, "stage1.depth": 1, "op.a": "conv", "op.b": "skip"})
    for _ in range(200):
        child = space.mutate(arch, rng)
        diff = [k for (k, v), (_, w) in zip(arch, child, strict=True) if v != w]
        assert len(diff) == 1
        if diff == ["stage1.block1.kernel_size"]:
            assert child["stage1.block1.kernel_size"] == 5
        if diff == ["stage1.depth"]:
            assert child["stage1.depth"] == 2


def test_constraints_filter_samples_and_enumeration() -> None:
    space = flat_space(DIMS, ["stage1.depth >= 2 and (op.a != 'skip' or op.b != 'skip')"])
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = space.sample(rng)
        assert arch["stage1.depth"] >= 2
        assert not (arch["op.a"] == "skip" and arch["op.b"] == "skip")
    assert space.size() == 3 * 3 * (9 - 1)
    bad = Architecture.from_dict(
        "flat", {"stage1.block1.kernel_size": 3, "stage1.depth": 1, "op.a": "conv", "op.b": "conv"}
    )
    with pytest.raises(NasplatError, match="violates constraint"):
        space.validate(bad)


def test_make_rejects_out_of_range_and_unknown_labels() -> None:
    space = flat_space(DIMS)
    good = {"stage1.block1.kernel_size": 3, "stage1.depth": 1, "op.a": "conv", "op.b": "skip"}
    with pytest.raises(NasplatError, match=r"'stage1.depth': 9 is not an allowed choice"):
        space.make({**good, "stage1.depth": 9})
    with pytest.raises(NasplatError, match="unknown labels: nope"):
        space.make({**good, "nope": 1})
    with pytest.raises(NasplatError, match=r"missing labels: op\.b"):
        space.make({k: v for k, v in good.items() if k != "op.b"})


def test_architecture_round_trips_and_hashes() -> None:
    space = flat_space(DIMS)
    arch = space.sample(np.random.default_rng(3))
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_yaml(arch.to_yaml()) == arch
    assert space.from_key(arch.key) == arch
    assert space.from_string(arch.to_json()) == arch
    assert hash(arch) == hash(Architecture.from_json(arch.to_json()))
    assert len({arch, Architecture.from_json(arch.to_json())}) == 1
    with pytest.raises(NasplatError):
        Architecture.from_json("{not json")


def test_encode_is_one_hot() -> None:
    space = flat_space(DIMS)
    arch = space.make({"stage1.block1.kernel_size": 7, "stage1.depth": 2, "op.a": "pool", "op.b": "conv"})
    vec = space.encode(arch)
    assert vec.sum() == len(space.dimensions)
    assert list(np.flatnonzero(vec)) == [2, 3 + 1, 7 + 1, 10 + 0]


def test_space_hash_depends_on_content_only() -> None:
    a, b = flat_space(DIMS), flat_space(DIMS)
    assert a.hash == b.hash
    c = flat_space([*DIMS[:2], {"labels": ["op.a", "op.b"], "type": "categorical", "choices": ["conv", "pool"]}])
    assert c.hash != a.hash


@pytest.mark.parametrize(
    ("patch", "key", "expected"),
    [
        ({"version": "one"}, "version", "valid integer"),
        ({"dimensions": [{"label": "x", "type": "categorical", "choices": []}]}, "dimensions[0].choices", "at least 1"),
        (
            {"dimensions": [{"label": "x", "type": "wat", "choices": [1]}]},
            "dimensions[0]",
            "categorical, ordinal, integer",
        ),
        (
            {"dimensions": [{"label": "x", "type": "integer", "low": 5, "high": 1}]},
            "dimensions[0]",
            "'high' (1) must be >= 'low' (5)",
        ),
        (
            {"dimensions": [{"label": "x", "labels": ["y"], "type": "categorical", "choices": [1]}]},
            "dimensions[0]",
            "exactly one of",
        ),
        ({"dimensions": [{"label": "9bad", "type": "categorical", "choices": [1]}]}, "dimensions[0].label", "pattern"),
        ({"dimensions": [{"label": "x", "type": "categorical", "choices": [1, 1]}]}, "dimensions[0].choices", "unique"),
        (
            {"extra": 1},
            "extra",
            "unknown key; allowed keys: constraints, description, dimensions, family, macro, name, version",
        ),
        ({"macro": {"input_shape": [1, 8]}}, "macro.input_shape", ""),
        ({"macro": {**MACRO, "colour": "red"}}, "macro.colour", "unknown key"),
        ({"constraints": ["x >"]}, "constraints[0]", "not a valid expression"),
        ({"constraints": ["__import__('os')"]}, "constraints[0]", "not allowed"),
        ({"constraints": ["y == 1"]}, "constraints[0]", "unknown label 'y'"),
        ({"family": "nope"}, "family", "unknown family 'nope'; allowed:"),
    ],
)
def test_bad_declarations_name_file_key_and_expectation(patch: dict[str, Any], key: str, expected: str) -> None:
    data = {"name": "flat", "version": 1, "family": "test-flat",
            "dimensions": [{"label": "x", "type": "categorical", "choices": [1, 2]}], "macro": MACRO, **patch}  # fmt: skip
    with pytest.raises(SpecError) as info:
        parse_space(data, "flat.yaml")
    msg = str(info.value)
    assert msg.startswith(f"flat.yaml: at '{key}'"), msg
    assert expected in msg
    assert "\n" not in msg


def test_duplicate_labels_are_rejected() -> None:
    with pytest.raises(SpecError, match="declared twice"):
        flat_space(
            [
                {"label": "x", "type": "categorical", "choices": [1]},
                {"labels": ["y", "x"], "type": "categorical", "choices": [2]},
            ]
        )


def test_unknown_space_name_lists_known_ones() -> None:
    from nasplat.space import load_space

    with pytest.raises(UnknownNameError, match="nb201-cpu"):
        load_space("no-such-space")


# ---- property-based: generated spaces round-trip through YAML and their samples always validate

_label = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=3).map(".".join)
_value = st.one_of(st.text(string.ascii_letters + "_", min_size=1, max_size=8), st.integers(-50, 50), st.booleans())


@st.composite
def space_dicts(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.lists(_label, min_size=1, max_size=6, unique=True))
    dims = []
    for label in labels:
        kind = draw(st.sampled_from(["categorical", "ordinal", "integer"]))
        if kind == "integer":
            low = draw(st.integers(-5, 5))
            dims.append(
                {
                    "label": label,
                    "type": kind,
                    "low": low,
                    "high": low + draw(st.integers(0, 6)),
                    "step": draw(st.integers(1, 3)),
                }
            )
        elif kind == "ordinal":
            dims.append(
                {
                    "label": label,
                    "type": kind,
                    "choices": draw(st.lists(st.integers(1, 512), min_size=1, max_size=5, unique=True)),
                }
            )
        else:
            choices = draw(st.lists(_value, min_size=1, max_size=5, unique_by=json.dumps))
            dims.append({"label": label, "type": kind, "choices": choices})
    return {
        "name": "gen",
        "version": draw(st.integers(1, 9)),
        "family": "test-flat",
        "dimensions": dims,
        "macro": MACRO,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space_dicts(), st.integers(0, 2**32 - 1))
def test_generated_spaces_round_trip_and_samples_validate(data: dict[str, Any], seed: int) -> None:
    space = parse_space(data, "gen.yaml")
    again = parse_space(yaml.safe_load(yaml.safe_dump(space.spec.model_dump(mode="json"))), "gen2.yaml")
    assert again.hash == space.hash
    assert [(d.label, d.choices) for d in again.dimensions] == [(d.label, d.choices) for d in space.dimensions]
    rng = np.random.default_rng(seed)
    for _ in range(5):
        arch = space.sample(rng)
        space.validate(arch)
        again.validate(Architecture.from_json(arch.to_json()))
        assert space.from_key(arch.key) == arch
        mutated = space.mutate(arch, rng)
        space.validate(mutated)
