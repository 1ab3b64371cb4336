"""Architecture: one frozen, hashable sample of a search space."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from nasplat.errors import NasplatError

Value = str | int | float | bool


@dataclass(frozen=True)
class Architecture:
    """The choices made for each dimension of a space, in the space's dimension order.

    Two architectures are equal (and hash equal) when they belong to the same space and make the same
    choices. ``key`` is a canonical text form used to identify an architecture in storages and tables.
    """

    space: str
    choices: tuple[tuple[str, Value], ...]

    @classmethod
    def from_dict(cls, space: str, choices: Mapping[str, Value]) -> Architecture:
        return cls(space, tuple((str(k), v) for k, v in choices.items()))

    def __getitem__(self, label: str) -> Value:
        for k, v in self.choices:
            if k == label:
                return v
        raise KeyError(label)

    def get(self, label: str, default: Value | None = None) -> Value | None:
        try:
            return self[label]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[tuple[str, Value]]:
        return iter(self.choices)

    def as_dict(self) -> dict[str, Value]:
        return dict(self.choices)

    @property
    def key(self) -> str:
        """Canonical, order-stable text form: ``label=value`` pairs joined by ``;`` (values JSON-encoded)."""
        return ";".join(f"{k}={json.dumps(v)}" for k, v in self.choices)

    @property
    def digest(self) -> str:
        """A short stable hash of ``key`` (12 hex digits), handy for file names."""
        return hashlib.sha256(f"{self.space}|{self.key}".encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps({"space": self.space, "choices": self.as_dict()})

    def to_yaml(self) -> str:
        return yaml.safe_dump({"space": self.space, "choices": self.as_dict()}, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NasplatError(f"architecture JSON is malformed: {exc}") from exc
        return cls._from_data(data, "JSON")

    @classmethod
    def from_yaml(cls, text: str) -> Architecture:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise NasplatError(f"architecture YAML is malformed: {exc}") from exc
        return cls._from_data(data, "YAML")

    @classmethod
    def _from_data(cls, data: Any, fmt: str) -> Architecture:
        if not (
            isinstance(data, dict) and isinstance(data.get("space"), str) and isinstance(data.get("choices"), dict)
        ):
            raise NasplatError(f"architecture {fmt} must be a mapping with 'space' (text) and 'choices' (mapping)")
        return cls.from_dict(data["space"], data["choices"])
