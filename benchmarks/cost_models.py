"""How well each cost model predicts measured latency: this machine, and the NAS-Bench-201 device table.

Part A (this machine): measures ``--networks`` cell networks of a CPU-scale NAS-Bench-201 variant
(``nb201-cpu``: 1x28x28 input, 8-channel stem, 3 stages of 1 cell) with PyTorch eager, batch 1, one thread,
builds the lookup table on this machine, and scores every cost model against the measurements: analytical MACs
(a linear fit of latency on MACs from 10 networks, the FLOPs-as-latency baseline), the lookup table (sum of
layers plus its fitted overhead), the roofline profile of this machine's class (raw, and linearly calibrated on
the same 10 networks), and the learned model adapted from 20 networks (without a prior, and pre-trained on the
five devices of ``nb201/latency.csv``). All are scored on the same networks, none of which any model saw.
It also re-measures some networks (test-retest agreement: the noise floor of the measurements) and times some
with ONNX Runtime.

Part B (``../shared/data/nb201/latency.csv``, 15,625 networks x 5 devices): per device, the learned model from
20 networks (no prior), from a 1,000-network table, and leaving the device out of a prior of the other four
(the few-shot setting); the baseline the issue quotes (ridge on one-hot choices and the other devices' log
latencies, 20 networks); the noise ceiling (the median latency of the networks running the same set of
layers: a perfect model of the work cannot do better); and the rank agreement of MACs and roofline profiles.

Scores: share of predictions within ±10 % of measured, RMSE (ms), Kendall tau. Results go to
``--doc`` (markdown) and ``--out-dir`` (raw measurements and all numbers as JSON).

    .venv/bin/python benchmarks/cost_models.py            # about 5-10 minutes on a 2-core machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nasplat.space import SearchSpace, load_space
from nasplat_estimators.analytical import AnalyticalCostModel
from nasplat_estimators.learned import FewShotLatencyModel, latency_metrics, space_features
from nasplat_estimators.lut import LUTCostModel, build_table
from nasplat_estimators.measured import MeasuredCostModel, OnnxMeasuredCostModel, local_device
from nasplat_estimators.roofline import RooflineCostModel

REPO = Path(__file__).resolve().parent.parent
DEVICES = ["titan_rtx_1_ms", "titan_rtx_256_ms", "gold_6240_ms", "pixel3_ms", "fpga_ms"]


def data_dir() -> Path:
    env = os.environ.get("NASPLAT_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def linear_calibration(x_cal: np.ndarray, y_cal: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a + b * x`` fitted on the calibration rows (least squares)."""
    a = np.stack([np.ones_like(x_cal), x_cal], axis=1)
    coef = np.linalg.lstsq(a, y_cal, rcond=None)[0]
    return coef[0] + coef[1] * x


def fmt_row(name: str, m: dict[str, float], note: str = "") -> str:
    return (
        f"| {name} | {100 * m['within_10pct']:.1f} % | {m['rmse_ms']:.4g} | {m['kendall_tau']:.3f} | "
        f"{100 * m['mape']:.1f} % | {note} |"
    )


# ------------------------------------------------------------------------------------------------ part A
def part_a(args: argparse.Namespace, out_dir: Path, log: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    seen: set[Any] = set()
    archs: list[Any] = []
    while len(archs) < args.networks:
        a = space.sample(rng)
        if a not in seen:
            seen.add(a)
            archs.append(a)
    res: dict[str, Any] = {"space": space.name, "space_hash": space.hash, "networks": len(archs)}
    res["load_before"] = load()

    t0 = time.perf_counter()
    table = build_table(
        space, "local-cpu", warmup=args.warmup, repeats=15, networks=10, network_repeats=args.repeats, seed=1000
    )
    lut_path = table.write(out_dir / f"{space.name}--local-cpu.csv")
    res["lut_seconds"] = time.perf_counter() - t0
    res["lut_entries"] = len(table.entries)
    res["lut_overhead"] = {"overhead_ms": table.overhead_ms, "per_layer_ms": table.per_layer_ms}
    print(f"lookup table: {len(table.entries)} layer configurations in {res['lut_seconds']:.1f} s -> {lut_path}")

    model = MeasuredCostModel(threads=1, warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    t0 = time.perf_counter()
    lat, iqr = [], []
    for i, a in enumerate(archs):
        m = model.measure(space, a)
        lat.append(m.latency_ms)
        iqr.append(m.latency_iqr_ms)
        if (i + 1) % 100 == 0:
            print(f"  measured {i + 1}/{len(archs)} ({time.perf_counter() - t0:.0f} s)")
    res["measure_seconds"] = time.perf_counter() - t0
    y = np.array(lat)
    n_re = min(args.remeasure, len(archs))
    again = np.array([model.measure(space, a).latency_ms for a in archs[:n_re]])
    res["retest"] = latency_metrics(y[:n_re], again) | {"n": n_re}
    n_onnx = min(args.onnx, len(archs))
    t0 = time.perf_counter()
    ort = OnnxMeasuredCostModel(threads=1, warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    y_ort = np.array([ort.measure(space, a).latency_ms for a in archs[:n_onnx]])
    res["onnx"] = {
        "n": n_onnx,
        "seconds": time.perf_counter() - t0,
        "median_eager_ms": float(np.median(y[:n_onnx])),
        "median_onnx_ms": float(np.median(y_ort)),
        "tau_eager_vs_onnx": latency_metrics(y[:n_onnx], y_ort)["kendall_tau"],
    }
    res["load_after"] = load()
    pd.DataFrame({"arch": [space.to_string(a) for a in archs], "latency_ms": y, "latency_iqr_ms": iqr}).to_csv(
        out_dir / f"{space.name}-measured.csv", index=False
    )
    res["measured_median_ms"] = float(np.median(y))
    res["measured_range_ms"] = [float(y.min()), float(y.max())]
    res["iqr_median_pct"] = float(np.median(np.array(iqr) / y) * 100)

    # predictions; calibration rows 0..9 (MACs, roofline), 0..19 (learned); everything scores on rows 20..
    test = np.arange(20, len(archs))
    analytical = AnalyticalCostModel()
    macs = np.array([analytical.estimate(space, a)["macs"] for a in archs])
    lut_model = LUTCostModel([lut_path])
    lut_pred = np.array([lut_model.estimate(space, a, "local-cpu")["latency_ms"] for a in archs])
    roof = RooflineCostModel()
    roof_pred = np.array([roof.estimate(space, a, "x86-avx512-2core")["latency_ms"] for a in archs])
    x, _ = space_features(space, archs)
    scores: dict[str, dict[str, float]] = {}
    scores["analytical MACs, linear fit on 10 networks"] = latency_metrics(
        y[test], linear_calibration(macs[:10], y[:10], macs)[test]
    )
    scores["lut (sum of layers + fitted overhead)"] = latency_metrics(y[test], lut_pred[test])
    scores["roofline x86-avx512-2core, raw"] = latency_metrics(y[test], roof_pred[test])
    scores["roofline, linear fit on 10 networks"] = latency_metrics(
        y[test], linear_calibration(roof_pred[:10], y[:10], roof_pred)[test]
    )
    # learned, no prior: features of the whole space as the reference for its directions
    every = list(space.enumerate())
    x_all, vocab = space_features(space, every)
    x, _ = space_features(space, archs, vocab)
    plain = FewShotLatencyModel().fit(x[:20], y[:20], reference=x_all)
    scores["learned, 20 networks, no prior"] = latency_metrics(y[test], plain.predict(x[test]))
    table_path = data_dir() / "nb201" / "latency.csv"
    if table_path.exists():
        frame = pd.read_csv(table_path)
        prior_archs = [space.from_string(s) for s in frame["arch"]]
        x_prior, _ = space_features(space, prior_archs, vocab)
        pre = FewShotLatencyModel().pretrain(x_prior, frame[DEVICES].to_numpy(), DEVICES).fit(x[:20], y[:20])
        scores["learned, 20 networks, prior = 5 nb201 devices"] = latency_metrics(y[test], pre.predict(x[test]))
        res["prior_mix"] = dict(zip(DEVICES, map(float, pre.mix if pre.mix is not None else []), strict=False))
    res["scores"] = scores
    res["test_n"] = len(test)
    log.append(f"part A done at {dt.datetime.now().isoformat(timespec='seconds')}")
    return res


# ------------------------------------------------------------------------------------------------ part B
def onehot(space: SearchSpace, archs: list[Any]) -> np.ndarray:
    return np.stack([space.encode(a) for a in archs]).astype(float)


def ridge_baseline(
    oh: np.ndarray, y: np.ndarray, others: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    from sklearn.linear_model import Ridge

    feats = np.hstack([oh, np.log(others)])
    model = Ridge(alpha=1.0).fit(feats[train], np.log(y[train]))
    return np.exp(model.predict(feats[test]))


def noise_ceiling(counts: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Predict each network by the median of the networks running the same set of layers (in-sample)."""
    keys = [tuple(r) for r in counts.astype(int)]
    groups: dict[tuple[int, ...], list[float]] = {}
    for k, v in zip(keys, y, strict=True):
        groups.setdefault(k, []).append(v)
    med = {k: float(np.median(v)) for k, v in groups.items()}
    return latency_metrics(y, np.array([med[k] for k in keys]))


def part_b(args: argparse.Namespace, log: list[str]) -> dict[str, Any]:
    path = data_dir() / "nb201" / "latency.csv"
    if not path.exists():
        return {"skipped": f"{path} not found"}
    frame = pd.read_csv(path)
    space = load_space("nb201")
    archs = [space.from_string(s) for s in frame["arch"]]
    x, _ = space_features(space, archs)
    table = frame[DEVICES].to_numpy()
    oh = onehot(space, archs)
    n = len(archs)
    # op counts per network: which edge ops it runs (the work NAS-Bench-201's implementation does)
    ops = ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    counts = np.array([[sum(1 for _, v in a.choices if v == op) for op in ops] for a in archs])
    macs = np.array([AnalyticalCostModel().estimate(space, a)["macs"] for a in archs])
    roof = RooflineCostModel()
    roof256 = RooflineCostModel(batch_size=256)
    roof_pred = {
        "x86-avx512-2core": np.array([roof.estimate(space, a, "x86-avx512-2core")["latency_ms"] for a in archs]),
        "cortex-a76": np.array([roof.estimate(space, a, "cortex-a76")["latency_ms"] for a in archs]),
        "h100-sxm": np.array([roof.estimate(space, a, "h100-sxm")["latency_ms"] for a in archs]),
        "h100-sxm batch 256": np.array([roof256.estimate(space, a, "h100-sxm")["latency_ms"] for a in archs]),
    }
    related = {
        "titan_rtx_1_ms": "h100-sxm",
        "titan_rtx_256_ms": "h100-sxm batch 256",
        "gold_6240_ms": "x86-avx512-2core",
        "pixel3_ms": "cortex-a76",
    }
    out: dict[str, Any] = {}
    for d, dev in enumerate(DEVICES):
        y = table[:, d]
        others = np.delete(table, d, axis=1)
        other_names = [c for c in DEVICES if c != dev]
        r: dict[str, Any] = {"ceiling": noise_ceiling(counts, y)}
        few: dict[str, list[dict[str, float]]] = {"plain": [], "prior": [], "ridge": [], "macs": []}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            train = rng.choice(n, 20, replace=False)
            test = np.setdiff1d(np.arange(n), train)
            plain = FewShotLatencyModel().fit(x[train], y[train], reference=x)
            few["plain"].append(latency_metrics(y[test], plain.predict(x[test])))
            pre = FewShotLatencyModel().pretrain(x, others, other_names).fit(x[train], y[train])
            few["prior"].append(latency_metrics(y[test], pre.predict(x[test])))
            few["ridge"].append(latency_metrics(y[test], ridge_baseline(oh, y, others, train, test)))
            few["macs"].append(latency_metrics(y[test], linear_calibration(macs[train], y[train], macs)[test]))
        for k, v in few.items():
            r[k] = {
                "mean": {m: float(np.mean([s[m] for s in v])) for m in v[0]},
                "min_within": float(min(s["within_10pct"] for s in v)),
                "min_tau": float(min(s["kendall_tau"] for s in v)),
            }
        rng = np.random.default_rng(0)
        train = rng.choice(n, 1000, replace=False)
        test = np.setdiff1d(np.arange(n), train)
        big = FewShotLatencyModel().fit(x[train], y[train], reference=x)
        r["table1000"] = latency_metrics(y[test], big.predict(x[test]))
        r["macs_tau"] = latency_metrics(y, macs)["kendall_tau"]
        if dev in related:
            r["roofline"] = {"profile": related[dev], **latency_metrics(y, roof_pred[related[dev]])}
        out[dev] = r
        print(f"  {dev}: done")
    log.append(f"part B done at {dt.datetime.now().isoformat(timespec='seconds')}")
    return out


# ------------------------------------------------------------------------------------------------ report
def write_doc(
    path: Path, args: argparse.Namespace, info: dict[str, Any], a: dict[str, Any] | None, b: dict[str, Any] | None
) -> None:
    lines = [
        "# Cost-model accuracy against measured latency",
        "",
        "Produced by `benchmarks/cost_models.py` "
        f"({dt.datetime.now(dt.UTC).isoformat(timespec='minutes')}); analytical throughput by "
        "`benchmarks/analytical_throughput.py`.",
        "",
        f"Machine: {info['cpu_model']}, {info['logical_cpus']} logical CPUs (KVM guest), shared with other jobs "
        f"while measuring; Python {info['python']}, torch {info['torch']}, onnxruntime {info['onnxruntime']}.",
        "",
        "Scores: **within ±10 %** = share of networks whose prediction is within 10 % of the measured latency; "
        "RMSE in ms; Kendall tau between predicted and measured; MAPE = mean absolute relative error.",
        "",
    ]
    if a:
        s = a["scores"]
        lines += [
            f"## This machine: `{a['space']}`, PyTorch eager, batch 1, 1 thread",
            "",
            f"{a['networks']} distinct networks sampled with seed {args.seed}, each timed {args.warmup} warm-up + "
            f"{args.repeats} timed runs (median); median latency {a['measured_median_ms']:.3f} ms "
            f"(range {a['measured_range_ms'][0]:.3f}-{a['measured_range_ms'][1]:.3f} ms), median IQR "
            f"{a['iqr_median_pct']:.1f} % of the median; measuring took {a['measure_seconds']:.0f} s. Load average "
            f"(1/5/15 min) before: {a['load_before']}, after: {a['load_after']}.",
            "",
            f"Lookup table: {a['lut_entries']} distinct layer configurations, built in {a['lut_seconds']:.0f} s "
            f"(15 timed blocks per layer; overhead fitted on 10 other networks: {a['lut_overhead']['overhead_ms']:.4f} ms "
            f"+ {1000 * a['lut_overhead']['per_layer_ms']:.2f} µs per layer).",
            "",
            f"Scored on the {a['test_n']} networks no model saw (rows 20 onwards; calibrations used rows 0-9, "
            "the learned model rows 0-19):",
            "",
            "| cost model | within ±10 % | RMSE (ms) | Kendall tau | MAPE | |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in s.items():
            lines.append(fmt_row(name, m))
        rt = a["retest"]
        lines.append(fmt_row("*re-measuring the same networks*", rt, f"noise floor, {rt['n']} networks"))
        o = a["onnx"]
        lines += [
            "",
            f"ONNX Runtime (`measured_onnx`, {o['n']} networks, {o['seconds']:.0f} s including export): median "
            f"{o['median_onnx_ms']:.3f} ms against {o['median_eager_ms']:.3f} ms eager; Kendall tau between the "
            f"two engines' latencies {o['tau_eager_vs_onnx']:.3f}.",
        ]
        if "prior_mix" in a:
            mix = ", ".join(f"{k} {v:.3f}" for k, v in a["prior_mix"].items())
            lines += ["", f"Prior mix fitted for this machine: {mix}."]
        lines.append("")
    if b and "skipped" not in b:
        lines += [
            "## NAS-Bench-201 device table (`../shared/data/nb201/latency.csv`, 15,625 networks per device)",
            "",
            f"Few-shot rows: 20 networks drawn at random ({args.seeds} seeds), scored on the other 15,605; mean "
            "over seeds, worst seed in brackets. *Leave-one-device-out*: the learned model pre-trained on the "
            "other four devices' full tables, then adapted from the 20 networks. *Ridge baseline*: ridge on "
            "one-hot choices plus the other four devices' log latencies, log target (the issue's reference). "
            "*Table of 1,000*: trained on 1,000 random networks, scored on the other 14,625. *Noise ceiling*: each "
            "network predicted by the median of the networks that run the same edge ops (same layer work), "
            "in-sample: no model of the work done can beat it.",
            "",
            "| device | ridge baseline (20) | MACs, linear (20) | learned, no prior (20) | **leave-one-device-out (20)** | learned, table of 1,000 | noise ceiling |",
            "|---|---|---|---|---|---|---|",
        ]
        for dev, r in b.items():

            def cell(k: str, r: dict[str, Any] = r) -> str:
                m = r[k]["mean"]
                return (
                    f"{100 * m['within_10pct']:.1f} % ({100 * r[k]['min_within']:.1f}), "
                    f"τ {m['kendall_tau']:.3f} ({r[k]['min_tau']:.3f})"
                )

            t = r["table1000"]
            c = r["ceiling"]
            lines.append(
                f"| {dev} | {cell('ridge')} | {cell('macs')} | {cell('plain')} | **{cell('prior')}** | "
                f"{100 * t['within_10pct']:.1f} %, τ {t['kendall_tau']:.3f} | "
                f"{100 * c['within_10pct']:.1f} %, τ {c['kendall_tau']:.3f} |"
            )
        lines += [
            "",
            "RMSE (ms) of the leave-one-device-out model, mean over seeds: "
            + ", ".join(f"{dev} {r['prior']['mean']['rmse_ms']:.4g}" for dev, r in b.items())
            + ".",
            "",
            "Rank agreement (Kendall tau over all 15,625) of device-independent and roofline estimates with "
            "each device, no fitting:",
            "",
            "| device | MACs | roofline profile | roofline tau |",
            "|---|---|---|---|",
        ]
        for dev, r in b.items():
            rf = r.get("roofline")
            if rf:
                lines.append(f"| {dev} | {r['macs_tau']:.3f} | {rf['profile']} | {rf['kendall_tau']:.3f} |")
            else:
                lines.append(f"| {dev} | {r['macs_tau']:.3f} | - | - |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    marker = "<!-- notes below are kept when the benchmark rewrites this file -->"
    notes = existing.split(marker, 1)[1] if marker in existing else "\n"
    path.write_text("\n".join(lines) + "\n" + marker + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nb201-cpu")
    parser.add_argument("--networks", type=int, default=1000, help="networks measured on this machine")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--remeasure", type=int, default=200, help="networks measured twice (noise floor)")
    parser.add_argument("--onnx", type=int, default=60, help="networks also timed with ONNX Runtime")
    parser.add_argument("--seeds", type=int, default=10, help="few-shot draws per device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=REPO / "nasplat-runs" / "bench-cost-models")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "bench-cost-models.md")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    info = local_device()
    log: list[str] = [f"started {dt.datetime.now().isoformat(timespec='seconds')}, load {load()}"]
    t0 = time.perf_counter()
    a = None if args.skip_local else part_a(args, args.out_dir, log)
    b = None if args.skip_table else part_b(args, log)
    results = {"info": info, "args": {k: str(v) for k, v in vars(args).items()}, "local": a, "nb201": b, "log": log}
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_doc(args.doc, args, info, a, b)
    print(f"done in {time.perf_counter() - t0:.0f} s: {args.doc}, {args.out_dir / 'results.json'}")


if __name__ == "__main__":
    main()
