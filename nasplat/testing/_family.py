"""The family suite: text forms, canonical forms, extremes, the supernet against its extracted modules, and the
layer records against the modules they describe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nasplat.errors import NasplatError

from ._common import (
    Check,
    expect,
    fail,
    max_abs_diff,
    model_inputs,
    run_checks,
    sample_archs,
    scale_of,
    warmed_supernet,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from nasplat.measure import LayerRecord
    from nasplat.space import Architecture, SearchSpace


def _what(space: SearchSpace) -> str:
    return f"family '{space.spec.family}' (space '{space.name}')"


def _extremes(space: SearchSpace) -> list[Architecture]:
    """The family's extremes, or none when it declines them (NasplatError, as the default does for categorical
    dimensions)."""
    try:
        return list(space.family.extremes(space))
    except NasplatError:
        return []


def _archs(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    """Seeded samples, then the extremes (when the family names them) if they are not among the samples."""
    archs = sample_archs(space, n, seed)
    seen = {a.key for a in archs}
    return archs + [a for a in _extremes(space) if a.key not in seen]


# --------------------------------------------------------------------------------------------------------------
# checks without networks


def check_string_round_trip(space: SearchSpace, *, seed: int = 0, n: int = 8) -> None:
    """``from_string(to_string(a))`` is ``a`` (or its canonical form) and prints the same string again; the key
    and JSON forms parse back to ``a``; architectures with different canonical forms get different strings."""
    what, check = _what(space), "string round trip"
    fam = space.family
    strings: dict[str, Architecture] = {}
    for arch in _archs(space, n, seed):
        text = space.to_string(arch)
        expect(isinstance(text, str) and text.strip(), what, check, f"to_string gave {text!r} for {arch.key}")
        try:
            back = space.from_string(text)
        except NasplatError as exc:
            fail(what, check, f"from_string refuses its own string {text!r}: {exc}")
        space.validate(back)
        expect(back in (arch, fam.canonical(space, arch)), what, check,
               f"{text!r} parses to {back.key}, which is neither {arch.key} nor its canonical form")  # fmt: skip
        expect(space.to_string(back) == text, what, check,
               f"{text!r} parses to an architecture printed as {space.to_string(back)!r}")  # fmt: skip
        expect(space.from_string(arch.key) == arch, what, check, f"the key form {arch.key!r} does not parse back")
        expect(
            space.from_string(arch.to_json()) == arch, what, check, f"the JSON form of {arch.key} does not parse back"
        )
        strings.setdefault(text, arch)
        other = strings[text]
        expect(fam.canonical(space, other) == fam.canonical(space, arch), what, check,
               f"{other.key} and {arch.key} compute different networks but both print as {text!r}")  # fmt: skip


def check_canonical(space: SearchSpace, *, seed: int = 0, n: int = 8) -> None:
    """``canonical(a)`` is an architecture of the space, the same on every call, and its own canonical form."""
    what, check = _what(space), "canonical form"
    fam = space.family
    for arch in _archs(space, n, seed):
        rep = fam.canonical(space, arch)
        try:
            space.validate(rep)
        except NasplatError as exc:
            fail(what, check, f"canonical({arch.key}) is not an architecture of the space: {exc}")
        expect(fam.canonical(space, arch) == rep, what, check, f"canonical({arch.key}) changes between calls")
        again = fam.canonical(space, rep)
        expect(again == rep, what, check, f"not idempotent: canonical({rep.key}) is {again.key}")


def check_extremes(space: SearchSpace) -> None:
    """``extremes`` gives two valid architectures of the space (or declines with a NasplatError naming why)."""
    what, check = _what(space), "extremes"
    try:
        pair = space.family.extremes(space)
    except NasplatError as exc:
        expect(str(exc).strip(), what, check, "declined with an empty message")
        return
    expect(isinstance(pair, tuple) and len(pair) == 2, what, check, f"expected (largest, smallest), got {pair!r}")
    for role, arch in zip(("largest", "smallest"), pair):
        try:
            space.validate(arch)
        except (NasplatError, AttributeError) as exc:
            fail(what, check, f"the {role} architecture {arch!r} is not an architecture of the space: {exc}")
    expect(space.family.extremes(space) == pair, what, check, "extremes change between calls")


# --------------------------------------------------------------------------------------------------------------
# checks with networks


def check_supernet_seeded(space: SearchSpace, *, seed: int = 0) -> None:
    """Two supernets built from the same seed hold the same numbers, and building one leaves torch's global RNG
    as it was."""
    import torch

    what, check = _what(space), "seeded supernet"
    state = torch.random.get_rng_state()
    a = space.family.build_supernet(space, seed=seed)
    expect(torch.equal(torch.random.get_rng_state(), state), what, check,
           "build_supernet changed torch's global RNG (build inside nasplat.model.seeded)")  # fmt: skip
    b = space.family.build_supernet(space, seed=seed)
    sa, sb = a.state_dict(), b.state_dict()
    expect(list(sa) == list(sb), what, check, "two builds have different state_dict keys")
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    expect(not differ, what, check, f"two builds from seed {seed} differ in {differ[:3]}")


def check_supernet_matches_extracted(
    space: SearchSpace, *, seed: int = 0, n: int = 4, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """In eval mode, ``extract(a)`` computes what the supernet computes inside ``activate(a)`` (same input, within
    ``atol + rtol * max|output|``), for seeded samples and the extremes, on a supernet with non-trivial numbers
    (:func:`~nasplat.testing.warmed_supernet`); outside ``activate`` the supernet refuses to run."""
    import torch

    what, check = _what(space), "supernet == extracted"
    net = warmed_supernet(space, seed)
    inputs = model_inputs(space, 3, seed + 5)
    with torch.no_grad():
        try:
            net(*inputs)
        except NasplatError:
            pass
        else:
            fail(what, check, "the supernet ran without an active architecture (outside `with activate(arch)`)")
        for arch in _archs(space, n, seed):
            with net.activate(arch):
                expected = net(*inputs)
            module = net.extract(arch).eval()
            got = module(*inputs)
            diff = max_abs_diff(expected, got)
            bound = atol + rtol * scale_of(expected)
            text = space.to_string(arch)
            expect(diff <= bound, what, check, f"{text}: extracted module differs by {diff:.3g} (allowed {bound:.3g})")
        expect(not net.training, what, check, "the supernet left eval mode")


def check_extract_copies(space: SearchSpace, *, seed: int = 0) -> None:
    """The extracted module owns copies of its weights: changing them leaves the supernet as it was."""
    import torch

    what, check = _what(space), "extracted weights are copies"
    net = space.family.build_supernet(space, seed=seed)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for arch in _archs(space, 2, seed):
        module = net.extract(arch)
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                    t.add_(1.0)
        changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
        expect(
            not changed, what, check, f"changing {space.to_string(arch)}'s module changed the supernet's {changed[:3]}"
        )


def _kinds() -> dict[str, tuple[type, ...]]:
    """Record op -> the torch modules that compute it (conv2d and linear are not listed: a quantized or low-rank
    layer computes them as well as ``nn.Conv2d`` does; their weights are checked instead)."""
    from torch import nn

    return {
        "batchnorm": (nn.modules.batchnorm._BatchNorm,),
        "layernorm": (nn.LayerNorm, nn.GroupNorm),
        "relu": (nn.ReLU, nn.ReLU6),
        "gelu": (nn.GELU,),
        "avgpool": (nn.AvgPool2d,),
        "maxpool": (nn.MaxPool2d,),
        "global_avgpool": (nn.AdaptiveAvgPool2d,),
        "identity": (nn.Identity,),
    }


def _resolve(modules: dict[str, nn.Module], name: str) -> tuple[str, nn.Module] | None:
    """The module a record names: the module of that qualified name, else the one module whose qualified name
    ends in ``.<name>`` (families that wrap a base network may name records as the base network does)."""
    if name in modules:
        return name, modules[name]
    hits = [(n, m) for n, m in modules.items() if n.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _shape_hook(seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], name: str) -> Any:
    """A forward hook keeping the shapes of a module's first call (first tensor in, first tensor out)."""

    def record(_m: nn.Module, inp: Any, out: Any) -> None:
        tin, tout = _first_tensor(inp), _first_tensor(out)
        if name not in seen and tin is not None and tout is not None:
            seen[name] = (tuple(tin.shape), tuple(tout.shape))

    return record


def _check_record(what: str, check: str, arch_text: str, rec: LayerRecord, module: nn.Module,
                  shapes: tuple[tuple[int, ...], tuple[int, ...]] | None) -> None:  # fmt: skip
    import torch

    where = f"{arch_text}: layer '{rec.name}' ({rec.op})"
    kinds = _kinds().get(rec.op)
    if kinds is not None:
        expect(isinstance(module, kinds), what, check, f"{where}: names a {type(module).__name__}")
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if rec.op == "conv2d":
        if isinstance(weight, torch.Tensor):
            want = (rec.out_channels, rec.in_channels // max(rec.groups, 1), rec.kernel, rec.kernel)
            expect(
                tuple(weight.shape) == want, what, check, f"{where}: weight {tuple(weight.shape)}, record says {want}"
            )
        stride = getattr(module, "stride", None)
        if isinstance(stride, (tuple, list)) and stride:
            expect(int(stride[0]) == rec.stride, what, check, f"{where}: stride {stride[0]}, record says {rec.stride}")
        groups = getattr(module, "groups", None)
        if isinstance(groups, int):
            expect(groups == rec.groups, what, check, f"{where}: groups {groups}, record says {rec.groups}")
    if rec.op == "linear" and isinstance(weight, torch.Tensor):
        pair = (rec.out_channels, rec.in_channels)
        expect(tuple(weight.shape) == pair, what, check, f"{where}: weight {tuple(weight.shape)}, record says {pair}")
    if rec.op in ("conv2d", "linear"):
        has_bias = isinstance(bias, torch.Tensor)
        expect(has_bias == rec.bias, what, check, f"{where}: module bias {has_bias}, record says {rec.bias}")
    if rec.op in ("batchnorm", "layernorm"):
        expect(rec.in_channels == rec.out_channels, what, check, f"{where}: a norm must keep its channels")
        if isinstance(weight, torch.Tensor):
            expect(weight.numel() == rec.out_channels, what, check,
                   f"{where}: {weight.numel()} scales, record says {rec.out_channels} channels")  # fmt: skip
    expect(shapes is not None, what, check, f"{where}: the network never ran the module the record names")
    assert shapes is not None
    shape_in, shape_out = shapes
    for side, shape, channels, hw in (("input", shape_in, rec.in_channels, rec.in_hw),
                                      ("output", shape_out, rec.out_channels, rec.out_hw)):  # fmt: skip
        if len(shape) == 4 or rec.op in ("conv2d", "batchnorm"):  # images: (1, channels, height, width)
            ok = shape == (1, channels, *hw)
        else:  # channels last: one row per position of the record's grid
            numel = 1
            for s in shape:
                numel *= s
            ok = bool(shape) and shape[-1] == channels and numel == channels * hw[0] * hw[1]
        expect(ok, what, check, f"{where}: {side} {shape}, record says {channels} channels over {hw}")


def check_layer_records(space: SearchSpace, *, seed: int = 0, n: int = 4) -> None:
    """``layers(a)`` describes ``extract(a)``: records are LayerRecords with unique names, the same on every
    call; a record that names a module of the extracted network (by qualified name, or the one module whose
    qualified name ends in ``.<name>``) describes it: a module of the op's kind (a ReLU for ``relu``...), weight
    shape, stride, groups and bias as recorded, run on the record's input and output shapes at batch 1; and every
    Conv2d, Linear or normalisation module with trainable parameters is described by a record. Records may also
    name computations that are no module of their own (adds, functional ops, a frozen block run again with
    adapters)."""
    import torch
    from torch import nn

    from nasplat.measure import LayerRecord

    what, check = _what(space), "layer records match the modules"
    net = space.family.build_supernet(space, seed=seed).eval()
    inputs = model_inputs(space, 1, seed + 7)
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    for arch in _archs(space, n, seed):
        text = space.to_string(arch)
        records = space.family.layers(space, arch)
        expect(isinstance(records, list) and all(isinstance(r, LayerRecord) for r in records), what, check,
               f"{text}: layers() must return a list of LayerRecord")  # fmt: skip
        names = [r.name for r in records]
        dup = sorted({x for x in names if names.count(x) > 1})
        expect(not dup, what, check, f"{text}: record names repeat: {dup[:3]}")
        expect(space.family.layers(space, arch) == records, what, check, f"{text}: layers() changes between calls")
        model = net.extract(arch).eval()
        modules = dict(model.named_modules())
        resolved: dict[str, tuple[str, nn.Module]] = {}
        for rec in records:
            hit = _resolve(modules, rec.name)
            if hit is not None:
                resolved[rec.name] = hit
        seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

        handles = [m.register_forward_hook(_shape_hook(seen, qual)) for qual, m in dict(resolved.values()).items()]
        try:
            with torch.no_grad():
                model(*inputs)
        finally:
            for h in handles:
                h.remove()
        for rec in records:
            if rec.name in resolved:
                qual, module = resolved[rec.name]
                _check_record(what, check, text, rec, module, seen.get(qual))
        described = {qual for qual, _ in resolved.values()}
        for qual, m in modules.items():
            trainable = any(p.requires_grad for p in m.parameters(recurse=False))
            if trainable and isinstance(m, (nn.Conv2d, nn.Linear, *norms)):
                expect(
                    qual in described, what, check, f"{text}: module '{qual}' ({type(m).__name__}) has no layer record"
                )


#: Checks that build no network: cheap enough for every shipped space, however large.
FAMILY_SPACE_CHECKS: dict[str, Check] = {
    "string_round_trip": check_string_round_trip,
    "canonical": check_canonical,
    "extremes": check_extremes,
}

#: Every family check, in the order :func:`check_family` runs them (each takes the space, then keywords).
FAMILY_CHECKS: dict[str, Check] = {
    **FAMILY_SPACE_CHECKS,
    "supernet_seeded": check_supernet_seeded,
    "supernet_matches_extracted": check_supernet_matches_extracted,
    "extract_copies": check_extract_copies,
    "layer_records": check_layer_records,
}


def check_family(space: SearchSpace, *, skip: Sequence[str] = ()) -> None:
    """Run every family check (:data:`FAMILY_CHECKS`, but those named in ``skip``) on ``space``, a small space
    of the family (its supernet is built several times)."""
    run_checks(FAMILY_CHECKS, skip, space)
