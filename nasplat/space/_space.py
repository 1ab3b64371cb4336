"""Search spaces declared as data: the YAML schema, its validation, and the runtime ``SearchSpace``.

A space file is inert data (``yaml.safe_load`` then pydantic with ``extra="forbid"``). Every problem is
reported as a :class:`~nasplat.errors.SpecError` naming the file, the key path and what was expected.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nasplat.errors import NasplatError, SpecError, UnknownNameError

from ._architecture import Architecture, Value

if TYPE_CHECKING:
    from nasplat.model import Family

LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
MAX_DIMENSION_VALUES = 1_000_000  # values of one dimension (an integer range is checked before it is expanded)
MAX_SPACE_VALUES = 2_000_000  # values of all dimensions together (the width of the one-hot encoding)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DimensionBase(_Strict):
    label: str | None = Field(default=None, pattern=LABEL_PATTERN, description="dotted label, e.g. cell.edge_1_0")
    labels: list[Annotated[str, Field(pattern=LABEL_PATTERN)]] | None = Field(
        default=None, description="several dimensions sharing the same choices"
    )
    description: str = ""

    @model_validator(mode="after")
    def _one_label_form(self) -> _DimensionBase:
        if (self.label is None) == (self.labels is None):
            raise ValueError("give exactly one of 'label' (one dimension) or 'labels' (several with the same choices)")
        if self.labels is not None and not self.labels:
            raise ValueError("'labels' must not be empty")
        return self

    def expanded_labels(self) -> list[str]:
        return [self.label] if self.label is not None else list(self.labels or [])


class CategoricalDimension(_DimensionBase):
    """Unordered choices (ops, block types)."""

    type: Literal["categorical"]
    choices: list[str | bool | int | float] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Value]) -> list[Value]:
        if len({json.dumps(c) for c in v}) != len(v):
            raise ValueError("choices must be unique")
        return v


class OrdinalDimension(_DimensionBase):
    """Ordered choices (widths, kernel sizes, bit-widths): mutation moves to a neighbour."""

    type: Literal["ordinal"]
    choices: list[int | float | str] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Value]) -> list[Value]:
        if len({json.dumps(c) for c in v}) != len(v):
            raise ValueError("choices must be unique")
        return v


class IntegerDimension(_DimensionBase):
    """An integer range ``low..high`` (inclusive) with a step."""

    type: Literal["integer"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> IntegerDimension:
        if self.high < self.low:
            raise ValueError(f"'high' ({self.high}) must be >= 'low' ({self.low})")
        n = self.n_values
        if n > MAX_DIMENSION_VALUES:
            raise ValueError(
                f"'low' {self.low} to 'high' {self.high} in steps of {self.step} gives {n:,} values; a dimension "
                f"may have at most {MAX_DIMENSION_VALUES:,} (use a larger 'step' or a narrower range)"
            )
        return self

    @property
    def n_values(self) -> int:
        """How many values ``low..high`` holds (computed without expanding the range)."""
        return (self.high - self.low) // self.step + 1

    def expanded_values(self) -> list[Value]:
        return list(range(self.low, self.high + 1, self.step))


_DIMENSION_TYPES: dict[str, type[BaseModel]] = {
    "categorical": CategoricalDimension,
    "ordinal": OrdinalDimension,
    "integer": IntegerDimension,
}

DimensionSpec = Annotated[CategoricalDimension | OrdinalDimension | IntegerDimension, Field(discriminator="type")]


class SpaceSpec(_Strict):
    """The schema of a search-space file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-/]+$")
    version: int = Field(ge=1)
    family: str
    description: str = ""
    dimensions: list[DimensionSpec] = Field(min_length=1)
    macro: dict[str, Any] = Field(default_factory=dict, description="fixed settings, checked by the family")
    constraints: list[str] = Field(default_factory=list, description="expressions over labels that must hold")


# --------------------------------------------------------------------------------------------------------------
# loading helpers


def _loc_to_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("categorical", "ordinal", "integer") or part.startswith("function-"):
            continue  # pydantic's union-branch tags are not keys of the file
        else:
            out += f".{part}" if out else str(part)
    return out


def spec_error_from_validation(file: str | None, exc: ValidationError, prefix: str = "") -> SpecError:
    """Turn pydantic's report into one line: the first problem with its key path.

    Unknown keys are reported first: a misspelt key also makes the intended one look missing.
    """
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    path = _loc_to_path(err["loc"])
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        allowed = _allowed_keys(exc, err)
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
    elif err["type"] == "missing" and err["loc"] and isinstance(err["loc"][-1], int):
        path = _loc_to_path(err["loc"][:-1])
        path = f"{prefix}.{path}" if prefix and path else prefix or path
        msg = f"too few items: item [{err['loc'][-1]}] is missing"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "union_tag_invalid":
        msg = f"expected 'type' to be one of: categorical, ordinal, integer (got {err.get('input')!r})"
    else:
        got = err.get("input")
        if not isinstance(got, (dict, list)):
            shown = repr(got)
            if len(shown) > 80:  # a 10,000-character value would bury the message
                shown = f"{shown[:60]}... ({len(str(got)):,} characters)"
            msg = f"{msg} (got {shown})"
    extra = len(exc.errors()) - 1
    if extra > 0:
        msg += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return SpecError(file, path, msg)


def _allowed_keys(exc: ValidationError, err: Any) -> list[str]:
    """The keys allowed where an unknown key was found (looked up through the model that raised)."""
    models: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = list(_SCHEMAS)
    while stack:
        m = stack.pop()
        if m.__name__ in models:
            continue
        models[m.__name__] = m
        for f in m.model_fields.values():
            for t in _model_types(f.annotation):
                stack.append(t)
    root = models.get(exc.title)
    if root is None:
        return []
    candidates: list[type[BaseModel]] = [root]
    for part in list(err["loc"])[:-1]:
        if isinstance(part, int):
            continue
        if part in _DIMENSION_TYPES:
            candidates = [_DIMENSION_TYPES[str(part)]]
            continue
        if len(candidates) != 1:
            return []
        field = candidates[0].model_fields.get(str(part))
        candidates = _model_types(field.annotation) if field else []
    model = candidates[0] if len(candidates) == 1 else None
    return sorted(model.model_fields) if model else []


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for a in typing.get_args(annotation) for t in _model_types(a)]


_SCHEMAS: list[type[BaseModel]] = []


def register_schema(model: type[BaseModel]) -> None:
    """Let error messages list the allowed keys of ``model`` and its nested models."""
    if model not in _SCHEMAS:
        _SCHEMAS.append(model)


register_schema(SpaceSpec)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file, the key and the YAML position.

    Goes through :func:`nasplat.files.read_yaml`: binary or non-UTF-8 bytes, duplicate keys, deep nesting,
    alias bombs and oversized files are one line each, never a traceback.
    """
    from nasplat.files import read_yaml

    data = read_yaml(path)
    if data is None:
        raise SpecError(str(path), "", "the file is empty (or holds only comments); expected a mapping of keys")
    if not isinstance(data, dict):
        raise SpecError(str(path), "", f"expected a mapping at the top level, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------------------------
# constraint expressions: a tiny safe language over dimension labels


_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.Mod, ast.Constant, ast.Name, ast.Attribute, ast.Load, ast.Tuple, ast.List, ast.IfExp,
)  # fmt: skip


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _outer_names(node: ast.AST) -> list[str]:
    """The full dotted names used in an expression (``a.b.c``, not its parts ``a`` or ``a.b``)."""
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _dotted(node)
        if name is not None:
            return [name]
    return [n for child in ast.iter_child_nodes(node) for n in _outer_names(child)]


_MAX_CONSTRAINT_DEPTH = 50  # levels of sub-expressions in one constraint
_NUM, _STR, _LIST = "number", "string", "list"


def _kind(value: object) -> str:
    return _STR if isinstance(value, str) else _NUM


def _depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return deepest


def _preview(choices: Sequence[Value], n: int = 8) -> str:
    shown = ", ".join(repr(c) for c in choices[:n])
    return shown + (f", ... ({len(choices):,} in all)" if len(choices) > n else "")


class Constraint:
    """A boolean expression over labels, e.g. ``stage1.depth <= stage2.depth or cell.edge_1_0 != 'none'``.

    Checked when declared: the syntax (a small safe subset of Python: no calls, no attribute access other than
    dotted labels), the labels, and the types (given each label's choices): ordering compares two numbers or
    two strings, arithmetic works on numbers, and a label compared with a constant must have that constant
    among its choices. Evaluation errors (``1 / 0``) are a :class:`SpecError` naming the constraint's key.
    """

    def __init__(
        self,
        text: str,
        labels: Mapping[str, Sequence[Value]] | set[str],
        file: str | None,
        key: str,
    ) -> None:
        self.text = text
        self.file = file
        self.key = key
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise SpecError(file, key, f"constraint is not a valid expression: {exc.msg}") from None
        except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes; absurd nesting
            raise SpecError(file, key, f"constraint is not a valid expression: {exc}") from None
        if _depth(tree) > _MAX_CONSTRAINT_DEPTH:
            raise SpecError(file, key, f"constraint is nested more than {_MAX_CONSTRAINT_DEPTH} levels deep")
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise SpecError(file, key, f"constraint uses '{type(node).__name__}', which is not allowed")
            if isinstance(node, ast.Attribute) and _dotted(node) is None:
                raise SpecError(
                    file, key, f"constraint uses attribute access '{ast.unparse(node)}'; only dotted labels are allowed"
                )
            if isinstance(node, ast.Constant) and (node.value is None or not isinstance(node.value, (str, int, float))):
                raise SpecError(
                    file, key, f"constraint uses the constant {node.value!r}; allowed: numbers, strings, True, False"
                )
        for name in _outer_names(tree):
            if name not in labels:
                raise SpecError(file, key, f"constraint names unknown label '{name}'")
        self._tree = tree
        if isinstance(labels, Mapping):
            self._choices: Mapping[str, Sequence[Value]] = labels
            self._sets: dict[str, set[Value]] = {}
            self._kinds(tree.body)

    # static checks ---------------------------------------------------------------------------------------------
    def _fail(self, expected: str) -> SpecError:
        return SpecError(self.file, self.key, f"constraint {expected}")

    def _kinds(self, node: ast.AST) -> frozenset[str]:
        """The kinds of value ``node`` can take (number, string, list); raises on a type error."""
        if isinstance(node, (ast.Name, ast.Attribute)):
            return frozenset(_kind(c) for c in self._choices[_dotted(node) or ""])
        if isinstance(node, ast.Constant):
            return frozenset([_kind(node.value)])
        if isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                self._kinds(e)
            return frozenset([_LIST])
        if isinstance(node, ast.BoolOp):
            for e in node.values:
                self._kinds(e)
            return frozenset([_NUM])
        if isinstance(node, ast.UnaryOp):
            operand = self._kinds(node.operand)
            if isinstance(node.op, ast.USub) and operand != {_NUM}:
                raise self._fail(f"negates '{ast.unparse(node.operand)}', which can be a {_or(operand - {_NUM})}")
            return frozenset([_NUM])
        if isinstance(node, ast.IfExp):
            self._kinds(node.test)
            return self._kinds(node.body) | self._kinds(node.orelse)
        if isinstance(node, ast.BinOp):
            left, right = self._kinds(node.left), self._kinds(node.right)
            same_kind = isinstance(node.op, ast.Add)  # number + number, string + string, list + list
            out = set()
            for a in left:
                for b in right:
                    if not (a == b == _NUM or (same_kind and a == b)):
                        raise self._fail(
                            f"applies '{_OP_TEXT[type(node.op)]}' to a {a} ('{ast.unparse(node.left)}') "
                            f"and a {b} ('{ast.unparse(node.right)}'); it needs two numbers"
                            + (" (or two strings, or two lists)" if same_kind else "")
                        )
                    out.add(a)
            return frozenset(out)
        if isinstance(node, ast.Compare):
            left_node = node.left
            left = self._kinds(left_node)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._kinds(comp)
                self._check_comparison(op, left_node, left, comp, right)
                left_node, left = comp, right
            return frozenset([_NUM])
        raise self._fail(f"cannot use {type(node).__name__}")  # unreachable: the node types are checked above

    def _check_comparison(
        self, op: ast.cmpop, left_node: ast.expr, left: frozenset[str], right_node: ast.expr, right: frozenset[str]
    ) -> None:
        sym = _OP_TEXT[type(op)]
        if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            if not (left == right == {_NUM} or left == right == {_STR}):
                raise self._fail(
                    f"orders a {_or(left)} ('{ast.unparse(left_node)}') against a {_or(right)} "
                    f"('{ast.unparse(right_node)}') with '{sym}'; ordering needs two numbers or two strings"
                )
        elif isinstance(op, (ast.In, ast.NotIn)):
            if _NUM in right or (_STR in right and left != {_STR}):
                raise self._fail(
                    f"'{ast.unparse(left_node)} {sym} {ast.unparse(right_node)}': the right side of '{sym}' must be "
                    "a list (or a string, when the left side is a string)"
                )
            if isinstance(right_node, (ast.Tuple, ast.List)):
                for e in right_node.elts:
                    self._check_choice(left_node, e)
        else:  # == and !=
            self._check_choice(left_node, right_node)
            self._check_choice(right_node, left_node)

    def _check_choice(self, label_node: ast.expr, const_node: ast.expr) -> None:
        """A label compared with a constant must have that constant among its choices (else: a typo)."""
        if not isinstance(label_node, (ast.Name, ast.Attribute)) or not isinstance(const_node, ast.Constant):
            return
        label = _dotted(label_node) or ""
        choices = self._choices[label]
        allowed = self._sets.get(label)
        if allowed is None:
            allowed = self._sets[label] = set(choices)
        if const_node.value not in allowed:
            raise self._fail(
                f"compares '{label}' with {const_node.value!r}, which is not one of its choices: {_preview(choices)}"
            )

    # evaluation ------------------------------------------------------------------------------------------------
    def holds(self, values: Mapping[str, Value]) -> bool:
        try:
            return bool(self._eval(self._tree.body, values))
        except NasplatError:
            raise
        except Exception as exc:  # a closed little language: whatever fails, the declaration is at fault
            names = dict.fromkeys(_outer_names(self._tree))
            shown = f"with {', '.join(f'{k}={values.get(k)!r}' for k in names)}" if names else "whatever the choices"
            raise self._fail(f"cannot be evaluated ({type(exc).__name__}: {exc}) {shown}") from None

    def _eval(self, node: ast.AST, v: Mapping[str, Value]) -> Any:
        ev = self._eval
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name is None:
                raise self._fail("attribute access is not allowed")
            return v[name]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            return [ev(e, v) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            vals = (ev(e, v) for e in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp):
            x = ev(node.operand, v)
            return (not x) if isinstance(node.op, ast.Not) else -x
        if isinstance(node, ast.IfExp):
            return ev(node.body, v) if ev(node.test, v) else ev(node.orelse, v)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left, v), ev(node.right, v)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            return a % b
        if isinstance(node, ast.Compare):
            left = ev(node.left, v)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp, v)
                ok = {
                    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
                    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
                }[type(op)](left, right)  # fmt: skip
                if not ok:
                    return False
                left = right
            return True
        raise self._fail(f"cannot evaluate {type(node).__name__}")


_OP_TEXT: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%", ast.Eq: "==", ast.NotEq: "!=",
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip


def _or(kinds: frozenset[str] | set[str]) -> str:
    return " or ".join(sorted(kinds)) or "value"


_CHECK_SAMPLES = 16  # random assignments every constraint is evaluated on when the space is declared
_EXHAUSTIVE_UP_TO = 10_000  # spaces this small are searched completely for a member; larger ones by sampling


def check_constraints(space: SearchSpace) -> None:
    """Evaluate every constraint on a few seeded random assignments (evaluation errors name the constraint),
    then make sure at least one architecture satisfies them all (else the space is empty: a SpecError)."""
    if not space.constraints:
        return
    rng = np.random.default_rng(0)
    dims = space.dimensions

    def draw() -> dict[str, Value]:
        return {d.label: d.choices[int(rng.integers(len(d.choices)))] for d in dims}

    for _ in range(_CHECK_SAMPLES):
        values = draw()
        for c in space.constraints:
            c.holds(values)
    total = math.prod(len(d.choices) for d in dims)
    if total <= _EXHAUSTIVE_UP_TO:
        if any(True for _ in space.enumerate()):
            return
        how = f"none of its {total:,} combinations does"
    else:
        if any(space.satisfies(draw()) for _ in range(_EXHAUSTIVE_UP_TO)):
            return
        how = f"none of {_EXHAUSTIVE_UP_TO:,} random combinations (of {total:,}) does, so it cannot be sampled"
    raise SpecError(space.file, "constraints", f"no architecture satisfies every constraint: {how}")


# --------------------------------------------------------------------------------------------------------------
# the runtime space


class Dimension:
    """One flat dimension of a space as algorithms see it: a label and its ordered list of choices."""

    __slots__ = ("_index", "choices", "kind", "label")

    def __init__(self, label: str, kind: str, choices: list[Value]) -> None:
        self.label = label
        self.kind = kind  # categorical | ordinal | integer
        self.choices = choices
        self._index = {json.dumps(c): i for i, c in enumerate(choices)}

    def index(self, value: Value) -> int:
        i = self._index.get(json.dumps(value))
        if i is None and isinstance(value, float) and value.is_integer():
            i = self._index.get(json.dumps(int(value)))
        if i is None:
            raise NasplatError(f"'{self.label}': {value!r} is not an allowed choice; allowed: {self.choices}")
        return i

    @property
    def ordered(self) -> bool:
        return self.kind in ("ordinal", "integer")

    def __repr__(self) -> str:
        return f"Dimension({self.label!r}, {self.kind}, {self.choices!r})"


class SearchSpace:
    """A validated space: flat dimensions, the family that builds it, macro settings and constraints.

    Algorithms see only the flat dimensions; the family turns an Architecture into networks, layer records,
    strings and tasks. Use :func:`load_space` to get one from a file or a registered name.
    """

    def __init__(
        self, spec: SpaceSpec, family: Family, macro: BaseModel, path: Path | None = None, file: str | None = None
    ) -> None:
        self.spec = spec
        self.family = family
        self.macro = macro
        self.path = path
        #: what error messages call the declaration (the file, or where the declaration came from)
        self.file = file or (str(path) if path else None)
        file = self.file
        self.dimensions: list[Dimension] = []
        seen: set[str] = set()
        total = 0  # counted before anything is expanded: a range's size is known from low, high and step
        for i, d in enumerate(spec.dimensions):
            total += (d.n_values if isinstance(d, IntegerDimension) else len(d.choices)) * len(d.expanded_labels())
            if total > MAX_SPACE_VALUES:
                raise SpecError(
                    file, f"dimensions[{i}]", f"the dimensions up to here have {total:,} values in all; a space may "
                    f"have at most {MAX_SPACE_VALUES:,} (the width of its one-hot encoding)"
                )  # fmt: skip
        for i, d in enumerate(spec.dimensions):
            choices: list[Value] = d.expanded_values() if isinstance(d, IntegerDimension) else list(d.choices)
            for label in d.expanded_labels():
                if label in seen:
                    raise SpecError(file, f"dimensions[{i}]", f"label '{label}' is declared twice")
                seen.add(label)
                self.dimensions.append(Dimension(label, d.type, choices))
        self._by_label = {d.label: d for d in self.dimensions}
        self.constraints = [
            Constraint(text, {d.label: d.choices for d in self.dimensions}, file, f"constraints[{i}]")
            for i, text in enumerate(spec.constraints)
        ]
        check_constraints(self)
        family.check_space(self)

    # identity ------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def spec_hash(self) -> str:
        """Hash of this declaration alone (12 hex digits), without the spaces it references."""
        blob = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @cached_property
    def hash(self) -> str:
        """Stable hash of the space's content (12 hex digits): its declaration and every space it references
        (a quant space's base), so editing a base space changes the hash. Results carry it as provenance."""
        refs = self.family.referenced_spaces(self)
        if not refs:
            return self.spec_hash
        blob = json.dumps(
            {"spec": self.spec.model_dump(mode="json"), "bases": {k: s.hash for k, s in sorted(refs.items())}},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_record(self) -> dict[str, Any]:
        """The one stored form of this space (JSON-able): what studies, Ray workers, fine-tune set-ups and
        predictor manifests keep, and :func:`space_from_record` rebuilds. It embeds the spaces it references,
        so it rebuilds the same space even where the files it was loaded from are gone."""
        return {
            "name": self.name,
            "hash": self.hash,
            "file": str(self.path.resolve()) if self.path else None,
            "spec": self.spec.model_dump(mode="json"),
            "bases": {k: s.to_record() for k, s in sorted(self.family.referenced_spaces(self).items())},
        }

    @property
    def labels(self) -> list[str]:
        return [d.label for d in self.dimensions]

    def dimension(self, label: str) -> Dimension:
        try:
            return self._by_label[label]
        except KeyError:
            raise UnknownNameError("dimension", label, self.labels) from None

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, family={self.spec.family!r}, dims={len(self.dimensions)})"

    # construction and checks ---------------------------------------------------------------------------------
    def make(self, choices: Mapping[str, Value], *, check: bool = True) -> Architecture:
        """An Architecture from a label -> value mapping (every label required, nothing extra)."""
        missing = [d.label for d in self.dimensions if d.label not in choices]
        extra = sorted(set(choices) - set(self._by_label))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing labels: {', '.join(missing)}")
            if extra:
                parts.append(f"unknown labels: {', '.join(extra)}")
            raise NasplatError(f"architecture does not fit space '{self.name}': {'; '.join(parts)}")
        values: list[tuple[str, Value]] = []
        for d in self.dimensions:
            v = choices[d.label]
            v = d.choices[d.index(v)]  # normalise (1.0 -> 1) and check membership
            values.append((d.label, v))
        arch = Architecture(self.name, tuple(values))
        if check:
            self.validate(arch)
        return arch

    def validate(self, arch: Architecture) -> None:
        """Raise a NasplatError naming the problem if ``arch`` is not a member of this space."""
        if arch.space != self.name:
            raise NasplatError(f"architecture belongs to space '{arch.space}', not '{self.name}'")
        if [k for k, _ in arch.choices] != self.labels:
            raise NasplatError(f"architecture labels do not match space '{self.name}'")
        for d, (_, v) in zip(self.dimensions, arch.choices, strict=True):
            d.index(v)
        values = arch.as_dict()
        for c in self.constraints:
            if not c.holds(values):
                raise NasplatError(f"architecture violates constraint of space '{self.name}': {c.text}")

    def satisfies(self, choices: Mapping[str, Value]) -> bool:
        return all(c.holds(choices) for c in self.constraints)

    # sampling ------------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, max_tries: int = 10_000) -> Architecture:
        """A uniformly random member (rejection sampling against the constraints)."""
        for _ in range(max_tries):
            values = {d.label: d.choices[int(rng.integers(len(d.choices)))] for d in self.dimensions}
            if self.satisfies(values):
                return Architecture(self.name, tuple(values.items()))
        raise NasplatError(f"space '{self.name}': no architecture satisfied the constraints in {max_tries} tries")

    def mutate(self, arch: Architecture, rng: np.random.Generator, n_changes: int = 1) -> Architecture:
        """Change ``n_changes`` dimensions: categorical to another choice, ordered to a neighbouring one."""
        for _ in range(1000):
            values = arch.as_dict()
            changeable = [d for d in self.dimensions if len(d.choices) > 1]
            if not changeable:
                return arch
            picks = rng.choice(len(changeable), size=min(n_changes, len(changeable)), replace=False)
            for p in picks:
                d = changeable[int(p)]
                i = d.index(values[d.label])
                if d.ordered:
                    steps = [j for j in (i - 1, i + 1) if 0 <= j < len(d.choices)]
                    j = steps[int(rng.integers(len(steps)))]
                else:
                    j = int(rng.integers(len(d.choices) - 1))
                    j = j + 1 if j >= i else j
                values[d.label] = d.choices[j]
            if self.satisfies(values):
                return Architecture(self.name, tuple(values.items()))
        return arch

    def enumerate(self) -> Iterator[Architecture]:
        """Every member, in lexicographic order of choice indices."""
        for combo in itertools.product(*(d.choices for d in self.dimensions)):
            values = dict(zip(self.labels, combo, strict=True))
            if self.satisfies(values):
                yield Architecture(self.name, tuple(values.items()))

    def size(self) -> int:
        """Number of members (exact: enumerates when there are constraints and the space is small)."""
        total = math.prod(len(d.choices) for d in self.dimensions)
        if not self.constraints:
            return total
        if total > 5_000_000:
            raise NasplatError(f"space '{self.name}' has constraints and {total} raw members: too many to count")
        return sum(1 for _ in self.enumerate())

    # encodings -----------------------------------------------------------------------------------------------
    @cached_property
    def encoding_width(self) -> int:
        return sum(len(d.choices) for d in self.dimensions)

    def encode(self, arch: Architecture) -> np.ndarray:
        """One-hot vector over every dimension's choices (float32, length ``encoding_width``)."""
        out = np.zeros(self.encoding_width, dtype=np.float32)
        offset = 0
        for d, (_, v) in zip(self.dimensions, arch.choices, strict=True):
            out[offset + d.index(v)] = 1.0
            offset += len(d.choices)
        return out

    def indices(self, arch: Architecture) -> list[int]:
        return [d.index(v) for d, (_, v) in zip(self.dimensions, arch.choices, strict=True)]

    # text forms (delegated to the family) --------------------------------------------------------------------
    def to_string(self, arch: Architecture) -> str:
        return self.family.to_string(self, arch)

    def from_string(self, text: str) -> Architecture:
        """Parse the family's string form, or the JSON / key form of any architecture."""
        text = text.strip()
        if text.startswith("{"):
            return self.make(Architecture.from_json(text).as_dict())
        return self.family.from_string(self, text)

    def from_key(self, key: str) -> Architecture:
        values: dict[str, Value] = {}
        for part in key.split(";"):
            label, _, raw = part.partition("=")
            values[label] = json.loads(raw)
        return self.make(values)


# --------------------------------------------------------------------------------------------------------------


def label_key_paths(space: SearchSpace) -> dict[str, tuple[int, str]]:
    """Label -> (index in ``dimensions``, key path of the label's declaration), for families' error messages."""
    out: dict[str, tuple[int, str]] = {}
    for i, d in enumerate(space.spec.dimensions):
        if d.label is not None:
            out[d.label] = (i, f"dimensions[{i}].label")
        for k, label in enumerate(d.labels or []):
            out[label] = (i, f"dimensions[{i}].labels[{k}]")
    return out


def parse_space(data: dict[str, Any], file: str | None = None, path: Path | None = None) -> SearchSpace:
    """Validate a space declaration (already read as a mapping) and build the runtime space."""
    from nasplat import registry

    try:
        spec = SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(file, exc) from None
    try:
        family_cls = registry.get("family", spec.family)
    except UnknownNameError as exc:
        raise SpecError(file, "family", f"unknown family '{spec.family}'; allowed: {', '.join(exc.allowed)}") from None
    family: Family = family_cls()
    try:
        macro = family.macro_model.model_validate(spec.macro)
    except ValidationError as exc:
        raise spec_error_from_validation(file, exc, prefix="macro") from None
    return SearchSpace(spec, family, macro, path, file)


def _space_files() -> dict[str, Path]:
    """Registered space files by the ``name`` inside them (and by ``<folder>/<stem>``)."""
    from nasplat import registry
    from nasplat.files import read_yaml

    found: dict[str, Path] = {}
    for root in registry.space_dirs():
        for file in sorted(root.rglob("*.yaml")):
            try:
                data = read_yaml(file)
            except NasplatError:  # an unreadable file is reported when it is loaded by path
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                found[data["name"]] = file
    return found


def list_spaces() -> dict[str, Path]:
    return dict(sorted(_space_files().items()))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a space from a YAML file path, or by the name of a registered (shipped or plugin) space."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise NasplatError(f"{p}: file not found")
        return parse_space(read_yaml_mapping(p), str(p), p)
    files = _space_files()
    if str(name_or_path) not in files:
        raise UnknownNameError("space", str(name_or_path), list(files))
    f = files[str(name_or_path)]
    return parse_space(read_yaml_mapping(f), str(f), f)


# --------------------------------------------------------------------------------------------------------------
# the stored form of a space, and references from one space to another

_record_bases: ContextVar[Mapping[str, Any] | None] = ContextVar("nasplat_record_bases", default=None)


def space_from_record(record: Mapping[str, Any], where: str | None = None) -> SearchSpace:
    """Rebuild a space from :meth:`SearchSpace.to_record` (the one way every stage does it).

    The declaration keeps its file path (so relative references resolve as they did when it was loaded), the
    spaces it references come from the record itself, and the result must have the recorded hash. ``where``
    names the record in error messages (default: its file)."""
    spec = record.get("spec")
    file = record.get("file")
    label = where or (str(file) if file else "stored space")
    if not isinstance(spec, dict):
        raise NasplatError(f"{label}: holds no space declaration")
    token = _record_bases.set(dict(record.get("bases") or {}))
    try:
        space = parse_space(spec, label, Path(file) if file else None)
    finally:
        _record_bases.reset(token)
    for key, got in (("hash", space.hash), ("spec_hash", space.spec_hash)):
        want = record.get(key)
        if want is not None and got != want:
            raise NasplatError(
                f"{label}: the stored declaration of space '{space.name}' does not match its hash "
                f"(rebuilt {got}, recorded {want})"
            )
    return space


def resolve_space_ref(space: SearchSpace, ref: str) -> SearchSpace:
    """A space that ``space``'s declaration names: a registered name, or a YAML path relative to its file.

    While a record is rebuilt, the referenced spaces come from the record."""
    embedded = (_record_bases.get() or {}).get(ref)
    if embedded is not None:
        return space_from_record(embedded, f"{space.file} (base space '{ref}')")
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") and not p.is_absolute() and space.path is not None:
        p = space.path.parent / p
    return load_space(p if p.suffix in (".yaml", ".yml") else ref)
