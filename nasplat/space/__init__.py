"""Search spaces: the declaration schema, constraints, :class:`SearchSpace` (with its one stored form,
``to_record`` / :func:`space_from_record`, base spaces included in the hash) and :class:`Architecture`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasplat._lazy import exports

if TYPE_CHECKING:
    from ._architecture import Architecture, Value
    from ._space import (
        CategoricalDimension,
        Constraint,
        OrdinalDimension,
        SearchSpace,
        SpaceSpec,
        label_key_paths,
        list_spaces,
        load_space,
        parse_space,
        read_yaml_mapping,
        register_schema,
        resolve_space_ref,
        space_from_record,
        spec_error_from_validation,
    )

__all__ = [
    "Architecture",
    "CategoricalDimension",
    "Constraint",
    "OrdinalDimension",
    "SearchSpace",
    "SpaceSpec",
    "Value",
    "label_key_paths",
    "list_spaces",
    "load_space",
    "parse_space",
    "read_yaml_mapping",
    "register_schema",
    "resolve_space_ref",
    "space_from_record",
    "spec_error_from_validation",
]

__getattr__, __dir__ = exports(__name__)
