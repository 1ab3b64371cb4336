"""The ``zero_cost`` estimator: training-free scores of each architecture's network at initialisation.

Metrics (all ``"maximize"``: larger means "predicted better"): ``zc_<proxy>`` for every asked proxy of
:mod:`.zero_cost` (``params``, ``macs``, ``flops``, ``synflow``, ``grad_norm``, ``snip``, ``naswot``, ``l2_norm``,
``jacov``, ``fisher``, ``grasp``, ``zen``, ``meco``, ``az_expressivity``, ``az_progressivity``, ``az_trainability``),
and ``zero_cost``, the combined score.

The combined score is AZ-NAS's rank aggregation (:func:`.zero_cost.combine`: the sum over components of
``log(percentile)``), made computable for one architecture alone: each component's percentile is taken in a
fixed *reference sample* of the space (``reference`` distinct seeded draws of ``space.sample``, seed
``seed``), scored once per estimator and kept. So an architecture's ``zero_cost`` depends only on it, the space
and the options, never on what else is evaluated, and batches can be split between workers. Its resolution is
that of the reference (``reference + 1`` levels per component); ``reference=0`` turns it off (``zero_cost`` is
then 0.0). Components default to
AZ-NAS's four (``az_expressivity``, ``az_progressivity``, ``az_trainability``, ``flops``) and are always scored,
whether or not their own metrics were asked for.

Options (keyword parameters; ``registry.build`` rejects others): ``proxies`` (default: every proxy),
``batch_size`` (64, NAS-Bench-Suite-Zero's), ``data`` (``"auto"``: the registered dataset ``cifar10`` when the
space takes 3x32x32 images and the data is there, else seeded Gaussian noise; or ``"noise"``, or any registered
dataset name), ``seed`` (weights, batch, reference), ``reference`` (32), ``components``, ``device`` (``"cpu"``).
A network that cannot run in float64 (quant layers) gets synflow in float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import Estimator
from nasplat.registry import register

from .zero_cost import ALL_PROXIES, AZ_COMPONENTS, ZeroCostProxies, ZeroCostSettings, combine

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

#: The combined score's metric name.
COMBINED = "zero_cost"


def _check_names(what: str, names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = [str(p) for p in names]
    unknown = [p for p in out if p not in ALL_PROXIES]
    if unknown:
        raise NasplatError(f"estimator 'zero_cost': unknown {what} '{unknown[0]}'; allowed: {', '.join(ALL_PROXIES)}")
    if len(set(out)) != len(out):
        raise NasplatError(f"estimator 'zero_cost': {what} listed twice: {out}")
    return out


def _metrics(proxies: Sequence[str]) -> dict[str, str]:
    return {**{f"zc_{p}": "maximize" for p in proxies}, COMBINED: "maximize"}


def _resolve_data(space: SearchSpace, data: str) -> str:
    if data != "auto":
        return data
    shape = tuple(int(v) for v in getattr(space.macro, "input_shape", ()))
    if shape != (3, 32, 32):
        return "noise"
    try:
        from nasplat.datasets import load_dataset

        load_dataset("cifar10", "train")
    except (NasplatError, OSError):
        return "noise"
    return "cifar10"


@register("estimator", "zero_cost")
class ZeroCostEstimator(Estimator):
    """Zero-cost proxies and their AZ-NAS-style combination (see the module docstring)."""

    name: ClassVar[str] = "zero_cost"

    def __init__(
        self,
        space: SearchSpace,
        *,
        proxies: Sequence[str] = ALL_PROXIES,
        batch_size: int = 64,
        data: str = "auto",
        seed: int = 0,
        reference: int = 32,
        components: Sequence[str] = AZ_COMPONENTS,
        device: str = "cpu",
    ) -> None:
        if reference < 0:
            raise NasplatError(f"estimator 'zero_cost': reference must be >= 0, got {reference}")
        self.space = space
        self.proxies = _check_names("proxy", proxies)
        self.components = _check_names("component", components)
        self.reference_size = int(reference)
        self.seed = int(seed)
        self.data = _resolve_data(space, str(data))
        self.settings = ZeroCostSettings(
            seed=self.seed, batch_size=int(batch_size), data=self.data, device=device, synflow_fallback=True
        )
        self._zp = ZeroCostProxies(space, self.settings)
        self._reference: dict[str, np.ndarray] | None = None

    def metrics(self) -> dict[str, str]:
        return _metrics(self.proxies)

    @classmethod
    def declared_metrics(cls, space: SearchSpace, options: Mapping[str, Any]) -> dict[str, str] | None:
        return _metrics(_check_names("proxy", options.get("proxies", ALL_PROXIES)))

    def reference(self) -> dict[str, np.ndarray]:
        """The components' scores of the reference sample (scored on first use, then kept)."""
        if self._reference is None:
            rng = np.random.default_rng(self.seed)
            archs: dict[str, Architecture] = {}
            for _ in range(20 * self.reference_size):
                if len(archs) >= self.reference_size:
                    break
                a = self.space.sample(rng)
                archs.setdefault(a.key, a)
            self._reference = self._zp.compute(list(archs.values()), self.components)
        return self._reference

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        if not archs:
            return []
        for a in archs:
            self.space.validate(a)
        asked = list(dict.fromkeys([*self.proxies, *self.components]))
        values = self._zp.compute(list(archs), asked)
        if self.reference_size and self.components:
            comb = combine({c: values[c] for c in self.components}, self.reference(), self.components)
        else:
            comb = np.zeros(len(archs))
        return [
            {**{f"zc_{p}": float(values[p][i]) for p in self.proxies}, COMBINED: float(comb[i])}
            for i in range(len(archs))
        ]

    def provenance(self) -> dict[str, str]:
        return {
            "estimator": self.name,
            "space": self.space.name,
            "space_hash": self.space.hash,
            "dataset": self.data,
            "batch_size": str(self.settings.batch_size),
            "seed": str(self.seed),
            "device": self.settings.device,
            "proxies": ",".join(self.proxies),
            "components": ",".join(self.components),
            "reference": str(self.reference_size),
        }
