"""The core's layout: stage subpackages import each other in one direction, each offers a curated ``__all__``
whose names all resolve, and importing ``nasplat`` or a subpackage loads no heavy dependency."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import nasplat._lazy

CORE = Path(nasplat._lazy.__file__).parent
SUBPACKAGES = sorted(p.parent.name for p in CORE.glob("*/__init__.py"))


def _runtime_imports(path: Path) -> set[str]:
    """The core units (subpackage or top-level module) ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    inside = path.parent != CORE
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if not inside:
                    found.add((node.module or "").split(".")[0])
                continue
            parts = (node.module or "").split(".")
            if parts[0] == "nasplat":
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("nasplat.")}
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(CORE).with_suffix("").parts
        unit = rel[0]
        graph.setdefault(unit, set()).update(u for u in _runtime_imports(path) if u not in (unit, "__version__"))
    return graph


def test_subpackages_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert set(SUBPACKAGES) <= set(graph)
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for dep in sorted(graph.get(unit, ())):
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The graph reader finds imports at all three depths (top, function, relative) and skips typing-only ones."""
    module = tmp_path / "mod.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nfrom nasplat.space import SearchSpace\n"
        "if TYPE_CHECKING:\n    from nasplat.model import Family\n"
        "def f():\n    import nasplat.train._trainer\n    from nasplat import seeds\n"
    )
    assert _runtime_imports(module) == {"space", "train", "seeds"}


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_offered_name_resolves(name: str) -> None:
    package = importlib.import_module(f"nasplat.{name}")
    offered = getattr(package, "__all__", None)
    assert offered, f"nasplat.{name} lists what it offers in __all__"
    for item in offered:
        assert getattr(package, item) is not None
    assert set(offered) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'not_offered'"):
        package.not_offered  # noqa: B018


def test_private_modules_stay_behind_the_init() -> None:
    """Only ``study.record`` and ``study.frames`` (which plugins read whole) and ``testing`` are public modules."""
    public = sorted(
        f"{p.parent.name}.{p.stem}"
        for p in CORE.glob("*/*.py")
        if not p.stem.startswith("_") and p.parent.name != "testing"
    )
    assert public == ["study.frames", "study.record"]


def test_import_stays_light() -> None:
    code = (
        "import sys, nasplat, nasplat.search, nasplat.train, nasplat.study\n"
        "nasplat.train.TrainSettings, nasplat.study.METRIC_PREFIX, nasplat.load_space\n"
        "heavy = [m for m in ('torch', 'optuna', 'ray', 'dash') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
