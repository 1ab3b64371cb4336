"""Supernet: one set of weights holding every architecture of a space.

``with supernet.activate(arch): supernet(x)`` runs the single path of ``arch``. Activation is a context
manager (nestable, restored on exit), so there is no sticky global "active" state. ``extract(arch)``
returns a stand-alone module with only the chosen ops and copied weights.

The stand-alone module contract (what makes export work without nasplat): the module's class lives in a
Python file that imports only ``torch`` and the standard library, defines ``build_model(config: dict)``,
and the instance carries ``nasplat_config`` (a JSON-able dict) such that ``build_model(config)`` rebuilds
the same structure. Its ``forward`` takes the same inputs as the supernet's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (module construction) from a fixed torch seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Supernet(nn.Module):
    """Base class of every family's weight-sharing network."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self._active: list[Architecture] = []

    @contextmanager
    def activate(self, arch: Architecture) -> Iterator[Supernet]:
        """Select the single path of ``arch`` for forward passes inside the block."""
        self.space.validate(arch)
        self._active.append(arch)
        try:
            yield self
        finally:
            self._active.pop()

    @property
    def active(self) -> Architecture:
        if not self._active:
            raise NasplatError(
                "the supernet has no active architecture: call it inside `with supernet.activate(arch):`"
            )
        return self._active[-1]

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.forward_path(self.active, *inputs)

    @abstractmethod
    def forward_path(self, arch: Architecture, *inputs: torch.Tensor) -> Any:
        """Forward pass along the single path of ``arch``."""

    @abstractmethod
    def extract(self, arch: Architecture) -> nn.Module:
        """A stand-alone module of ``arch`` with weights copied from the supernet (see module docstring)."""

    def path_modules(self, arch: Architecture) -> list[nn.Module]:
        """Modules used by ``arch`` (used by BN recalibration to reset only what the path touches).

        The default (every module) is always correct, just slower.
        """
        return list(self.modules())
