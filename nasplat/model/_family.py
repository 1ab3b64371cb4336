"""Family: what turns a space's flat choices into networks, layer records, text forms and a task.

A family is registered by name (``registry.register("family", NAME)``) and named in a space file's
``family`` key. Algorithms never switch on a family's name: they call these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    from nasplat.measure import LayerRecord
    from nasplat.space import Architecture, SearchSpace

    from ._supernet import Supernet
    from ._task import Task


class MacroSettings(BaseModel):
    """Base for a family's fixed macro settings (``macro:`` in a space file). Families subclass it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_shape: tuple[int, int, int]  # channels, height, width of one input
    num_classes: int = 10


class Family(ABC):
    """Builder and describer of one kind of space."""

    name: ClassVar[str]
    macro_model: ClassVar[type[BaseModel]] = MacroSettings

    def check_space(self, space: SearchSpace) -> None:  # noqa: B027 - optional hook
        """Cross-check a space's dimensions and macro against what this family can build (raise SpecError)."""

    def referenced_spaces(self, space: SearchSpace) -> dict[str, SearchSpace]:
        """Other spaces this space's declaration names (reference as written -> the space), e.g. a quant space's
        ``base_space``. They are part of the space's hash and of its stored record."""
        return {}

    # text forms
    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        """The family's compact string form (default: the architecture key)."""
        return arch.key

    def from_string(self, space: SearchSpace, text: str) -> Architecture:
        if "=" not in text:
            raise NasplatError(f"'{text}' is not an architecture of space '{space.name}'")
        return space.from_key(text)

    def canonical(self, space: SearchSpace, arch: Architecture) -> Architecture:
        """A representative of the architectures that compute the same network (default: itself)."""
        return arch

    # networks
    @abstractmethod
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> Supernet:
        """A weight-sharing network holding every architecture of the space, initialised from ``seed``.

        Wrap construction in :func:`nasplat.model.seeded` so the global RNG is left untouched.
        """

    @abstractmethod
    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        """The stand-alone network of ``arch`` as layer records, for cost models and encoders."""

    @abstractmethod
    def task(self, space: SearchSpace) -> Task:
        """Loss and metrics for this family's networks (classification for the image families)."""

    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        """The (largest, smallest) architectures of ``space``, for the sandwich rule.

        Default: the last and the first choice of every ordinal or integer dimension (declare them from small
        to large). A space with categorical dimensions needs the family to override this.
        """
        unordered = [d.label for d in space.dimensions if not d.ordered]
        if unordered:
            raise NasplatError(
                f"space '{space.name}': family '{self.name}' does not say which architectures are largest and "
                f"smallest, and dimensions {unordered} are categorical (the sandwich rule needs Family.extremes)"
            )
        largest = space.make({d.label: d.choices[-1] for d in space.dimensions})
        smallest = space.make({d.label: d.choices[0] for d in space.dimensions})
        return largest, smallest

    def bundle_extras(self, space: SearchSpace, arch: Architecture) -> dict[str, str]:
        """Further files (name -> text) for an export bundle of ``arch``, e.g. a sampling script (default none).

        They must run without nasplat, like ``load.py``."""
        return {}

    def describe(self, space: SearchSpace, arch: Architecture) -> dict[str, object]:
        """A JSON-able description of ``arch`` in the family's own form (for dashboards and export)."""
        return {"string": self.to_string(space, arch), "choices": arch.as_dict()}
