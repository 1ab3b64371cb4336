"""The NAS-Bench-201 cell family: spaces, string form, canonical form, supernet, extraction, layer records."""

from __future__ import annotations

import ast
import copy
import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nasplat.errors import NasplatError, SpecError
from nasplat.model import ClassificationTask
from nasplat.space import Architecture, SearchSpace, load_space, parse_space
from nasplat_search_spaces.cell import EDGE_LABELS, CellFamily, CellSupernet
from nasplat_search_spaces.cell.family import live_edges, ops_of, signature

REPO = Path(__file__).resolve().parent.parent
CELL_DIR = REPO / "search_spaces" / "cell"
DIGITS = Path(__file__).parent / "spaces" / "cell-digits.yaml"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny tensors: one intra-op thread (two threads spin and crawl when the cores are busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def nb201() -> SearchSpace:
    return load_space("nb201")


@pytest.fixture(scope="module")
def digits() -> SearchSpace:
    return load_space(DIGITS)


def randomize_bn(module: nn.Module, seed: int, shifts: bool = True) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if shifts:
                    m.bias.copy_(torch.randn(n, generator=g))
                    m.running_mean.copy_(torch.randn(n, generator=g))
                else:
                    m.bias.zero_()
                    m.running_mean.zero_()


def random_archs(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


# spaces ----------------------------------------------------------------------------------------------------------


def test_spaces_load_by_name_and_path(nb201: SearchSpace) -> None:
    by_path = load_space(CELL_DIR / "nb201.yaml")
    assert by_path.hash == nb201.hash
    for space in (nb201, by_path, load_space("nb201-cpu"), load_space(DIGITS)):
        assert isinstance(space.family, CellFamily)
        assert space.labels == list(EDGE_LABELS)
        assert space.size() == 15625
        assert isinstance(space.family.task(space), ClassificationTask)
    assert nb201.macro.model_dump() == {  # type: ignore[attr-defined]
        "input_shape": (3, 32, 32),
        "num_classes": 10,
        "stem_channels": 16,
        "cells_per_stage": 5,
        "num_stages": 3,
    }
    cpu = load_space("nb201-cpu")
    assert cpu.macro.input_shape == (1, 28, 28)  # type: ignore[attr-defined]
    assert cpu.macro.cells_per_stage == 1  # type: ignore[attr-defined]


GOOD: dict[str, Any] = {
    "name": "cell-test",
    "version": 1,
    "family": "cell",
    "dimensions": [
        {
            "type": "categorical",
            "labels": list(EDGE_LABELS),
            "choices": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
        }
    ],
    "macro": {"input_shape": [1, 8, 8], "num_classes": 10, "stem_channels": 4, "cells_per_stage": 1, "num_stages": 2},
}


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if key == "labels":
            data["dimensions"][0]["labels"] = value
        elif key == "choices":
            data["dimensions"][0]["choices"] = value
        elif key == "dimensions":
            data["dimensions"] = value
        else:
            data["macro"][key] = value
    return data


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            _with(labels=[*EDGE_LABELS[:5], "cell.edge_4_0"]),
            "dimensions[0].labels[5]",
            "unknown dimension 'cell.edge_4_0'",
        ),
        (_with(labels=list(EDGE_LABELS[:5])), "dimensions", "missing: cell.edge_3_2"),
        (
            _with(choices=["none", "skip_connect", "nor_conv_5x5"]),
            "dimensions[0].choices[2]",
            "unknown op 'nor_conv_5x5'",
        ),
        (_with(choices=["none", 3]), "dimensions[0].choices[1]", "'cell.edge_1_0': unknown op 3"),
        (
            _with(
                dimensions=[
                    {"type": "categorical", "labels": list(EDGE_LABELS[:5]), "choices": ["none", "skip_connect"]},
                    {"type": "ordinal", "label": "cell.edge_3_2", "choices": ["none", "skip_connect"]},
                ]
            ),
            "dimensions[1].type",
            "'cell.edge_3_2' must be categorical",
        ),
        (_with(input_shape=[1, 6, 6], num_stages=3), "macro.input_shape", "divisible by 4"),
        (_with(stem_channels=0), "macro.stem_channels", "greater than or equal to 1"),
        (_with(widths=[1]), "macro.widths", "unknown key"),
    ],
)
def test_bad_spaces_name_the_key(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_space(data, "bad.yaml", Path("bad.yaml"))
    assert info.value.file == "bad.yaml"
    assert info.value.key == key
    assert message in info.value.expected


def test_bad_space_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(choices=["none", "conv_7x7"])))
    with pytest.raises(SpecError, match=r"bad\.yaml: at 'dimensions\[0\]\.choices\[1\]': .*unknown op 'conv_7x7'"):
        load_space(path)


# string form -----------------------------------------------------------------------------------------------------


def test_string_round_trip_for_every_cell(nb201: SearchSpace) -> None:
    strings = set()
    for arch in nb201.enumerate():
        text = nb201.to_string(arch)
        assert nb201.from_string(text) == arch
        strings.add(text)
    assert len(strings) == 15625
    best = nb201.from_string(BEST)
    assert best["cell.edge_3_0"] == "skip_connect" and best["cell.edge_3_2"] == "nor_conv_3x3"
    assert nb201.to_string(best) == BEST
    assert nb201.from_string(best.key) == best  # the generic key and JSON forms still work
    assert nb201.from_string(best.to_json()) == best


def test_benchmark_table_strings_parse(nb201: SearchSpace, shared_data: Path) -> None:
    table = shared_data / "nb201" / "cifar10-12epoch.csv"
    if not table.exists():
        pytest.skip(f"{table} not found")
    with table.open(newline="") as f:
        strings = [row["arch"] for row in csv.DictReader(f)]
    assert len(strings) == 15625
    archs = {nb201.from_string(s) for s in strings}
    assert len(archs) == 15625
    for s in strings:
        assert nb201.to_string(nb201.from_string(s)) == s


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
        (BEST.replace("|+|", "+", 1), "enclosed in '|'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2 input"),
        (BEST.replace("skip_connect~0", "skip_connect~1"), "must be 'op~0'"),
        (BEST.replace("skip_connect~0", "skip_connect"), "must be 'op~0'"),
        (BEST.replace("skip_connect", "conv_7x7"), "unknown op 'conv_7x7'"),
        ("", "not a NAS-Bench-201 cell string"),
    ],
)
def test_malformed_strings_are_rejected(nb201: SearchSpace, text: str, match: str) -> None:
    with pytest.raises(NasplatError, match=match):
        nb201.from_string(text)


def test_op_outside_the_space_is_rejected() -> None:
    small = parse_space(_with(choices=["none", "skip_connect", "nor_conv_3x3"]), "small.yaml")
    with pytest.raises(NasplatError, match=r"op 'avg_pool_3x3' on cell.edge_3_2 is not in space 'cell-test'"):
        small.from_string(BEST.replace("nor_conv_3x3~2", "avg_pool_3x3~2"))


# canonical form --------------------------------------------------------------------------------------------------


def test_canonical_cuts_dead_edges(nb201: SearchSpace) -> None:
    fam = nb201.family
    no_output = nb201.from_string("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|none~1|none~2|")
    assert nb201.to_string(fam.canonical(nb201, no_output)) == ALL_NONE
    cut_off = nb201.from_string("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|")
    assert nb201.to_string(fam.canonical(nb201, cut_off)) == ALL_NONE
    # node 2 does not reach node 3; node 1 feeds node 3 through a skip: the cell is one conv from the input
    dangling = nb201.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|none~2|")
    assert nb201.to_string(fam.canonical(nb201, dangling)) == (
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    )
    # nodes 1 and 2 are interchangeable when edge_2_1 is none
    a = nb201.from_string("|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    b = nb201.from_string("|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert fam.canonical(nb201, a) == fam.canonical(nb201, b)
    assert fam.canonical(nb201, nb201.from_string(BEST)) == nb201.from_string(BEST)


def test_canonical_is_a_consistent_representative(nb201: SearchSpace) -> None:
    fam = nb201.family
    reps = set()
    for arch in nb201.enumerate():
        rep = fam.canonical(nb201, arch)
        assert signature(rep) == signature(arch)
        assert sum(op != "none" for op in ops_of(rep).values()) <= sum(live_edges(ops_of(arch)).values())
        reps.add(rep)
    assert all(fam.canonical(nb201, r) == r for r in reps)
    # NAS-Bench-201's own to_unique_str finds 6,466 classes; exact zero and sum handling merges more
    assert len(reps) == 4930


def test_canonical_stays_inside_a_restricted_space() -> None:
    data = _with(
        dimensions=[
            {"type": "categorical", "labels": list(EDGE_LABELS[:3]), "choices": ["nor_conv_3x3", "skip_connect"]},
            {"type": "categorical", "labels": list(EDGE_LABELS[3:]), "choices": ["none", "nor_conv_3x3"]},
        ]
    )
    data["constraints"] = ["cell.edge_3_0 != 'none'"]
    space = parse_space(data, "restricted.yaml")
    for arch in space.enumerate():
        rep = space.family.canonical(space, arch)
        space.validate(rep)
        assert signature(rep) == signature(arch)


def test_dead_edges_do_not_change_the_output(digits: SearchSpace) -> None:
    """With BN shifts at zero, an op reading zeros outputs zeros: dead edges are exactly ``none``."""
    net = digits.family.build_supernet(digits)
    randomize_bn(net, 1, shifts=False)
    net.eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    checked = 0
    for arch in random_archs(digits, 300, 2):
        ops = ops_of(arch)
        live = live_edges(ops)
        pruned = digits.make({f"cell.{e}": op if live[e] else "none" for e, op in ops.items()})
        if pruned == arch:
            continue
        checked += 1
        with torch.no_grad():
            torch.testing.assert_close(net.forward_path(arch, x), net.forward_path(pruned, x), rtol=1e-5, atol=1e-6)
    assert checked > 50


def test_describe(nb201: SearchSpace) -> None:
    arch = nb201.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|none~2|")
    d = nb201.family.describe(nb201, arch)
    json.dumps(d)
    assert d["string"] == nb201.to_string(arch)
    assert [n["id"] for n in d["nodes"]] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    edges = {e["label"]: e for e in d["edges"]}  # type: ignore[attr-defined]
    assert edges["cell.edge_2_1"] == {
        "source": 1,
        "target": 2,
        "op": "nor_conv_3x3",
        "label": "cell.edge_2_1",
        "live": False,
    }
    assert edges["cell.edge_3_1"]["live"] and not edges["cell.edge_3_0"]["live"]


# supernet and extraction -----------------------------------------------------------------------------------------


def test_extracted_model_in_train_mode_and_its_structure(digits: SearchSpace) -> None:
    """Eval-mode equality is the family conformance suite's (tests/plugins); here: train mode (batch statistics)
    and the extracted module's structure."""
    net = digits.family.build_supernet(digits)
    assert isinstance(net, CellSupernet)
    randomize_bn(net, 0)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    net.train()
    for arch in random_archs(digits, 60, 3):
        model: Any = net.extract(arch)
        assert model.training
        with torch.no_grad():
            expected = net.forward_path(arch, x)
            with net.activate(arch):
                torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
            got = model(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # structure: config is JSON-able and rebuilds the same keys; no module for `none` edges
        config = json.loads(json.dumps(model.nasplat_config))
        rebuilt = type(model)(config)
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        ops = ops_of(arch)
        for key in model.state_dict():
            if ".edges." in key:
                edge, op = key.split(".edges.")[1].split(".")[:2]
                assert ops[edge] == op != "none"


def test_full_size_nb201_extraction(nb201: SearchSpace) -> None:
    net = nb201.family.build_supernet(nb201)
    randomize_bn(net, 5)
    net.eval()
    arch = nb201.from_string(BEST)
    model: Any = net.extract(arch)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.forward_path(arch, x), rtol=1e-5, atol=1e-5)
    assert model(x).shape == (2, 10)
    assert len(model.cells) == 17  # 3 stages of 5 cells and 2 reduction blocks


def test_path_modules_cover_exactly_the_path(digits: SearchSpace) -> None:
    net = digits.family.build_supernet(digits)
    names = {id(m): n for n, m in net.named_modules()}
    for arch in random_archs(digits, 20, 4):
        mods = net.path_modules(arch)
        assert len({id(m) for m in mods}) == len(mods)
        owned = set()
        for m in mods:
            prefix = names[id(m)]
            owned |= {f"{prefix}.{k}" if prefix else k for k in m.state_dict(keep_vars=True) if "." not in k}
        assert owned == set(net.extract(arch).state_dict())
        assert all(isinstance(m, nn.BatchNorm2d) for m in mods if "bn" in names[id(m)].split(".")[-1])


def test_standalone_needs_only_torch(digits: SearchSpace, tmp_path: Path) -> None:
    source = (CELL_DIR / "standalone.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            roots = {node.module.split(".")[0]}
        elif isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        else:
            continue
        assert roots <= {"torch", "__future__"} | set(sys.stdlib_module_names), roots
    # load the file on its own (as an export bundle does) and rebuild an extracted model from its config
    copy_path = tmp_path / "bundle_model.py"
    copy_path.write_text(source)
    spec = importlib.util.spec_from_file_location("bundle_model", copy_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = digits.family.build_supernet(digits)
    randomize_bn(net, 6)
    net.eval()
    model: Any = net.extract(digits.from_string(BEST))
    rebuilt = module.build_model(model.nasplat_config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    with pytest.raises(ValueError, match="unknown op"):
        module.build_model({**model.nasplat_config, "ops": {**model.nasplat_config["ops"], "edge_1_0": "conv"}})


# layer records ---------------------------------------------------------------------------------------------------


def record_params(space: SearchSpace, arch: Architecture) -> int:
    total = 0
    for r in space.family.layers(space, arch):
        if r.op in ("conv2d", "linear"):
            total += r.in_channels * r.out_channels * r.kernel * r.kernel // r.groups + (
                r.out_channels if r.bias else 0
            )
        elif r.op == "batchnorm":
            total += 2 * r.out_channels
    return total


@pytest.mark.parametrize("name", ["cell-digits", "nb201-cpu", "nb201"])
def test_layer_records_count_parameters_exactly(name: str) -> None:
    space = load_space(DIGITS) if name == "cell-digits" else load_space(name)
    net = space.family.build_supernet(space)
    archs = random_archs(space, 100 if name != "nb201" else 15, 7)
    archs += [space.from_string(BEST), space.from_string(ALL_NONE)]
    for arch in archs:
        model = net.extract(arch)
        assert record_params(space, arch) == sum(p.numel() for p in model.parameters()), space.to_string(arch)


def test_layer_records_count_adds_and_edge_ops(digits: SearchSpace) -> None:
    """That records match the modules (names, shapes, weights) is the family conformance suite's (tests/plugins);
    here: one add per extra input of a node, and one op record per live edge."""
    for arch in [*random_archs(digits, 20, 8), digits.from_string(BEST)]:
        records = digits.family.layers(digits, arch)
        live = sum(op != "none" for op in ops_of(arch).values())
        node_inputs = [sum(ops_of(arch)[f"edge_{i}_{j}"] != "none" for j in range(i)) for i in (1, 2, 3)]
        adds = sum(max(n - 1, 0) for n in node_inputs) * 2 + 1  # two cells, one reduction block
        assert sum(r.op == "add" for r in records) == adds
        assert sum(r.op in ("conv2d", "avgpool", "identity") for r in records if ".edges." in r.name) == 2 * live
