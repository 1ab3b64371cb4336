"""The cost-model suite: declared metrics returned, finite and non-negative; determinism; devices."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nasplat.errors import NasplatError

from ._common import Check, expect, fail, is_number, run_checks, sample_archs

if TYPE_CHECKING:
    from nasplat.measure import CostModel
    from nasplat.space import Architecture, SearchSpace

CostModelFactory = Callable[[], "CostModel"]

#: A device name no cost model knows.
UNKNOWN_DEVICE = "nasplat-testing-no-such-device"


def _what(model: CostModel, space: SearchSpace) -> str:
    return f"cost model '{getattr(model, 'name', type(model).__name__)}' (space '{space.name}')"


def _devices(model: CostModel, devices: Sequence[str | None] | None) -> list[str | None]:
    if devices is not None:
        return list(devices)
    known = model.devices()
    return [None] if known is None else list(known)


def _refuses_formats(model: CostModel, space: SearchSpace, arch: Architecture, device: str | None) -> bool:
    try:
        model.check_formats(space.family.layers(space, arch), device)
    except NasplatError:
        return True
    return False


def _estimates(model: CostModel, space: SearchSpace, archs: Sequence[Architecture],
               devices: list[str | None]) -> dict[tuple[str, str | None], dict[str, float] | None]:  # fmt: skip
    """Each (architecture, device)'s estimate; None where the model refuses the architecture's number formats
    (it must then refuse the estimate with a NasplatError)."""
    what, check = _what(model, space), "estimates"
    out: dict[tuple[str, str | None], dict[str, float] | None] = {}
    for device in devices:
        for arch in archs:
            text = f"{space.to_string(arch)} on device {device!r}"
            if _refuses_formats(model, space, arch, device):
                try:
                    model.estimate(space, arch, device)
                except NasplatError:
                    out[(arch.key, device)] = None
                    continue
                fail(what, check, f"{text}: check_formats refuses its number formats but estimate() costs it")
            try:
                out[(arch.key, device)] = model.estimate(space, arch, device)
            except NasplatError as exc:
                fail(what, check, f"{text}: estimate() refused it (its formats are supported): {exc}")
    return out


def check_metrics_declared(
    make: CostModelFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
    devices: Sequence[str | None] | None = None, deterministic: bool = True,
) -> None:  # fmt: skip
    """The class has a ``name`` and a non-empty tuple of distinct metric names (``metrics``)."""
    model = make()
    what, check = _what(model, space), "metrics declared"
    expect(isinstance(getattr(model, "name", None), str) and model.name, what, check, "the class needs a `name`")
    metrics = model.metrics
    expect(isinstance(metrics, tuple) and metrics, what, check, f"metrics must be a non-empty tuple, got {metrics!r}")
    expect(all(isinstance(m, str) and m for m in metrics), what, check, f"metric names must be strings: {metrics}")
    expect(len(set(metrics)) == len(metrics), what, check, f"metric names repeat: {metrics}")


def check_devices(make: CostModelFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                  devices: Sequence[str | None] | None = None, deterministic: bool = True) -> None:  # fmt: skip
    """``devices()`` is None (costs do not depend on the device) or a list of names. Each listed device is
    accepted by ``check_device``, and an unknown device is refused with a NasplatError (by a model without
    devices too: a device means nothing to it)."""
    model = make()
    what, check = _what(model, space), "devices"
    known = model.devices()
    expect(known is None or (isinstance(known, list) and all(isinstance(d, str) for d in known)), what, check,
           f"devices() must be None or a list of names, got {known!r}")  # fmt: skip
    if known is None:
        try:
            model.check_device(None)
        except NasplatError as exc:
            fail(what, check, f"a model without devices must accept no device: {exc}")
    for device in known or []:
        try:
            model.check_device(device)
        except NasplatError as exc:
            fail(what, check, f"check_device refuses device '{device}', which devices() lists: {exc}")
    try:
        model.check_device(UNKNOWN_DEVICE)
    except NasplatError:
        return
    fail(what, check, f"check_device accepts the unknown device {UNKNOWN_DEVICE!r}")


def check_estimates(make: CostModelFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                    devices: Sequence[str | None] | None = None, deterministic: bool = True) -> None:  # fmt: skip
    """On every device (default: every device ``devices()`` lists, or None), ``estimate`` returns every
    declared metric as a finite number >= 0; an architecture whose number formats ``check_formats`` refuses is
    refused with a NasplatError."""
    model = make()
    what, check = _what(model, space), "estimates"
    archs = list(archs) if archs is not None else sample_archs(space, 3)
    results = _estimates(model, space, archs, _devices(model, devices))
    for (key, device), res in results.items():
        if res is None:
            continue
        text = f"{space.to_string(space.from_key(key))} on device {device!r}"
        expect(isinstance(res, dict), what, check, f"{text}: estimate() returned {type(res).__name__}, not a dict")
        missing = [m for m in model.metrics if m not in res]
        expect(not missing, what, check, f"{text}: declared metrics missing: {missing}")
        bad = {m: res[m] for m in model.metrics if not (is_number(res[m]) and math.isfinite(res[m]) and res[m] >= 0)}
        expect(not bad, what, check, f"{text}: metrics must be finite numbers >= 0: {bad}")


def check_deterministic(make: CostModelFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                        devices: Sequence[str | None] | None = None, deterministic: bool = True) -> None:  # fmt: skip
    """Estimating again, or with a second instance, gives the same numbers (skipped with ``deterministic=False``,
    for models that measure)."""
    if not deterministic:
        return
    model = make()
    what, check = _what(model, space), "deterministic"
    archs = list(archs) if archs is not None else sample_archs(space, 3)
    devs = _devices(model, devices)
    first = _estimates(model, space, archs, devs)
    expect(_estimates(model, space, archs, devs) == first, what, check, "estimating again gives other numbers")
    expect(_estimates(make(), space, archs[::-1], devs) == first, what, check,
           "a second instance (architectures in another order) gives other numbers")  # fmt: skip


#: Every cost-model check, in the order :func:`check_cost_model` runs them.
COST_MODEL_CHECKS: dict[str, Check] = {
    "metrics_declared": check_metrics_declared,
    "devices": check_devices,
    "estimates": check_estimates,
    "deterministic": check_deterministic,
}


def check_cost_model(make: CostModelFactory, space: SearchSpace, *, archs: Sequence[Architecture] | None = None,
                     devices: Sequence[str | None] | None = None, deterministic: bool = True,
                     skip: Sequence[str] = ()) -> None:  # fmt: skip
    """Run every cost-model check (:data:`COST_MODEL_CHECKS`, but those in ``skip``).

    ``make()`` builds the model (the class itself, when it takes no arguments); ``archs``: architectures of
    ``space`` to cost (default three seeded samples; a lookup table must hold their layers); ``devices``: the
    devices to cost them on (default every device the model lists); ``deterministic=False`` for models that
    measure, whose numbers vary from run to run."""
    run_checks(COST_MODEL_CHECKS, skip, make, space, archs=archs, devices=devices, deterministic=deterministic)
