"""The exporter suite: a bundle written for a small architecture of a family loads and computes what the
supernet computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import Check, expect, fail, max_abs_diff, model_inputs, run_checks, sample_archs, warmed_supernet

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from nasplat.space import SearchSpace

#: What a reloaded bundle may differ from the supernet by (the exporter's own tolerance).
ATOL = 1e-4


def _load_in_process(bundle: Path) -> nn.Module:
    """The bundle's network, through its own ``load.py``; the modules it imported are forgotten afterwards."""
    import importlib.util

    before = set(sys.modules)
    name = f"_nasplat_testing_bundle_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(name, bundle / "load.py")
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(loader)
        model: nn.Module = loader.load(bundle)
    finally:
        for key in set(sys.modules) - before:
            del sys.modules[key]
    return model


def check_bundle(space: SearchSpace, *, seed: int = 0, onnx: bool = False, isolated: bool = False) -> None:
    """:func:`nasplat.export.export_bundle` of a sampled architecture (on a supernet with non-trivial numbers)
    writes every bundle file; ``arch.json`` names the space, its hash and the architecture (its string parses
    back), ``metrics.json`` holds the metrics given; the family's ``bundle_extras`` are written; the bundle
    loads through its own ``load.py`` in eval mode and matches the supernet within 1e-4 on another input and
    batch size. ``onnx``: also write and check the ONNX graph (slow). ``isolated``: also load and run it in a
    fresh interpreter without nasplat on the path (``python -I``), which must not import nasplat."""
    import torch

    from nasplat.export import export_bundle

    what, check = f"exporter (family '{space.spec.family}', space '{space.name}')", "bundle"
    net = warmed_supernet(space, seed)
    arch = sample_archs(space, 1, seed + 11)[0]
    extras = space.family.bundle_extras(space, arch)
    metrics = {"conformance_metric": 0.5}
    with tempfile.TemporaryDirectory(prefix="nasplat-testing-") as tmp:
        out = Path(tmp) / "bundle"
        result = export_bundle(net, arch, out, metrics=metrics, provenance={"suite": "nasplat.testing"},
                               example_input=model_inputs(space, 2, seed + 12), onnx=onnx, extras=extras)  # fmt: skip
        files = [result.weights, result.model_source, result.config, result.arch, result.metrics, result.load_script,
                 result.readme]  # fmt: skip
        missing = [p.name for p in files if not p.is_file()]
        expect(not missing, what, check, f"bundle files missing: {missing}")
        expect((result.onnx is not None) == onnx, what, check, f"onnx={onnx} but the result's onnx is {result.onnx}")
        for name, text in extras.items():
            expect((out / name).is_file() and (out / name).read_text() == text, what, check,
                   f"bundle extra '{name}' was not written as given")  # fmt: skip
        doc = json.loads(result.arch.read_text())
        expect(doc.get("space") == space.name and doc.get("space_hash") == space.hash, what, check,
               f"arch.json names space {doc.get('space')!r} (hash {doc.get('space_hash')!r})")  # fmt: skip
        expect(doc.get("choices") == json.loads(json.dumps(arch.as_dict())), what, check,
               "arch.json's choices are not the architecture's")  # fmt: skip
        back = space.from_string(str(doc.get("string")))
        expect(back in (arch, space.family.canonical(space, arch)), what, check,
               f"arch.json's string {doc.get('string')!r} does not parse back to the architecture")  # fmt: skip
        expect(json.loads(result.metrics.read_text()).get("metrics") == metrics, what, check,
               "metrics.json does not hold the metrics given")  # fmt: skip

        inputs = model_inputs(space, 3, seed + 13)
        with torch.no_grad(), net.activate(arch):
            expected = net(*inputs)
        model = _load_in_process(out)
        expect(not model.training, what, check, "load() returned a module in train mode")
        with torch.no_grad():
            got = model(*inputs)
        diff = max_abs_diff(expected, got)
        expect(diff <= ATOL, what, check, f"the reloaded bundle differs from the supernet by {diff:.3g}")
        if isolated:
            _check_isolated(what, check, out, inputs, expected, Path(tmp))


def _check_isolated(what: str, check: str, bundle: Path, inputs: tuple[object, ...], expected: object,
                    tmp: Path) -> None:  # fmt: skip
    import torch

    torch.save(inputs, tmp / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        import torch
        spec = importlib.util.spec_from_file_location("bundle_loader", {str(bundle / "load.py")!r})
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        model = loader.load({str(bundle)!r})
        with torch.no_grad():
            out = model(*torch.load({str(tmp / "inputs.pt")!r}))
        torch.save(out, {str(tmp / "out.pt")!r})
        leaked = sorted(m for m in sys.modules if m.startswith("nasplat"))
        assert not leaked, leaked
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("NASPLAT")}
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if proc.returncode != 0:
        fail(what, check, f"the bundle does not load without nasplat: {proc.stderr.strip().splitlines()[-1:]}")
    diff = max_abs_diff(expected, torch.load(tmp / "out.pt"))
    expect(diff <= ATOL, what, check, f"the bundle run without nasplat differs from the supernet by {diff:.3g}")


#: Every exporter check, in the order :func:`check_exporter` runs them.
EXPORTER_CHECKS: dict[str, Check] = {"bundle": check_bundle}


def check_exporter(space: SearchSpace, *, skip: Sequence[str] = (), onnx: bool = False, isolated: bool = False) -> None:
    """Run every exporter check (:data:`EXPORTER_CHECKS`, but those in ``skip``) on a small space of a family."""
    run_checks(EXPORTER_CHECKS, skip, space, onnx=onnx, isolated=isolated)
