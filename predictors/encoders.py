"""Encoders: one-hot choices (any family), analytical costs (any family), and for families that describe an
architecture as a graph with ops on its edges (the cell family does, through ``describe``) the path
encoding and a graph form.

Capabilities, not names: :class:`PathEncoder` and :class:`GraphEncoder` support a space when its family's
``describe(space, arch)`` returns ``nodes`` and ``edges`` (each edge with ``source``, ``target``, ``op``,
``label`` naming its dimension, and ``live``: whether the edge can affect the output). Every encoder
encodes ``space.family.canonical(arch)`` by default, so architectures that compute the same network
(isomorphic cells, edges cut off by ``none``) encode identically.

Rows are cached per (encoder, space hash, architecture), so encoding the same architectures again (for
each model, fold or seed of a benchmark) costs a dictionary look-up.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nasplat.errors import NasplatError
from nasplat.measure import Encoder
from nasplat.registry import register

if TYPE_CHECKING:
    from nasplat.space import Architecture, SearchSpace

_ROW_CACHE: dict[tuple[str, str, Architecture], np.ndarray] = {}
_ROW_CACHE_MAX = 400_000
_SUPPORT: dict[tuple[str, str], bool] = {}  # (space name, hash) -> whether the family gives edge graphs
#: Widest path encoding built (ops ** path length grows fast on big graphs).
MAX_PATH_FEATURES = 20_000


class RowEncoder(Encoder):
    """An encoder that encodes one architecture at a time (rows cached)."""

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        raise NotImplementedError

    def encode(self, space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
        prepared = self.prepare(space, archs)
        rows = []
        for a in prepared:
            key = (self.name, space.hash, a)
            r = _ROW_CACHE.get(key)
            if r is None:
                r = np.asarray(self.row(space, a), dtype=np.float32)
                if len(_ROW_CACHE) >= _ROW_CACHE_MAX:
                    _ROW_CACHE.clear()
                _ROW_CACHE[key] = r
            rows.append(r)
        if not rows:
            return np.zeros((0, len(self.feature_names(space))), dtype=np.float32)
        return np.stack(rows)


@register("encoder", "onehot")
class OneHotEncoder(RowEncoder):
    """One-hot of every dimension's choice (``space.encode``), of the canonical architecture by default."""

    name: ClassVar[str] = "onehot"

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        return space.encode(arch)

    def feature_names(self, space: SearchSpace) -> list[str]:
        return [f"{d.label}={c}" for d in space.dimensions for c in d.choices]


@register("encoder", "costs")
class CostEncoder(RowEncoder):
    """``log(1 + count)`` of the analytical parameter count, MACs and activation bytes (from the family's
    layer records, through the ``analytical`` cost model)."""

    name: ClassVar[str] = "costs"
    metrics: ClassVar[tuple[str, ...]] = ("params_count", "macs", "activation_bytes")

    def supports(self, space: SearchSpace) -> bool:
        from nasplat import registry

        return "analytical" in registry.available("cost_model")

    def requirement(self) -> str:
        return "the 'analytical' cost model to be registered"

    def _model(self) -> Any:
        from nasplat import registry

        model = getattr(self, "_cost_model", None)
        if model is None:
            model = registry.get("cost_model", "analytical")()
            self._cost_model = model
        return model

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        costs = self._model().estimate(space, arch)
        return np.log1p(np.array([max(float(costs[m]), 0.0) for m in self.metrics]))

    def feature_names(self, space: SearchSpace) -> list[str]:
        return [f"log1p({m})" for m in self.metrics]


# --------------------------------------------------------------------------------------------------------------
# graph-described families


@dataclass(frozen=True)
class EdgeGraph:
    """An architecture as a DAG with an op on each edge (from the family's ``describe``).

    ``edges`` are ``(source, target, op, label)`` for every edge slot of the space, ``live`` whether each can
    affect the output; ``inputs``/``outputs`` the nodes with no incoming / no outgoing edge slots.
    """

    nodes: tuple[int, ...]
    edges: tuple[tuple[int, int, str, str], ...]
    live: tuple[bool, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def adjacency(self) -> np.ndarray:
        """``A[i, j] = 1`` when a live edge leads from node ``nodes[i]`` to node ``nodes[j]``."""
        pos = {n: k for k, n in enumerate(self.nodes)}
        a = np.zeros((len(self.nodes), len(self.nodes)), dtype=np.float32)
        for (s, t, _, _), alive in zip(self.edges, self.live, strict=True):
            if alive:
                a[pos[s], pos[t]] = 1.0
        return a


def edge_graph(space: SearchSpace, arch: Architecture) -> EdgeGraph | None:
    """The edge graph of ``arch``, or None when the family does not describe architectures as such."""
    try:
        d = space.family.describe(space, arch)
        nodes = tuple(int(n["id"]) for n in d["nodes"])  # type: ignore[index, attr-defined, union-attr]
        edges_raw: Any = d["edges"]
        edges = tuple((int(e["source"]), int(e["target"]), str(e["op"]), str(e["label"])) for e in edges_raw)
        live = tuple(bool(e["live"]) for e in edges_raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not edges or not nodes:
        return None
    targets = {t for _, t, _, _ in edges}
    sources = {s for s, _, _, _ in edges}
    inputs = tuple(n for n in nodes if n not in targets)
    outputs = tuple(n for n in nodes if n not in sources)
    if not inputs or not outputs:
        return None
    return EdgeGraph(nodes, edges, live, inputs, outputs)


class _GraphEncoder(RowEncoder):
    """Base of encoders that need an edge-described family."""

    def supports(self, space: SearchSpace) -> bool:
        key = (space.name, space.hash)
        if key not in _SUPPORT:
            _SUPPORT[key] = self._check(space)
        return _SUPPORT[key]

    def _check(self, space: SearchSpace) -> bool:
        try:
            g = edge_graph(space, space.sample(np.random.default_rng(0)))
        except NasplatError:
            return False
        if g is None:
            return False
        labels = set(space.labels)
        return all(label in labels for _, _, _, label in g.edges)

    def requirement(self) -> str:
        return "a family whose describe() gives nodes and edges with source, target, op, label and live"

    def _graph(self, space: SearchSpace, arch: Architecture) -> EdgeGraph:
        g = edge_graph(space, arch)
        if g is None:
            raise NasplatError(
                f"encoder '{self.name}': family '{space.spec.family}' gave no edge graph; it needs {self.requirement()}"
            )
        return g

    def vocabulary(self, space: SearchSpace) -> list[str]:
        """Every op any edge may hold (the union of the edge dimensions' choices, in declaration order)."""
        g = self._graph(space, space.sample(np.random.default_rng(0)))
        ops: list[str] = []
        for _, _, _, label in g.edges:
            for c in space.dimension(label).choices:
                if str(c) not in ops:
                    ops.append(str(c))
        return ops


@register("encoder", "path")
class PathEncoder(_GraphEncoder):
    """BANANAS-style path encoding: for every sequence of ops, how many input-to-output paths through live
    edges carry exactly that sequence (counts, path lengths 1 to the longest possible)."""

    name: ClassVar[str] = "path"

    def _layout(self, space: SearchSpace) -> tuple[list[str], list[tuple[int, ...]]]:
        layouts: dict[str, tuple[list[str], list[tuple[int, ...]]]] = self.__dict__.setdefault("_layouts", {})
        if space.hash not in layouts:
            vocab = self.vocabulary(space)
            g = self._graph(space, space.sample(np.random.default_rng(0)))
            lengths = sorted({len(p) for p in _paths(g, live_only=False)})
            seqs = [s for n in lengths for s in itertools.product(range(len(vocab)), repeat=n)]
            if len(seqs) > MAX_PATH_FEATURES:
                raise NasplatError(
                    f"encoder 'path': space '{space.name}' would need {len(seqs)} path features (limit {MAX_PATH_FEATURES})"
                )
            layouts[space.hash] = (vocab, seqs)
        return layouts[space.hash]

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        vocab, seqs = self._layout(space)
        index = self.__dict__.setdefault("_index", {})
        if space.hash not in index:
            index[space.hash] = {s: i for i, s in enumerate(seqs)}
        slot = index[space.hash]
        op_index = {op: i for i, op in enumerate(vocab)}
        out = np.zeros(len(seqs), dtype=np.float32)
        g = self._graph(space, arch)
        for path in _paths(g, live_only=True):
            out[slot[tuple(op_index[g.edges[e][2]] for e in path)]] += 1.0
        return out

    def feature_names(self, space: SearchSpace) -> list[str]:
        vocab, seqs = self._layout(space)
        return ["path:" + ">".join(vocab[i] for i in s) for s in seqs]


def _paths(g: EdgeGraph, *, live_only: bool) -> list[tuple[int, ...]]:
    """Every input-to-output path as a tuple of edge indices."""
    out_edges: dict[int, list[int]] = {}
    for k, (s, _, _, _) in enumerate(g.edges):
        if g.live[k] or not live_only:
            out_edges.setdefault(s, []).append(k)
    outputs = set(g.outputs)
    found: list[tuple[int, ...]] = []

    def walk(node: int, prefix: tuple[int, ...]) -> None:
        if node in outputs and prefix:
            found.append(prefix)
        if len(prefix) > len(g.edges):  # a cycle: not a DAG
            raise NasplatError("encoder 'path': the architecture graph has a cycle")
        for k in out_edges.get(node, []):
            walk(g.edges[k][1], (*prefix, k))

    for i in g.inputs:
        walk(i, ())
    return found


@register("encoder", "graph")
class GraphEncoder(_GraphEncoder):
    """The graph form: ops as nodes (NASLib's form of a cell). Nodes are the graph's inputs, one node per
    edge slot (holding that edge's op, one-hot; all zeros when the edge is not live) and its outputs; the
    encoding is the upper triangle of that node graph's adjacency (live connections only) followed by the
    op features. :meth:`graph` gives the matrices themselves, for graph kernels and graph networks."""

    name: ClassVar[str] = "graph"

    def graph(self, space: SearchSpace, arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
        """``(adjacency, op_features)`` of the op-node graph of ``arch`` (canonicalised if the encoder is)."""
        return self._matrices(space, self.prepare(space, [arch])[0])

    def _matrices(self, space: SearchSpace, arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
        g = self._graph(space, arch)
        vocab = self.vocabulary(space)
        n_in, n_e = len(g.inputs), len(g.edges)
        size = n_in + n_e + len(g.outputs)
        adj = np.zeros((size, size), dtype=np.float32)
        feats = np.zeros((size, len(vocab) + 2), dtype=np.float32)  # ops, then input / output flags
        for k in range(n_in):
            feats[k, len(vocab)] = 1.0
        for k in range(len(g.outputs)):
            feats[n_in + n_e + k, len(vocab) + 1] = 1.0
        for k, ((s, t, op, _), alive) in enumerate(zip(g.edges, g.live, strict=True)):
            if not alive:
                continue
            feats[n_in + k, vocab.index(op)] = 1.0
            if s in g.inputs:
                adj[g.inputs.index(s), n_in + k] = 1.0
            if t in g.outputs:
                adj[n_in + k, n_in + n_e + g.outputs.index(t)] = 1.0
            for k2, ((s2, _, _, _), alive2) in enumerate(zip(g.edges, g.live, strict=True)):
                if alive2 and s2 == t:
                    adj[n_in + k, n_in + k2] = 1.0
        return adj, feats

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        adj, feats = self._matrices(space, arch)  # ``arch`` is already prepared
        iu = np.triu_indices(adj.shape[0], k=1)
        return np.concatenate([adj[iu], feats.reshape(-1)])


@register("encoder", "pathstats")
class PathStatsEncoder(_GraphEncoder):
    """Aggregates over the live input-to-output paths, which trees and small networks find hard to learn
    from the path encoding at a few hundred samples: the number of paths, the longest and shortest path
    (in edges), and per op the most and fewest times it occurs on one path, its occurrences summed over
    the paths and its number of live edges."""

    name: ClassVar[str] = "pathstats"

    def row(self, space: SearchSpace, arch: Architecture) -> np.ndarray:
        vocab = self.vocabulary(space)
        g = self._graph(space, arch)
        paths = _paths(g, live_only=True)
        lengths = [len(p) for p in paths]
        out = [float(len(paths)), float(max(lengths, default=0)), float(min(lengths, default=0))]
        for op in vocab:
            counts = [sum(g.edges[e][2] == op for e in p) for p in paths]
            live = sum(1 for (_, _, o, _), alive in zip(g.edges, g.live, strict=True) if alive and o == op)
            out += [float(max(counts, default=0)), float(min(counts, default=0)), float(sum(counts)), float(live)]
        return np.asarray(out, dtype=np.float32)

    def feature_names(self, space: SearchSpace) -> list[str]:
        names = ["paths", "longest_path", "shortest_path"]
        for op in self.vocabulary(space):
            names += [f"max_on_path({op})", f"min_on_path({op})", f"sum_over_paths({op})", f"live_edges({op})"]
        return names
