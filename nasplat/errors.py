"""User-facing errors: each one renders as a single clear line, never a traceback."""

from __future__ import annotations


class NasplatError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class SpecError(NasplatError):
    """A declaration (space or run file) is invalid.

    Carries the file, the dotted key path and what was expected, so the message always says where to look.
    """

    def __init__(self, file: str | None, key: str, expected: str) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        where = f"{file}: " if file else ""
        at = f"at '{key}': " if key else ""
        super().__init__(f"{where}{at}{expected}")


class DatasetMissingError(NasplatError):
    """A dataset's files are not where they should be; the message says how to get them."""


class UnknownNameError(NasplatError):
    """A name (space, family, model, sampler...) is not registered; lists the allowed ones."""

    def __init__(self, role: str, name: str, allowed: list[str]) -> None:
        self.role = role
        self.name = name
        self.allowed = sorted(allowed)
        super().__init__(f"unknown {role} '{name}'; allowed: {', '.join(self.allowed) or '(none registered)'}")
