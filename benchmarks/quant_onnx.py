"""onnxruntime latency of quantized bundles: float ONNX against QDQ ONNX (int8 layers on integer kernels).

1. The quant supernet of ``quant-resnet8-fmnist`` (ResNet-8, width 16, Fashion-MNIST 1x28x28) is trained
   briefly, alternating the uniform float32 and uniform int8 policies each step (SGD, fake quantization with
   straight-through gradients), so that weights, BatchNorm statistics of both precision groups and the int8
   activation ranges are real.
2. Three policies are exported with ``export_bundle`` (preprocessing and calibration batches as a trial export
   passes them): uniform float32 (the float bundle), uniform int8, and a mixed policy (int4 weights in the
   two widest convolutions, int8 elsewhere). Each bundle has ``model.onnx`` (every format simulated in float
   arithmetic); the int8 ones also ``model.qdq.onnx``. For comparison the exact QDQ variant
   (``requantize=False``: only the policy's own quantization points, fewer integer kernels) is written too.
3. Every ONNX file runs in onnxruntime (CPU execution provider, full graph optimisation) on the Fashion-MNIST
   test images: accuracy, and agreement with PyTorch's fake-quantized bundle model (max abs difference,
   argmax). onnxruntime's own ``quantize_static`` (QDQ, its own MinMax scales) of the int8 policy's float
   network is run too, as a reference for what its integer kernels give. Latency: median (and interquartile
   range) of repeated runs at batch 1 and batch 64, the models interleaved round-robin so that the load of a
   shared machine spreads over all of them; the speed-up is the median over rounds of the float bundle's
   time divided by the model's in the same round.

    nice -n 10 .venv/bin/python benchmarks/quant_onnx.py [--out nasplat-runs/bench-quant-onnx] [--quick]

Prints markdown tables and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def integer_ops(path: Path, tmp: Path) -> dict[str, int]:
    import onnx
    import onnxruntime as ort

    from nasplat.export import INTEGER_OPS

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        if node.op_type in INTEGER_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def ort_quantize_static(float_module: Any, example: torch.Tensor, calibration: list[Any], folder: Path) -> Path:
    """onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8 activations, MinMax on
    the calibration batches) of the float network, after onnxruntime's recommended pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from nasplat.export._bundle import _torch_onnx

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": b[0].numpy()} for b in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    float_path, pre, out = folder / "float-twin.onnx", folder / "float-twin.pre.onnx", folder / "ort-static.onnx"
    _torch_onnx(float_module, (example,), float_path)
    quant_pre_process(str(float_path), str(pre))
    quantize_static(
        str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="nasplat-runs/bench-quant-onnx")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200, help="timed runs per model and batch size")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime intra-op threads")
    ap.add_argument("--quick", action="store_true", help="tiny settings to check the script runs")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.repeats, args.threads = 1000, 10, [1]
    torch.set_num_threads(1)

    import nasplat_search_spaces  # noqa: F401 - registers the families
    from nasplat.datasets import DataSpec, load_dataset, load_splits
    from nasplat.export import calibration_inputs, declared_layers, export_bundle, preprocessing_for, write_qdq_onnx
    from nasplat.export._bundle import _torch_onnx
    from nasplat.space import load_space

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    space = load_space("quant-resnet8-fmnist")
    train, val = load_splits(DataSpec.model_validate({"name": "fashion_mnist", "n_train": args.n_train, "n_val": 1000}))
    test = load_dataset("fashion_mnist", "test")
    task = space.family.task(space)

    def uniform(fmt: str, **slots: tuple[str, str]) -> Any:
        values: dict[str, Any] = {d.label: fmt for d in space.dimensions}
        for slot, (w, a) in slots.items():
            values[f"q.{slot}.w"], values[f"q.{slot}.a"] = w, a
        return space.make(values)

    policies = {
        "float32": uniform("float32"),
        "int8": uniform("int8"),
        "mixed": uniform("int8", blocks_2_conv1=("int4", "int8"), blocks_2_conv2=("int4", "int8")),
    }

    # 1. training
    t0 = time.perf_counter()
    net = space.family.build_supernet(space, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    net.train()
    steps = 0
    for epoch in range(args.epochs):
        for batch in train.batches(128, seed=epoch, shuffle=True, drop_last=True):
            for arch in (policies["float32"], policies["int8"], policies["mixed"]):
                with net.activate(arch):
                    loss = task.loss(net, batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
    net.eval()
    train_s = time.perf_counter() - t0
    print(f"trained {steps} steps in {train_s:.0f} s")

    # 2. export
    example = next(val.batches(2, seed=None, shuffle=False))[0]
    calibration = calibration_inputs(train, task)
    files: dict[str, Path] = {}
    reports: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    export_s: dict[str, float] = {}
    for name, arch in policies.items():
        t0 = time.perf_counter()
        result = export_bundle(
            net, arch, out / name, metrics={}, provenance={"benchmark": "quant_onnx"}, example_input=example,
            extras=space.family.bundle_extras(space, arch), preprocess=preprocessing_for(train, task),
            calibration=calibration,
        )  # fmt: skip
        export_s[name] = time.perf_counter() - t0
        assert result.onnx is not None
        files[f"{name} model.onnx"] = result.onnx
        module = net.extract(arch).eval()
        modules[name] = module
        if result.qdq_onnx is not None:
            files[f"{name} model.qdq.onnx"] = result.qdq_onnx
            reports[f"{name} model.qdq.onnx"] = result.qdq
            declared = declared_layers(module)
            assert declared is not None
            exact = out / name / "exact.qdq.onnx"
            reports[f"{name} exact QDQ"] = write_qdq_onnx(
                declared[0], declared[1], module, (example,), calibration, exact, _torch_onnx, requantize=False
            )
            files[f"{name} exact QDQ"] = exact
            if name == "int8":  # onnxruntime's own static quantization of the same float network, its own scales
                files["int8 ORT quantize_static"] = ort_quantize_static(declared[0], example, calibration, out / name)

    # 3a. accuracy and agreement on the test split
    rows: list[dict[str, Any]] = []
    batches = list(test.batches(500, seed=None, shuffle=False))
    if args.quick:
        batches = batches[:2]
    n = sum(len(y) for _, y in batches)
    torch_acc: dict[str, float] = {}
    reference: dict[str, list[np.ndarray]] = {}
    for name, module in modules.items():
        with torch.no_grad():
            reference[name] = [module(x).numpy() for x, _ in batches]
        torch_acc[name] = (
            100.0
            * sum(int((r.argmax(1) == y.numpy()).sum()) for r, (_, y) in zip(reference[name], batches, strict=True))
            / n
        )
    for label, path in files.items():
        policy = label.split()[0]  # the policy whose fake-quantized PyTorch output is the reference
        sess = session(path, 1)
        got = [sess.run(None, {"input": x.numpy()})[0] for x, _ in batches]
        ref = reference[policy]
        diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True))
        top = max(float(np.abs(r).max()) for r in ref)
        agree = sum(int((g.argmax(1) == r.argmax(1)).sum()) for g, r in zip(got, ref, strict=True)) / n
        acc = 100.0 * sum(int((g.argmax(1) == y.numpy()).sum()) for g, (_, y) in zip(got, batches, strict=True)) / n
        rep = reports.get(label)
        rows.append(
            {
                "model": label,
                "size_kb": path.stat().st_size / 1024,
                "integer_kernels": integer_ops(path, out),
                "declared_int8_layers": 0 if rep is None else len(rep.layers),
                "requantized": 0 if rep is None else len(rep.requantized),
                "test_acc_ort": acc,
                "test_acc_torch": torch_acc[policy],
                "max_abs_diff": diff,
                "max_rel_diff": diff / top if top else 0.0,
                "argmax_agreement": agree,
            }
        )

    # 3b. latency, interleaved
    latency: dict[str, dict[str, dict[str, float]]] = {r["model"]: {} for r in rows}
    for threads in args.threads:
        sessions = {label: session(path, threads) for label, path in files.items()}
        for bs in (1, 64):
            x = test.batches(bs, seed=None, shuffle=False).__next__()[0].numpy()
            times: dict[str, list[float]] = {label: [] for label in sessions}
            for s in sessions.values():
                for _ in range(10):
                    s.run(None, {"input": x})
            for _ in range(args.repeats):
                for label, s in sessions.items():
                    t = time.perf_counter()
                    s.run(None, {"input": x})
                    times[label].append(time.perf_counter() - t)
            base = times["float32 model.onnx"]
            for label, ts in times.items():
                q = statistics.quantiles([1e3 * t for t in ts], n=4)
                latency[label][f"t{threads}_b{bs}"] = {
                    "median_ms": statistics.median(ts) * 1e3, "q1_ms": q[0], "q3_ms": q[2],
                    # the float bundle's time over this model's in the same round: bursts of load cancel out
                    "paired_speedup": statistics.median(b / t for b, t in zip(base, ts, strict=True)),
                }  # fmt: skip

    import onnxruntime as ort

    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    (out / "results.json").write_text(
        json.dumps(
            {"machine": machine, "train_s": train_s, "steps": steps, "export_s": export_s, "rows": rows, "latency": latency,
             "test_images": n, "args": vars(args)},
            indent=2, default=str,
        )
    )  # fmt: skip

    print(f"\n{machine}\n")
    print(
        "| model | integer kernels (ORT optimised graph) | requantized points | test acc % (ORT) | test acc % (PyTorch) | max abs diff | max diff / max output | argmax agreement | size |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        kernels = ", ".join(f"{v} {k}" for k, v in sorted(r["integer_kernels"].items())) or "none"
        print(
            f"| {r['model']} | {kernels} | {r['requantized']} | {r['test_acc_ort']:.2f} | {r['test_acc_torch']:.2f} | "
            f"{r['max_abs_diff']:.3g} | {r['max_rel_diff']:.2%} | {r['argmax_agreement']:.2%} | {r['size_kb']:.0f} KiB |"
        )
    keys = [f"t{t}_b{b}" for t in args.threads for b in (1, 64)]
    print(
        "\n| model | "
        + " | ".join(f"{k.split('_')[0][1:]} thread(s), batch {k.split('_b')[1]}: median ms (IQR)" for k in keys)
        + " |"
    )
    print("| --- |" + " --- |" * len(keys))
    for label, per in latency.items():
        cells = []
        for k in keys:
            m = per[k]
            cells.append(f"{m['median_ms']:.3f} ({m['q1_ms']:.3f}–{m['q3_ms']:.3f}), {m['paired_speedup']:.2f}×")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
