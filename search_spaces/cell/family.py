"""The NAS-Bench-201 cell family: spaces over the six edges of a four-node cell.

A cell has nodes 0 (input) to 3 (output); dimension ``cell.edge_i_j`` is the op on the edge into node ``i``
from node ``j``, one of ``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`` (a space may
offer a subset). The string form is NAS-Bench-201's own, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``.
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from nasplat.errors import NasplatError, SpecError
from nasplat.measure import LayerRecord
from nasplat.model import ClassificationTask, Family, MacroSettings, seeded
from nasplat.registry import register
from nasplat.space import CategoricalDimension, label_key_paths

from .standalone import EDGES, OPS, edge_nodes, plan
from .supernet import LABEL_PREFIX, CellSupernet, macro_config

if TYPE_CHECKING:
    from nasplat.model import Task
    from nasplat.space import Architecture, SearchSpace, Value

#: The dimension labels a cell space must declare, in NAS-Bench-201's string order.
EDGE_LABELS: tuple[str, ...] = tuple(LABEL_PREFIX + e for e in EDGES)


class CellMacro(MacroSettings):
    """Macro settings of a cell space (``macro:`` in its file).

    The network is a ``stem_channels``-wide 3x3 conv stem, then ``num_stages`` stages of ``cells_per_stage``
    cells; between stages a residual reduction block doubles the channels and halves the resolution.
    """

    stem_channels: int = Field(ge=1, description="channels of the stem and of the first stage (NB201: 16)")
    cells_per_stage: int = Field(ge=1, description="cells in each stage (NB201: 5)")
    num_stages: int = Field(default=3, ge=1, description="stages; channels double between stages (NB201: 3)")


@register("family", "cell")
class CellFamily(Family):
    """NAS-Bench-201-style cells in NB201's macro skeleton (see :mod:`.standalone` for the network)."""

    name: ClassVar[str] = "cell"
    macro_model: ClassVar[type[MacroSettings]] = CellMacro

    # checks --------------------------------------------------------------------------------------------------
    def check_space(self, space: SearchSpace) -> None:
        file = str(space.path) if space.path else None
        keys = label_key_paths(space)
        for label, (_, key) in keys.items():
            if label not in EDGE_LABELS:
                raise SpecError(
                    file, key, f"unknown dimension '{label}' for family 'cell'; allowed: {', '.join(EDGE_LABELS)}"
                )
        missing = [label for label in EDGE_LABELS if label not in keys]
        if missing:
            raise SpecError(
                file,
                "dimensions",
                f"family 'cell' needs the 6 edge dimensions {', '.join(EDGE_LABELS)}; missing: {', '.join(missing)}",
            )
        for label in EDGE_LABELS:
            i, _ = keys[label]
            d = space.spec.dimensions[i]
            if not isinstance(d, CategoricalDimension):
                raise SpecError(file, f"dimensions[{i}].type", f"'{label}' must be categorical (got '{d.type}')")
            for k, choice in enumerate(d.choices):
                if not isinstance(choice, str) or choice not in OPS:
                    raise SpecError(
                        file,
                        f"dimensions[{i}].choices[{k}]",
                        f"'{label}': unknown op {choice!r}; allowed: {', '.join(OPS)}",
                    )
        macro: Any = space.macro
        channels, height, width = macro.input_shape
        if min(channels, height, width) < 1:
            raise SpecError(file, "macro.input_shape", f"expected three positive sizes (got {list(macro.input_shape)})")
        if macro.num_classes < 1:
            raise SpecError(file, "macro.num_classes", f"expected a positive class count (got {macro.num_classes})")
        factor = 2 ** (macro.num_stages - 1)
        if height % factor or width % factor:
            raise SpecError(
                file,
                "macro.input_shape",
                f"height and width must be divisible by {factor} ({macro.num_stages} stages halve the resolution "
                f"{macro.num_stages - 1} times); got {height}x{width}",
            )

    # text forms ----------------------------------------------------------------------------------------------
    def to_string(self, space: SearchSpace, arch: Architecture) -> str:
        """NAS-Bench-201's string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        nodes = []
        for i in (1, 2, 3):
            nodes.append("|" + "|".join(f"{arch[f'{LABEL_PREFIX}edge_{i}_{j}']}~{j}" for j in range(i)) + "|")
        return "+".join(nodes)

    def from_string(self, space: SearchSpace, text: str) -> Architecture:
        text = text.strip()
        if "=" in text and "~" not in text:  # the generic key form
            return super().from_string(space, text)
        example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
        bad = f"'{text}' is not a NAS-Bench-201 cell string (expected e.g. '{example}')"
        parts = text.split("+")
        if len(parts) != 3:
            raise NasplatError(f"{bad}: it needs 3 nodes joined by '+', found {len(parts)}")
        values: dict[str, Value] = {}
        for i, part in enumerate(parts, start=1):
            if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
                raise NasplatError(f"{bad}: node {i} ('{part}') must be enclosed in '|'")
            entries = part[1:-1].split("|")
            if len(entries) != i:
                raise NasplatError(f"{bad}: node {i} must have {i} input(s), found {len(entries)}")
            for j, entry in enumerate(entries):
                op, sep, src = entry.partition("~")
                if not sep or src != str(j):
                    raise NasplatError(f"{bad}: node {i} input {j + 1} ('{entry}') must be 'op~{j}'")
                if op not in OPS:
                    raise NasplatError(f"{bad}: unknown op '{op}' on edge {i}<-{j}; allowed: {', '.join(OPS)}")
                label = f"{LABEL_PREFIX}edge_{i}_{j}"
                allowed = space.dimension(label).choices
                if op not in allowed:
                    raise NasplatError(
                        f"cell '{text}': op '{op}' on {label} is not in space '{space.name}'; "
                        f"allowed: {', '.join(map(str, allowed))}"
                    )
                values[label] = op
        return space.make(values)

    def canonical(self, space: SearchSpace, arch: Architecture) -> Architecture:
        """A representative of the cells of ``space`` that compute the same function as ``arch``.

        Cells are compared by :func:`signature`, the sum of terms node 3 computes: ``none`` edges and edges
        that read an all-zero node contribute nothing, so edges cut off from node 0 or unable to reach node 3
        behave as ``none`` (a cell whose output is cut off from its input is the all-``none`` cell);
        ``skip_connect`` passes its source's terms through; sums are unordered. This is NAS-Bench-201's own
        isomorphism test (``to_unique_str``, 6,466 classes of its 15,625 cells) made exact about zeros and
        nested sums: 4,930 classes. Two cells with the same signature compute the same function up to a
        relabelling of their weights (and the per-channel offset a ``nor_conv`` op's BatchNorm adds when
        it reads zeros, which is ignored, as NAS-Bench-201 does).

        The representative is the member of ``space`` (choices and constraints respected) with that
        signature and the fewest non-``none`` edges, ties broken by NAS-Bench-201's op order per edge; so it
        is also the cheapest network of its class.
        """
        space.validate(arch)
        return self._representatives(space)[signature(arch)]

    def _representatives(self, space: SearchSpace) -> dict[tuple[str, ...], Architecture]:
        cache: dict[str, dict[tuple[str, ...], Architecture]] = self.__dict__.setdefault("_canonical_cache", {})
        table = cache.get(space.hash)
        if table is None:
            best: dict[tuple[str, ...], tuple[tuple[int, ...], Architecture]] = {}
            for member in space.enumerate():
                ops = [str(member[label]) for label in EDGE_LABELS]
                rank = (sum(op != "none" for op in ops), *(OPS.index(op) for op in ops))
                key = signature(member)
                if key not in best or rank < best[key][0]:
                    best[key] = (rank, member)
            table = {key: member for key, (_, member) in best.items()}
            cache[space.hash] = table
        return table

    def describe(self, space: SearchSpace, arch: Architecture) -> dict[str, object]:
        """Nodes and edges for drawing, plus the string forms and macro settings.

        Every edge is listed with its op; ``live`` is false for ``none`` edges and for edges that cannot
        affect the output (cut off from node 0 or unable to reach node 3), which a drawing may grey out.
        """
        nodes = [
            {"id": 0, "label": "input"},
            {"id": 1, "label": "node 1"},
            {"id": 2, "label": "node 2"},
            {"id": 3, "label": "output"},
        ]
        ops = ops_of(arch)
        live = live_edges(ops)
        edges = []
        for e in EDGES:
            i, j = edge_nodes(e)
            edges.append({"source": j, "target": i, "op": ops[e], "label": LABEL_PREFIX + e, "live": live[e]})
        return {
            "string": self.to_string(space, arch),
            "canonical": self.to_string(space, self.canonical(space, arch)),
            "choices": arch.as_dict(),
            "nodes": nodes,
            "edges": edges,
            "macro": macro_config(space),
        }

    # networks ------------------------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, *, seed: int = 0) -> CellSupernet:
        with seeded(seed):
            return CellSupernet(space)

    def task(self, space: SearchSpace) -> Task:
        return ClassificationTask()

    def extremes(self, space: SearchSpace) -> tuple[Architecture, Architecture]:
        """Largest: the heaviest op each edge allows (3x3 conv first); smallest: the lightest op that still
        carries a signal (skip first; ``none`` only when an edge allows nothing else)."""
        heavy = ["nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none"]
        light = ["skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3", "none"]

        def pick(order: list[str]) -> Architecture:
            return space.make({d.label: min(d.choices, key=lambda op: order.index(str(op))) for d in space.dimensions})

        return pick(heavy), pick(light)

    def layers(self, space: SearchSpace, arch: Architecture) -> list[LayerRecord]:
        """The stand-alone network at batch 1, named as its modules are (adds are named after their node).

        ``none`` edges contribute nothing; ``skip_connect`` an ``identity`` record; a node summing ``n`` inputs
        ``n - 1`` ``add`` records.

        Records are immutable, so they are built once and shared: per space, the records of every op on every
        edge of every cell position, of every add and of the fixed blocks are made when the space is first
        seen, and the list of each distinct cell configuration is kept (up to ``_LAYERS_CACHE_MAX`` of them).
        Each call returns a new list.
        """
        key = space.hash
        plans: dict[str, _LayerPlan] = self.__dict__.setdefault("_layer_plans", {})
        lp = plans.get(key)
        if lp is None:
            lp = plans[key] = _LayerPlan(macro_config(space))
        records = lp.by_choices.get(arch.choices)
        if records is None:
            records = lp.build(ops_of(arch))
            if len(lp.by_choices) >= _LAYERS_CACHE_MAX:
                lp.by_choices.clear()
            lp.by_choices[arch.choices] = records
        return list(records)


#: Distinct cell configurations whose record lists :meth:`CellFamily.layers` keeps per space.
_LAYERS_CACHE_MAX = 50_000


class _LayerPlan:
    """The layer records of one cell space's macro skeleton, built once and shared between architectures.

    Each cell position has a table from a *slot* (an edge holding an op, or the ``n``-th add of a node) to
    its records; an architecture's cell is a list of slots, and the network is the head, then each position's
    records for those slots (or a reduction block), then the tail.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        c_in, h, w = cfg["input_shape"]
        c = cfg["stem_channels"]
        self.head: tuple[LayerRecord, ...] = (_conv("stem.conv", c_in, c, 3, 1, (h, w)), _bn("stem.bn", c, (h, w)))
        # body: ("reduce", records of the block) or ("cell", slot -> records of that cell position)
        self.body: list[tuple[str, Any]] = []
        for k, (kind, ci, co, _) in enumerate(plan(cfg)):
            p = f"cells.{k}"
            if kind == "reduce":
                h2, w2 = h // 2, w // 2
                block = (
                    *_relu_conv_bn(f"{p}.conv_a", ci, co, 3, 2, (h, w)),
                    *_relu_conv_bn(f"{p}.conv_b", co, co, 3, 1, (h2, w2)),
                    LayerRecord(f"{p}.downsample.pool", "avgpool", ci, ci, (h, w), (h2, w2), kernel=2, stride=2),
                    _conv(f"{p}.downsample.conv", ci, co, 1, 1, (h2, w2)),
                    LayerRecord(f"{p}.add", "add", co, co, (h2, w2), (h2, w2)),
                )
                self.body.append(("reduce", block))
                h, w = h2, w2
            else:
                self.body.append(("cell", _cell_table(p, ci, (h, w))))
            c = co
        self.tail: tuple[LayerRecord, ...] = (
            _bn("lastact.bn", c, (h, w)),
            LayerRecord("lastact.relu", "relu", c, c, (h, w), (h, w)),
            LayerRecord("global_pooling", "global_avgpool", c, c, (h, w), (1, 1)),
            LayerRecord("classifier", "linear", c, cfg["num_classes"], (1, 1), (1, 1), bias=True),
        )
        self.by_choices: dict[tuple[tuple[str, Value], ...], tuple[LayerRecord, ...]] = {}

    def build(self, ops: dict[str, str]) -> tuple[LayerRecord, ...]:
        """Every record of the network whose cells hold ``ops`` (edge -> op)."""
        slots: list[int] = []
        inputs = [0, 0, 0, 0]
        for e_index, (edge, node) in enumerate(_EDGE_INTO):
            op = ops[edge]
            if op == "none":
                continue
            inputs[node] += 1
            slots.append(8 * e_index + _OP_INDEX[op])  # _edge_slot
            if inputs[node] > 1:
                slots.append(100 + 10 * node + inputs[node])  # _add_slot
        out: list[LayerRecord] = list(self.head)
        for kind, item in self.body:
            if kind == "reduce":
                out.extend(item)
            else:
                out.extend(chain.from_iterable(map(item.__getitem__, slots)))
        out.extend(self.tail)
        return tuple(out)


_EDGE_INTO: tuple[tuple[str, int], ...] = tuple((e, edge_nodes(e)[0]) for e in EDGES)
_OP_INDEX: dict[str, int] = {op: i for i, op in enumerate(OPS)}


def _edge_slot(e_index: int, op: str) -> int:
    return 8 * e_index + OPS.index(op)


def _add_slot(node: int, n: int) -> int:
    return 100 + 10 * node + n


def _cell_table(prefix: str, c: int, hw: tuple[int, int]) -> dict[int, tuple[LayerRecord, ...]]:
    """Slot -> records for the cell at ``prefix``: every op on every edge, and every add of every node."""
    table: dict[int, tuple[LayerRecord, ...]] = {}
    for e_index, edge in enumerate(EDGES):
        for op in OPS:
            name = f"{prefix}.edges.{edge}.{op}"
            if op == "none":
                continue
            if op == "skip_connect":
                recs: tuple[LayerRecord, ...] = (LayerRecord(name, "identity", c, c, hw, hw),)
            elif op == "avg_pool_3x3":
                recs = (LayerRecord(name, "avgpool", c, c, hw, hw, kernel=3, stride=1),)
            else:
                recs = tuple(_relu_conv_bn(name, c, c, 1 if op == "nor_conv_1x1" else 3, 1, hw))
            table[_edge_slot(e_index, op)] = recs
    for node in (1, 2, 3):
        for n in range(2, node + 1):
            name = f"{prefix}.node_{node}.add" + ("" if n == 2 else f"_{n - 1}")
            table[_add_slot(node, n)] = (LayerRecord(name, "add", c, c, hw, hw),)
    return table


# helpers ------------------------------------------------------------------------------------------------------


def _conv(name: str, c_in: int, c_out: int, kernel: int, stride: int, in_hw: tuple[int, int]) -> LayerRecord:
    pad = kernel // 2
    out_hw = ((in_hw[0] + 2 * pad - kernel) // stride + 1, (in_hw[1] + 2 * pad - kernel) // stride + 1)
    return LayerRecord(name, "conv2d", c_in, c_out, in_hw, out_hw, kernel=kernel, stride=stride, bias=False)


def _bn(name: str, c: int, hw: tuple[int, int]) -> LayerRecord:
    return LayerRecord(name, "batchnorm", c, c, hw, hw)


def _relu_conv_bn(
    prefix: str, c_in: int, c_out: int, kernel: int, stride: int, in_hw: tuple[int, int]
) -> list[LayerRecord]:
    conv = _conv(f"{prefix}.conv", c_in, c_out, kernel, stride, in_hw)
    return [
        LayerRecord(f"{prefix}.relu", "relu", c_in, c_in, in_hw, in_hw),
        conv,
        _bn(f"{prefix}.bn", c_out, conv.out_hw),
    ]


def ops_of(arch: Architecture) -> dict[str, str]:
    """Edge name (``edge_i_j``) -> op of a cell architecture."""
    return {e: str(arch[LABEL_PREFIX + e]) for e in EDGES}


def live_edges(ops: dict[str, str]) -> dict[str, bool]:
    """Whether each edge can affect the cell's output: not ``none``, its source fed from node 0 through
    non-``none`` edges, and its target able to reach node 3 through non-``none`` edges."""
    fed = {0}
    for i in (1, 2, 3):
        if any(ops[f"edge_{i}_{j}"] != "none" and j in fed for j in range(i)):
            fed.add(i)
    reaches = {3}
    for j in (2, 1):
        if any(ops[f"edge_{i}_{j}"] != "none" and i in reaches for i in range(j + 1, 4)):
            reaches.add(j)
    out = {}
    for e in EDGES:
        i, j = edge_nodes(e)
        out[e] = ops[e] != "none" and j in fed and i in reaches
    return out


def signature(arch: Architecture) -> tuple[str, ...]:
    """The terms node 3 sums, sorted: a normal form of the function a cell computes (see ``canonical``)."""
    ops = ops_of(arch)
    nodes: list[tuple[str, ...]] = [("x",)]
    for i in (1, 2, 3):
        terms: list[str] = []
        for j in range(i):
            op, src = ops[f"edge_{i}_{j}"], nodes[j]
            if op == "none" or not src:
                continue
            if op == "skip_connect":
                terms.extend(src)
            else:
                terms.append(f"{op}({'+'.join(src)})")
        nodes.append(tuple(sorted(terms)))
    return nodes[3]
