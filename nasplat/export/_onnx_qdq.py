"""QDQ ONNX: integer layers as QuantizeLinear/DequantizeLinear around int8 weights and activations.

A stand-alone module may declare integer layers through the optional method ``nasplat_qdq()`` (the quant
family's :class:`QuantizedNetwork` does), returning ``(float_module, layers)``:

- ``float_module``: the same network in float32 where each declared layer is a plain ``nn.Conv2d`` /
  ``nn.Linear`` holding its dequantized weight and taking its input unquantized (every other layer as before,
  e.g. still simulating float8 or int4 in float arithmetic);
- ``layers``: dotted module name in ``float_module`` -> ``{"weight": int8 tensor, "weight_scale": float32
  tensor (one per output channel), "act_scale": float, "act_signed": bool}``: symmetric per-channel int8
  weights ``weight * weight_scale`` and per-tensor int8 input activations (``uint8`` with zero point 0 when
  unsigned, ``int8`` in [-127, 127] when signed).

:func:`write_qdq_onnx` exports ``float_module`` with torch's ONNX exporter and rewrites the graph:

1. every declared layer's input passes QuantizeLinear -> DequantizeLinear with the layer's own calibrated
   scale (one shared pair when several layers read the same tensor with the same scale; a float ``Clip`` to
   [-127, 127] levels first for signed inputs, so that -128 is never produced, as in PyTorch);
2. its weight becomes DequantizeLinear(int8 initializer, per-channel scale, axis 0); BatchNorm, which the
   exporter folds into the convolution, only rescales output channels, so the folded weight is still the
   stored integers times a per-channel scale (checked, integer for integer; a BatchNormalization node left
   after a convolution is folded here the same way); the bias becomes DequantizeLinear(int32, s_x * s_w);
3. its output is quantized too, because onnxruntime runs a convolution or Gemm with integer kernels
   (QLinearConv, QGemm) only between a DequantizeLinear on every input and a QuantizeLinear on the output.
   Where the output (after a ReLU that follows directly) feeds only declared layers that quantize it with one
   scale, that is the same QuantizeLinear and changes nothing; where it also feeds float operations (a
   residual addition, the logits), a QuantizeLinear/DequantizeLinear pair is added whose scale is calibrated
   on ``calibration`` inputs (uint8 for non-negative ranges, int8 otherwise): these *requantized* points are
   the only numerical difference from PyTorch's fake quantization (besides int32 rounding of biases).

The result is checked with onnxruntime against ``reference`` (the fake-quantized PyTorch module) on the
example and calibration inputs, and onnxruntime's optimised graph is inspected to count the layers that run
on integer kernels. :data:`QDQ_TOLERANCE` states the accepted difference.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasplat.errors import NasplatError

if TYPE_CHECKING:
    import numpy as np
    import onnx

#: The accepted difference between onnxruntime's QDQ output and PyTorch's fake-quantized output, relative to
#: the largest magnitude of PyTorch's output over the checked inputs: ``max|ort - torch| <= QDQ_TOLERANCE *
#: max|torch|``, and (for 2-D outputs such as logits) the same argmax on at least :data:`QDQ_MIN_AGREEMENT` of
#: the rows. Each requantized point adds up to half a quantization step (1/510 of its range for uint8) to
#: every value it passes; several in series, through a small network, reach a few percent on the worst rows.
QDQ_TOLERANCE = 0.10
QDQ_MIN_AGREEMENT = 0.95

#: onnxruntime operators that run a layer on integer kernels (CPU execution provider).
INTEGER_OPS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger"})

_DOMAIN = ""


@dataclass(frozen=True)
class QDQReport:
    """What :func:`write_qdq_onnx` wrote and how close it is to PyTorch."""

    path: Path
    layers: tuple[str, ...]  # declared layers, in graph order
    integer_layers: int  # layers onnxruntime runs on integer kernels (its optimised graph's QLinearConv, QGemm ...)
    exact_outputs: int  # layer outputs whose QuantizeLinear is the consumers' own (no added error)
    requantized: tuple[str, ...]  # tensors given a calibrated QuantizeLinear/DequantizeLinear pair
    max_abs_diff: float
    max_rel_diff: float  # max_abs_diff / max |PyTorch output|
    argmax_agreement: float | None  # share of rows whose argmax matches (2-D outputs), over the checked inputs
    checked: int  # rows (samples) compared
    dynamic_batch: bool


@dataclass(frozen=True)
class _Layer:
    name: str
    weight: torch.Tensor  # int8
    weight_scale: torch.Tensor  # float32 [C_out]
    act_scale: float
    act_signed: bool


def declared_layers(module: nn.Module) -> tuple[nn.Module, dict[str, _Layer]] | None:
    """``module.nasplat_qdq()`` checked and typed, or None when the module declares no integer layer."""
    hook = getattr(module, "nasplat_qdq", None)
    if not callable(hook):
        return None
    float_module, raw = hook()
    if not isinstance(float_module, nn.Module) or not isinstance(raw, dict):
        raise NasplatError(f"{type(module).__name__}.nasplat_qdq() must return (nn.Module, dict)")
    if not raw:
        return None
    layers: dict[str, _Layer] = {}
    for name, spec in raw.items():
        try:
            weight = spec["weight"]
            w_scale = spec["weight_scale"].detach().to(torch.float32).cpu()
            act = float(spec["act_scale"])
            signed = bool(spec["act_signed"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise NasplatError(f"{type(module).__name__}.nasplat_qdq(): layer '{name}': {exc!r}") from None
        if weight.dtype != torch.int8 or weight.shape[0] != w_scale.numel():
            raise NasplatError(f"nasplat_qdq(): layer '{name}' needs int8 weights with one scale per output channel")
        if not (act > 0 and math.isfinite(act)) or not bool(torch.all(w_scale > 0)):
            raise NasplatError(f"nasplat_qdq(): layer '{name}' has a non-positive or non-finite scale")
        layers[str(name)] = _Layer(str(name), weight.detach().cpu(), w_scale, act, signed)
    return float_module, layers


# ------------------------------------------------------------------------------------------------------------
# graph helpers


class _Graph:
    """A mutable view of an ONNX graph: nodes as a Python list (written back by :meth:`finish`), producers,
    consumers, initializers and fresh names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        import onnx

        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        for n in self.graph.node:  # detached copies: editing the repeated field would invalidate references
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            self.nodes.append(copy)
        self._n = 0

    def finish(self) -> onnx.ModelProto:
        """The model with the current nodes (a new ModelProto; this view stays usable)."""
        import onnx

        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        del out.graph.node[:]
        out.graph.node.extend(self.nodes)
        return out

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"qdq_{stem.replace('.', '_')}_{self._n}"

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.nodes if tensor in n.input]

    def producer(self, tensor: str) -> Any | None:
        return next((n for n in self.nodes if tensor in n.output), None)

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.graph.output)

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def add_init(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = self.graph.initializer[-1]
        return name

    def replace_init(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        self.inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def insert_after(self, anchor: Any | None, nodes: list[Any]) -> None:
        """Insert ``nodes`` right after ``anchor`` (at the front when None), keeping topological order."""
        pos = 0 if anchor is None else next(i for i, n in enumerate(self.nodes) if n is anchor) + 1
        self.nodes[pos:pos] = nodes

    def remove(self, node: Any) -> None:
        self.nodes = [n for n in self.nodes if n is not node]

    @staticmethod
    def reroute(tensor: str, new: str, only: list[Any]) -> None:
        for node in only:
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = new


def _qparams(scale: float, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    return np.array(scale, dtype=np.float32), np.array(0, dtype=np.int8 if signed else np.uint8)


def _add_qdq(g: _Graph, tensor: str, scale: float, signed: bool, *, clip_signed: bool) -> tuple[str, list[Any]]:
    """Nodes quantizing ``tensor`` (Clip for signed [-127, 127], Q, DQ); returns the dequantized name and nodes."""
    import numpy as np
    from onnx import helper

    s, zp = _qparams(scale, signed)
    s_name = g.add_init(f"{tensor}_scale", s)
    zp_name = g.add_init(f"{tensor}_zero_point", zp)
    nodes = []
    src = tensor
    if signed and clip_signed:
        lo = g.add_init(f"{tensor}_lo", np.array(-127.0 * float(s), dtype=np.float32))
        hi = g.add_init(f"{tensor}_hi", np.array(127.0 * float(s), dtype=np.float32))
        clipped = g.fresh(f"{tensor}_clipped")
        nodes.append(helper.make_node("Clip", [src, lo, hi], [clipped], name=g.fresh("clip")))
        src = clipped
    q = g.fresh(f"{tensor}_q")
    dq = g.fresh(f"{tensor}_dq")
    nodes.append(helper.make_node("QuantizeLinear", [src, s_name, zp_name], [q], name=g.fresh("quantize")))
    nodes.append(helper.make_node("DequantizeLinear", [q, s_name, zp_name], [dq], name=g.fresh("dequantize")))
    return dq, nodes


def _weight_integers(layer: _Layer, folded: np.ndarray, op: str, trans_b: bool) -> tuple[np.ndarray, np.ndarray]:
    """The stored integers (sign per channel) and per-channel scale that reproduce the graph's float weight.

    ``folded`` may carry a BatchNorm folded in: a per-channel factor, so ``folded[c] = q[c] * s'[c]``.
    """
    import numpy as np

    w = folded.astype(np.float64)
    if op != "Conv" and not trans_b:
        w = w.T  # MatMul / Gemm without transB: [in, out]
    q = layer.weight.numpy().astype(np.int64)
    if w.shape != q.shape:
        raise NasplatError(f"QDQ export: layer '{layer.name}' weight is {w.shape} in the graph, {q.shape} stored")
    flat_w, flat_q = w.reshape(len(w), -1), q.reshape(len(q), -1)
    scale = np.ones(len(w))
    sign = np.ones(len(w), dtype=np.int64)
    for c in range(len(w)):
        k = int(np.argmax(np.abs(flat_q[c])))
        if flat_q[c, k] == 0:
            if np.any(flat_w[c] != 0):
                raise NasplatError(f"QDQ export: layer '{layer.name}' channel {c}: zero integers, non-zero weight")
            continue
        ratio = flat_w[c, k] / flat_q[c, k]
        if ratio == 0:
            if np.any(flat_w[c] != 0):
                raise NasplatError(f"QDQ export: layer '{layer.name}' channel {c} is not a scaling of its integers")
            continue
        sign[c] = 1 if ratio > 0 else -1
        scale[c] = abs(ratio)
    err = np.abs(flat_w - flat_q * (sign * scale)[:, None]).max(initial=0.0)
    tol = 1e-5 * max(float(np.abs(flat_w).max(initial=0.0)), 1e-30)
    if not err <= tol:
        raise NasplatError(
            f"QDQ export: the graph's weight of layer '{layer.name}' is not its stored integers times a per-channel "
            f"scale (max error {err:.3g})"
        )
    ints = (q * sign.reshape((-1,) + (1,) * (q.ndim - 1))).astype(np.int8)
    if op != "Conv" and not trans_b:
        ints = ints.T
    return np.ascontiguousarray(ints), scale.astype(np.float32)


def _fold_batchnorm(g: _Graph, node: Any) -> None:
    """Fold a BatchNormalization that is the sole consumer of a Conv into the Conv's weight and bias."""
    import numpy as np

    out = node.output[0]
    cons = g.consumers(out)
    if len(cons) != 1 or cons[0].op_type != "BatchNormalization" or g.is_graph_output(out):
        return
    bn = cons[0]
    if len(bn.output) != 1 or g.is_graph_output(bn.output[0]):
        return
    if not all(i in g.inits for i in bn.input[1:5]) or node.input[1] not in g.inits:
        return
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    gamma, beta, mean, var = (g.array(i).astype(np.float64) for i in bn.input[1:5])
    a = gamma / np.sqrt(var + eps)
    w = g.array(node.input[1]).astype(np.float64)
    g.replace_init(node.input[1], (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32))
    b = g.array(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(len(a))
    bias = ((b - mean) * a + beta).astype(np.float32)
    if len(node.input) > 2 and node.input[2]:
        g.replace_init(node.input[2], bias)
    elif len(node.input) > 2:
        node.input[2] = g.add_init(f"{node.input[1]}_bn_bias", bias)
    else:
        node.input.append(g.add_init(f"{node.input[1]}_bn_bias", bias))
    g.reroute(bn.output[0], out, g.consumers(bn.output[0]))
    g.remove(bn)


# ------------------------------------------------------------------------------------------------------------
# the writer


def write_qdq_onnx(
    float_module: nn.Module,
    layers: dict[str, _Layer],
    reference: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    calibration: Sequence[tuple[torch.Tensor, ...]],
    path: Path,
    export: Callable[[nn.Module, tuple[torch.Tensor, ...], Path], bool],
    *,
    requantize: bool = True,
) -> QDQReport:
    """Write the QDQ graph of ``float_module`` (see the module doc) to ``path`` and check it; ``export`` is
    the bundle's float ONNX exporter (returns whether the batch dimension is dynamic).

    ``requantize=False`` adds no quantization point of its own (step 3 only where it is exact): the graph then
    computes what the fake-quantized module computes, but onnxruntime runs only the layers whose outputs the
    policy itself quantizes on integer kernels (the others in float on dequantized values)."""
    import numpy as np
    import onnx
    from onnx import helper

    with tempfile.TemporaryDirectory(prefix="nasplat-qdq-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        dynamic = export(float_module.cpu().eval(), inputs, float_path)
        model = onnx.load(str(float_path))
    g = _Graph(model)

    # which node computes each declared layer: its weight initializer keeps the parameter's name
    by_weight = {f"{name}.weight": layer for name, layer in layers.items()}
    targets: list[tuple[Any, _Layer]] = []
    for node in g.nodes:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in by_weight:
            targets.append((node, by_weight[node.input[1]]))
    found = {layer.name for _, layer in targets}
    missing = [n for n in layers if n not in found]
    if missing:
        raise NasplatError(f"QDQ export: no Conv/Gemm/MatMul node uses the weight of {', '.join(missing)}")
    for node, _ in targets:
        if node.op_type == "Conv":
            _fold_batchnorm(g, node)

    # 1. inputs: one Q/DQ per (tensor, scale, signedness), placed right after the tensor's producer
    groups: dict[tuple[str, float, bool], list[Any]] = {}
    for node, layer in targets:
        groups.setdefault((node.input[0], layer.act_scale, layer.act_signed), []).append(node)
    quantized_inputs: dict[str, tuple[float, bool, str]] = {}  # tensor -> (scale, signed, dq name) if unique
    per_tensor: dict[str, int] = {}
    for tensor, _, _ in groups:
        per_tensor[tensor] = per_tensor.get(tensor, 0) + 1
    for (tensor, scale, signed), nodes in groups.items():
        dq, new_nodes = _add_qdq(g, tensor, scale, signed, clip_signed=True)
        g.insert_after(g.producer(tensor), new_nodes)
        g.reroute(tensor, dq, nodes)
        if per_tensor[tensor] == 1:
            quantized_inputs[tensor] = (scale, signed, dq)

    # 2. weights and biases
    for node, layer in targets:
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        if node.input[1] not in g.inits:
            raise NasplatError(f"QDQ export: the weight of layer '{layer.name}' is not a constant of the graph")
        ints, w_scale = _weight_integers(layer, g.array(node.input[1]), node.op_type, trans_b)
        axis = 0 if (node.op_type == "Conv" or trans_b) else 1
        q_name = g.add_init(f"{layer.name}_weight_q", ints)
        s_name = g.add_init(f"{layer.name}_weight_scale", w_scale)
        zp_name = g.add_init(f"{layer.name}_weight_zero_point", np.zeros(len(w_scale), dtype=np.int8))
        w_dq = g.fresh(f"{layer.name}_weight_dq")
        nodes = [helper.make_node("DequantizeLinear", [q_name, s_name, zp_name], [w_dq], axis=axis, name=g.fresh("dq"))]
        node.input[1] = w_dq
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in g.inits:
                raise NasplatError(f"QDQ export: the bias of layer '{layer.name}' is not a constant of the graph")
            b_scale = (np.float32(layer.act_scale) * w_scale).astype(np.float32)
            bias = g.array(node.input[2]).astype(np.float64)
            b_ints = np.clip(np.round(bias / b_scale.astype(np.float64)), -(2**31) + 1, 2**31 - 1).astype(np.int32)
            bq = g.add_init(f"{layer.name}_bias_q", b_ints)
            bs = g.add_init(f"{layer.name}_bias_scale", b_scale)
            b_dq = g.fresh(f"{layer.name}_bias_dq")
            nodes.append(helper.make_node("DequantizeLinear", [bq, bs], [b_dq], axis=0, name=g.fresh("dq")))
            node.input[2] = b_dq
        g.insert_after(None, nodes)

    # 3. convolution outputs (Gemm and MatMul run on integer kernels with a float output as they are): the
    # consumers' own quantization where it is the only use, their scale for float users too where it is not,
    # else a calibrated pair
    exact = 0
    reuse: list[str] = []
    pending: list[tuple[str, Any]] = []  # (tensor to quantize, node after which to insert)
    for node, _layer in targets:
        out, anchor = node.output[0], node
        if node.op_type != "Conv":
            exact += 1
            continue
        cons = g.consumers(out)
        if len(cons) == 1 and cons[0].op_type == "Relu" and not g.is_graph_output(out):
            out, anchor = cons[0].output[0], cons[0]
        if g.is_graph_output(out):
            continue  # a network output stays float (that convolution runs in float on dequantized inputs)
        shared = quantized_inputs.get(out)
        if shared is not None:
            scale, signed, dq = shared
            if signed:
                continue  # Clip -> QuantizeLinear: onnxruntime cannot fuse it, so leave the output float
            others = [u for u in g.consumers(out) if not (u.op_type == "QuantizeLinear" and u.input[0] == out)]
            if others and not requantize:
                continue
            if others:
                g.reroute(out, dq, others)  # float users now see the consumers' quantized value
                reuse.append(out)
            else:
                exact += 1
            continue
        if requantize:
            pending.append((out, anchor))

    ranges = _calibrate(g, [t for t, _ in pending], calibration) if pending else {}
    for tensor, anchor in pending:
        lo, hi = ranges[tensor]
        signed = lo < 0
        amax = max(abs(lo), abs(hi)) if signed else hi
        scale = amax / (127.0 if signed else 255.0) if amax > 0 else 1.0
        users = g.consumers(tensor)
        dq, new_nodes = _add_qdq(g, tensor, scale, signed, clip_signed=False)
        g.insert_after(anchor, new_nodes)
        g.reroute(tensor, dq, users)
    requantized = [*reuse, *(t for t, _ in pending)]

    model = g.finish()
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]  # the float weights the DQs replaced go
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    integer_layers = _integer_kernels(path)
    diff, rel, agree, rows = _compare(path, reference, [inputs, *calibration])
    if not rel <= QDQ_TOLERANCE:
        raise NasplatError(
            f"QDQ ONNX output differs from PyTorch's fake-quantized output by {diff:.3g} "
            f"({rel:.1%} of its largest magnitude > {QDQ_TOLERANCE:.0%})"
        )
    if agree is not None and not agree >= QDQ_MIN_AGREEMENT:
        raise NasplatError(
            f"QDQ ONNX gives PyTorch's argmax on only {agree:.1%} of {rows} rows (< {QDQ_MIN_AGREEMENT:.0%})"
        )
    return QDQReport(
        path=path,
        layers=tuple(layer.name for _, layer in targets),
        integer_layers=integer_layers,
        exact_outputs=exact,
        requantized=tuple(requantized),
        max_abs_diff=diff,
        max_rel_diff=rel,
        argmax_agreement=agree,
        checked=rows,
        dynamic_batch=dynamic,
    )


def _session(model: bytes | str, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, xs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    import numpy as np

    names = [i.name for i in session.get_inputs()]
    return {n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(names, xs, strict=True)}


def _calibrate(
    g: _Graph, tensors: list[str], batches: Sequence[tuple[torch.Tensor, ...]]
) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor over the batches (min <= 0 <= max), run with the graph as it stands."""
    import onnx
    from onnx import helper

    probe = g.finish()
    known = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in known:
            probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    session = _session(probe.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    out = {t: (0.0, 0.0) for t in tensors}
    for xs in batches:
        values = dict(zip(names, session.run(None, _feeds(session, xs)), strict=True))
        for t in tensors:
            lo, hi = out[t]
            out[t] = (min(lo, float(values[t].min())), max(hi, float(values[t].max())))
    return out


def _integer_kernels(path: Path) -> int:
    """How many nodes of onnxruntime's optimised graph (CPU) run integer kernels."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="nasplat-qdq-opt-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _session(str(path), optimized)
        graph = onnx.load(str(optimized)).graph
    return sum(1 for n in graph.node if n.op_type in INTEGER_OPS)


def _compare(
    path: Path, reference: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]
) -> tuple[float, float, float | None, int]:
    import numpy as np

    session = _session(str(path))
    worst, top, agree, rows = 0.0, 0.0, 0, 0
    two_d = True
    for xs in batches:
        with torch.no_grad():
            expected = reference(*xs)
        if not isinstance(expected, torch.Tensor):
            raise NasplatError("QDQ export compares one output tensor; the network returns several")
        want = expected.detach().cpu().numpy().astype(np.float64)
        (got,) = session.run(None, _feeds(session, xs))
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape:
            raise NasplatError(f"QDQ ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
        worst = max(worst, float(np.abs(got - want).max(initial=0.0)))
        top = max(top, float(np.abs(want).max(initial=0.0)))
        if want.ndim == 2:
            agree += int((got.argmax(1) == want.argmax(1)).sum())
        else:
            two_d = False
        rows += int(want.shape[0]) if want.ndim else 1
    rel = worst / top if top > 0 else (0.0 if worst == 0 else math.inf)
    return worst, rel, (agree / rows if two_d and rows else None), rows
