"""The one reader of the user's input files (YAML, JSON, CSV) and the one check of output locations.

Every decode, parse, size or nesting problem of an input file becomes one :class:`~nasplat.errors.NasplatError`
line naming the file (a :class:`~nasplat.errors.SpecError` naming the key too, where there is one): binary or
non-UTF-8 bytes, malformed syntax, duplicate keys, nesting deeper than :data:`MAX_NESTING`, YAML aliases that
expand beyond :data:`MAX_YAML_NODES` values, files larger than the reader's limit. Nothing here raises a
``RecursionError``, ``MemoryError`` or ``UnicodeDecodeError`` at the user.

Output locations are checked before any work starts (:func:`check_output_file`, :func:`check_output_dir`): the
nearest existing folder must be a folder where a file can really be created (a probe file is written and
removed, since ``os.access`` says yes to root on read-only or virtual file systems).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nasplat.errors import NasplatError, SpecError

if TYPE_CHECKING:
    import pandas as pd

MAX_NESTING = 100  # levels of YAML/JSON collections inside each other
MAX_YAML_NODES = 2_000_000  # values a YAML document may stand for once its aliases are expanded
MAX_YAML_BYTES = 16 * 2**20
MAX_JSON_BYTES = 64 * 2**20
MAX_CSV_BYTES = 1024 * 2**20


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def read_text(path: str | Path, *, max_bytes: int, kind: str = "text") -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped); one-line errors for every problem."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise SpecError(str(p), "", f"is a folder; expected a {kind} file")
        if size > max_bytes:
            raise SpecError(str(p), "", f"file is {_mib(size)}; a {kind} file may be at most {_mib(max_bytes)}")
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)  # never more: a device or pipe may report no size and never end
    except FileNotFoundError:
        raise NasplatError(f"{p}: file not found") from None
    except OSError as exc:
        raise NasplatError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:  # grew while we looked, or a special file that reports no size
        raise SpecError(str(p), "", f"file is larger than {_mib(max_bytes)}, the limit for a {kind} file")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise SpecError(str(p), "", f"binary data (a NUL byte at offset {nul}); expected a UTF-8 {kind} file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        raise SpecError(
            str(p), "", f"not UTF-8 text (byte 0x{bad:02x} at offset {exc.start}); save it as UTF-8 {kind}"
        ) from None


# ------------------------------------------------------------------------------------------------------ YAML


class _KeyProblem(Exception):
    def __init__(self, path: Sequence[str | int | None], message: str) -> None:
        super().__init__(message)
        self.key = _key_path(path)
        self.message = message


def _key_path(parts: Sequence[str | int | None]) -> str:
    parts = [p for p in parts if p is not None]
    if len(parts) > 8:  # a path 100 levels deep would bury the message
        return f"{_key_path(parts[:6])}... ({len(parts)} levels)"
    out = ""
    for part in parts:
        if part is None:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and deep nesting, knowing the key path it is at."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | int | None] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:  # type: ignore[override]
        # ``index`` is None for a mapping key, the key's node for a mapping value, the position in a sequence
        if isinstance(index, yaml.ScalarNode):
            part: str | int | None = str(index.value)
        elif isinstance(index, yaml.Node):
            part = "?"
        elif isinstance(index, int) and not isinstance(index, bool):
            part = index
        else:
            part = None
        if len(self._path) > MAX_NESTING:
            raise _KeyProblem(self._path, f"nested more than {MAX_NESTING} levels deep")
        self._path.append(part)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._path.pop()

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node: yaml.MappingNode = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key.tag, str(key.value))
            line = key.start_mark.line + 1
            if ident in seen:
                raise _KeyProblem(
                    [*self._path, str(key.value)],
                    f"duplicate key (given on line {seen[ident]} and again on line {line})",
                )
            seen[ident] = line
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases and documents whose aliases expand to more than MAX_YAML_NODES values."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            active.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[nid] > MAX_YAML_NODES:
                raise _KeyProblem(
                    [], f"its aliases expand to more than {MAX_YAML_NODES:,} values (line {node.start_mark.line + 1})"
                )
            continue
        if nid in sizes:
            continue
        if nid in active:
            raise _KeyProblem([], f"recursive alias (line {node.start_mark.line + 1}): a value that contains itself")
        active.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def parse_yaml(text: str, file: str | None) -> Any:
    """YAML text (one document, the safe subset) as Python data; problems are one SpecError line."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except _KeyProblem as exc:
        raise SpecError(file, exc.key, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or str(exc).splitlines()[0]
        raise SpecError(file, "", f"malformed YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:  # ReaderError (a character YAML does not allow) and the like
        position = getattr(exc, "position", None)
        where = f" (character {position + 1})" if isinstance(position, int) else ""
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise SpecError(file, "", f"malformed YAML{where}: {reason}") from None
    except (RecursionError, MemoryError):
        raise SpecError(file, "", "YAML too deeply nested or too large to read") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The data of a YAML file (any top-level type); every problem is one line naming the file (and key)."""
    return parse_yaml(read_text(path, max_bytes=max_bytes, kind="YAML"), str(path))


# ------------------------------------------------------------------------------------------------------ JSON


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _KeyProblem([key], "duplicate key")
        out[key] = value
    return out


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The data of a JSON file; truncated, binary, duplicate-key or too deeply nested files are one line."""
    text = read_text(path, max_bytes=max_bytes, kind="JSON")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _KeyProblem as exc:
        raise SpecError(str(path), exc.key, exc.message) from None
    except json.JSONDecodeError as exc:
        what = "truncated JSON" if exc.pos >= len(text.rstrip()) else "malformed JSON"
        raise NasplatError(f"{path}: {what} (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise NasplatError(f"{path}: JSON too deeply nested or too large to read") from None


def read_json_mapping(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    data = read_json(path, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise NasplatError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------------ CSV


def read_csv(
    path: str | Path,
    required: Sequence[str] = (),
    *,
    as_text: bool = False,
    max_bytes: int = MAX_CSV_BYTES,
) -> pd.DataFrame:
    """A CSV table with a header row, the ``required`` columns and at least one row.

    ``as_text`` keeps every cell a string (empty cells stay ``""``). Problems are one line naming the file
    (and the column): empty file, header only, duplicate or missing columns, ragged rows, bad bytes.
    """
    import csv
    import io

    import pandas as pd

    p = Path(path)
    text = read_text(p, max_bytes=max_bytes, kind="CSV")
    if not text.strip():
        raise NasplatError(f"{p}: the file is empty; expected a CSV table with a header row")
    try:
        header = next(csv.reader(io.StringIO(text)))
    except (csv.Error, StopIteration) as exc:
        raise NasplatError(f"{p}: cannot read the header row as CSV ({exc})") from None
    names = [h.strip() for h in header]
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise NasplatError(f"{p}: column {', '.join(repr(d) for d in dupes)} appears more than once in the header")
    try:
        if as_text:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        else:
            frame = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasplatError(f"{p}: cannot read as CSV ({reason})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise NasplatError(
            f"{p}: no column {', '.join(repr(m) for m in missing)}; columns: {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise NasplatError(f"{p}: the table has a header row but no rows; expected at least one row")
    return frame


# ------------------------------------------------------------------------------------------------------ outputs


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None: one can)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".nasplat-write-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def _where(option: str | None, path: Path) -> str:
    return f"{option} {path}" if option else str(path)


def folder_problem(folder: str | Path) -> str | None:
    """Why no file can be written in ``folder`` (or, where it does not exist yet, created under its nearest
    existing ancestor); None when one can. Probes with a real file, which ``os.access`` cannot replace: it
    says yes to root on read-only and virtual file systems (``/proc``)."""
    base = _nearest_existing(Path(folder))
    if not base.is_dir():
        return f"'{base}' is not a folder"
    reason = _probe(base)
    return None if reason is None else f"no file can be created in '{base}' ({reason})"


def _check_location(target: Path, shown: Path, option: str | None, what: str) -> None:
    why = folder_problem(target)
    if why is not None:
        raise NasplatError(f"{_where(option, shown)}: cannot write {what} there: {why}")


def check_output_file(path: str | Path, option: str | None = None) -> Path:
    """Check, before any work, that a file can be written at ``path`` (its missing parent folders can be made).

    ``option`` (e.g. ``--out``) is named in the message. Nothing is left behind.
    """
    p = Path(path)
    if p.is_dir():
        raise NasplatError(f"{_where(option, p)}: is a folder; expected the path of a file to write")
    if p.exists() and not os.access(p, os.W_OK):
        raise NasplatError(f"{_where(option, p)}: the file exists and cannot be overwritten (permission denied)")
    _check_location(p.parent, p, option, "the file")
    return p


def check_output_dir(path: str | Path, option: str | None = None) -> Path:
    """Check, before any work, that a folder can be created (or written into) at ``path``. Nothing is left behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NasplatError(f"{_where(option, p)}: exists and is not a folder")
    _check_location(p, p, option, "files" if p.exists() else "the folder")
    return p
