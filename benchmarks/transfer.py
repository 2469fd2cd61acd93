"""Few-shot transfer benchmark: the shipped Jetson Nano predictor calibrated to this CPU from k measurements.

This machine's CPU (onnxruntime, 1 thread) stands in for a new device. Two separate campaigns of ``convnet``
architectures at ``--input-size`` (default 32, inside the Jetson Nano dataset's 10-100) are measured into one
store: first a training pool (default 150 architectures), then, later, 100 held-out architectures (never used
for fitting or for choosing anything). Architectures are drawn at random from the space and kept when their
MACs are under ``--max-macs`` (default 2 GMACs), so every model takes milliseconds on one CPU thread.

For each k in ``--ks`` (default 5, 10, 20, 50) and each of ``--draws`` random draws of k architectures from
the training pool:

* **calibrated**: the shipped ``predictors/jetson_nano`` calibrated with
  :func:`nni_hwaware.calibration.calibrate_predictor` (shift, log-log map, or from 5 measurements a ridge on
  the base's estimate and cheap architecture features; chosen by leave-one-out on the k measurements only);
* **ESM from scratch**: FCC encoding with the MLP surrogate (the ESM paper's) and with gradient boosting,
  trained on the same k measurements;
* **macs+features**: the same model selection with log MACs in place of the base predictor (what the few
  measurements and cheap features reach without any prior device: is the Jetson Nano predictor worth anything?);
* **uncalibrated**: the Jetson Nano predictor as shipped (a rank baseline; its milliseconds are the Nano's).

ESM from scratch is also trained with 100 (and the whole pool). Spearman and MAPE are on the 100 held-out
architectures; the medians over draws are reported. Target (issue 14): with k = 20, Spearman >= 0.95 and
MAPE no worse than from-scratch ESM with 100.

Usage::

    python benchmarks/transfer.py [--db runs/bench-transfer.db] [--quick] [--measure-only]

A rerun with the same ``--db`` reuses every stored measurement (nothing is measured twice). Results go to
``benchmarks/results/transfer.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from nni_hwaware import metrics  # noqa: E402
from nni_hwaware.measure.campaign import Campaign  # noqa: E402
from nni_hwaware.measure.progress import Progress  # noqa: E402
from nni_hwaware.measure.protocol import Protocol  # noqa: E402
from nni_hwaware.measure.runner import make_measurer  # noqa: E402
from nni_hwaware.measure.store import MeasurementStore  # noqa: E402
from nni_hwaware.spaces import load_space, sample_architectures  # noqa: E402
from nni_hwaware.spaces.counting import convnet_macs_params  # noqa: E402


def cheap_architectures(space: Any, n: int, *, seed: int, input_size: int, max_macs: float,
                        exclude: set[str]) -> list[dict]:
    """``n`` distinct random architectures with at most ``max_macs`` MACs, none of ``exclude``."""
    out: list[dict] = []
    seen = set(exclude)
    batch = 0
    while len(out) < n:
        for arch in sample_architectures(space, 2000, seed=seed + 7 * batch):
            h = space.arch_hash(arch)
            if h not in seen and convnet_macs_params(arch, input_size)[0] <= max_macs:
                seen.add(h)
                out.append(arch)
                if len(out) == n:
                    break
        batch += 1
        if batch > 50:
            raise SystemExit(f"could not find {n} architectures under {max_macs:g} MACs")
    return out


def load_avg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def measure_pools(args: argparse.Namespace, space: Any) -> dict[str, Any]:
    """Measure the training pool, then the held-out set, in two campaigns; returns archs, latencies, timings."""
    held = cheap_architectures(space, args.test_size, seed=args.seed + 101, input_size=args.input_size,
                               max_macs=args.max_macs, exclude=set())
    pool = cheap_architectures(space, args.pool_size, seed=args.seed + 202, input_size=args.input_size,
                               max_macs=args.max_macs, exclude={space.arch_hash(a) for a in held})
    if args.reuse_store:
        return stored_pools(args, space, pool, held)
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    store = MeasurementStore(args.db)
    measurer = make_measurer("onnxruntime", threads=1, protocol=Protocol(runs=args.runs, warmup=args.warmup),
                             energy="none")
    timings: dict[str, Any] = {}
    out: dict[str, Any] = {"device": measurer.device_description, "device_key": measurer.device_key}
    try:
        for name, archs in (("pool", pool), ("held_out", held)):  # the pool first, the held-out set later
            t0 = time.time()
            progress = Progress(len(archs), label=f"transfer {name}", enabled=True)
            try:
                report = Campaign(space, archs, measurer, store, input_size=args.input_size,
                                  definition={"purpose": f"transfer-{name}", "seed": args.seed,
                                              "max_macs": args.max_macs},
                                  qc_every=args.qc_every, progress=progress).run()
            finally:
                progress.close()
            ys = [store.get_latency(space, space.arch_hash(a), measurer.device_key, "onnxruntime", args.input_size)
                  for a in archs]
            out[name] = (archs, np.asarray(ys, dtype=float))
            timings[name] = {"started": t0, "seconds": time.time() - t0, "measured": report.measured,
                             "reused": report.skipped, "load_avg_after": load_avg(), **report.to_dict()}
    finally:
        measurer.close()
        store.close()
    out["timings"] = timings
    return out


def stored_pools(args: argparse.Namespace, space: Any, pool: list[dict], held: list[dict]) -> dict[str, Any]:
    """The two sets' latencies read from an existing store (the device that measured all of them, most rows)."""
    if not Path(args.db).is_file():
        raise SystemExit(f"--reuse-store: {args.db} does not exist; run without --reuse-store first")
    with MeasurementStore(args.db, readonly=True) as store:
        df = store.dataset(space=space, backend="onnxruntime", input_size=args.input_size)
    wanted = {space.arch_hash(a) for a in pool + held}
    best = None
    for device, group in df.groupby("device"):
        latest = group.drop_duplicates("arch_hash", keep="last").set_index("arch_hash")
        rank = (len(latest), float(latest["measured_at"].max()))  # most rows, then the newest
        if wanted <= set(latest.index) and (best is None or rank > best[2]):
            best = (device, latest, rank)
    if best is None:
        raise SystemExit(f"--reuse-store: no device in {args.db} measured all {len(wanted)} architectures")
    device, latest, _ = best
    out: dict[str, Any] = {"device": json.loads(latest["device_description"].iloc[0]), "device_key": device,
                           "timings": {"reused_store": args.db}}
    for name, archs in (("pool", pool), ("held_out", held)):
        rows = latest.loc[[space.arch_hash(a) for a in archs]]
        out[name] = (archs, rows["latency_ms"].to_numpy(dtype=float))
        out["timings"][name] = {"campaigns": sorted(set(rows["campaign"].dropna())),
                                "measured_from": float(rows["measured_at"].min()),
                                "measured_to": float(rows["measured_at"].max())}
    return out


def esm_from_scratch(space: Any, surrogate: str, archs: list[dict], y: np.ndarray, test: list[dict],
                     seed: int) -> np.ndarray:
    """FCC encoding + ``surrogate`` trained on ``archs`` (the ESM recipe without its sampling loop)."""
    from nni_hwaware.esm.encode import Encoder
    from nni_hwaware.esm.surrogate import make_surrogate

    enc = Encoder(space, "fcc")
    model = make_surrogate(surrogate, random_state=seed).fit(enc.encode(archs, validate=False), y)
    return model.predict(enc.encode(test, validate=False))


def features_from_scratch(space: Any, archs: list[dict], y: np.ndarray, test: list[dict], input_size: int) -> np.ndarray:
    """The calibration's own model selection with log MACs in place of a base predictor (no prior device)."""
    from nni_hwaware.calibration import _predict_log, architecture_features, fit_calibration

    def inputs(a: list[dict]) -> np.ndarray:
        f = architecture_features(space, a, input_size)
        return np.column_stack([f[:, 0], f])

    return np.exp(_predict_log(fit_calibration(inputs(archs), y), inputs(test)))


def evaluate(args: argparse.Namespace, space: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Every method, k and draw on the held-out set; medians over draws."""
    from nni_hwaware.calibration import calibrate_predictor
    from nni_hwaware.hardware import load_predictor

    pool_archs, pool_y = data["pool"]
    test_archs, test_y = data["held_out"]
    base = load_predictor("jetson_nano", space, args.input_size)
    base_est = base.estimate_many(test_archs)
    base_pred = np.array([e.latency_ms for e in base_est])
    rows: dict[str, Any] = {"uncalibrated": {"k": 0, **metrics.summary(test_y, base_pred),
                                             "in_distribution": float(np.mean([e.in_distribution for e in base_est]))}}
    per_draw: dict[str, list[dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="transfer-"))
    rng = np.random.default_rng(args.seed)
    sizes = sorted(set(args.ks) | {args.esm_reference})
    for k in sizes:
        if k > len(pool_archs):
            continue
        draws = 1 if k == len(pool_archs) else args.draws
        for d in range(draws):
            idx = rng.choice(len(pool_archs), size=k, replace=False)
            archs, y = [pool_archs[i] for i in idx], pool_y[idx]
            if k in args.ks:
                t0 = time.perf_counter()
                predictor = calibrate_predictor(base, archs, y, out=work / f"cal-{k}-{d}")
                fit_s = time.perf_counter() - t0
                est = predictor.estimate_many(test_archs)
                pred = np.array([e.latency_ms for e in est])
                lo = np.array([e.latency_interval[0] for e in est])
                hi = np.array([e.latency_interval[1] for e in est])
                per_draw.setdefault(f"calibrated k={k}", []).append({
                    **metrics.summary(test_y, pred), "fit_s": fit_s,
                    "model": predictor.params["latency_ms"]["model"],
                    "interval_coverage": float(np.mean((lo <= test_y) & (test_y <= hi)))})
            pred = features_from_scratch(space, archs, y, test_archs, args.input_size)
            per_draw.setdefault(f"macs+features k={k}", []).append(metrics.summary(test_y, pred))
            for surrogate in ("mlp", "gb"):
                if surrogate == "gb" and k < 10:
                    continue
                pred = esm_from_scratch(space, surrogate, archs, y, test_archs, args.seed + d)
                per_draw.setdefault(f"esm-{surrogate} k={k}", []).append(metrics.summary(test_y, pred))
    for name, runs in per_draw.items():
        row: dict[str, Any] = {"k": int(name.split("k=")[1]), "draws": len(runs)}
        for key in ("spearman", "mape", "accuracy", "within_10", "interval_coverage", "fit_s"):
            if key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
        if "model" in runs[0]:
            row["models"] = {m: sum(r["model"] == m for r in runs) for m in {r["model"] for r in runs}}
        row["spearman_range"] = [min(r["spearman"] for r in runs), max(r["spearman"] for r in runs)]
        row["mape_range"] = [min(r["mape"] for r in runs), max(r["mape"] for r in runs)]
        rows[name] = row
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(REPO / "runs" / "bench-transfer.db"),
                        help="measurement store (reused: a rerun measures nothing twice)")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--max-macs", type=float, default=2e9, help="keep architectures under this many MACs")
    parser.add_argument("--pool-size", type=int, default=150, help="training pool (first campaign)")
    parser.add_argument("--test-size", type=int, default=100, help="held-out architectures (second campaign)")
    parser.add_argument("--ks", default="5,10,20,50", help="calibration sizes, comma-separated")
    parser.add_argument("--esm-reference", type=int, default=100, help="from-scratch ESM size to beat")
    parser.add_argument("--draws", type=int, default=10, help="random draws of k per size (median reported)")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--qc-every", type=int, default=0, help="reference-model check every K models (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="small run: pool 60, held-out 40, 15 timed runs, 3 draws, k in 5,10,20")
    parser.add_argument("--reuse-store", action="store_true",
                        help="measure nothing: read both sets from --db (whatever device measured them all)")
    parser.add_argument("--measure-only", action="store_true", help="measure the two campaigns and stop")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "transfer.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.pool_size, args.test_size, args.runs, args.draws = 60, 40, 15, 3
        args.ks, args.esm_reference = "5,10,20", 40
    args.ks = [int(v) for v in str(args.ks).split(",") if v.strip()]
    space = load_space("convnet")

    started = time.time()
    load_before = load_avg()
    data = measure_pools(args, space)
    measure_s = time.time() - started
    if args.measure_only:
        print(f"measured the pool ({len(data['pool'][0])}) and held-out ({len(data['held_out'][0])}) campaigns "
              f"in {measure_s:.0f} s into {args.db}")
        return 0
    t0 = time.time()
    rows = evaluate(args, space, data)
    result = {
        "space": "convnet", "input_size": args.input_size, "device": data["device"], "config": vars(args),
        "campaigns": data["timings"], "order": "training pool first, held-out set in a later campaign",
        "held_out_latency_ms": {"min": float(data["held_out"][1].min()),
                                "median": float(np.median(data["held_out"][1])),
                                "max": float(data["held_out"][1].max())},
        "measure_seconds": measure_s, "evaluate_seconds": time.time() - t0, "load_avg_before": load_before,
        "load_avg_after": load_avg(), "rows": rows,
    }
    k20 = rows.get("calibrated k=20")
    ref = [rows[f"esm-{s} k={args.esm_reference}"]["mape"] for s in ("mlp", "gb")
           if f"esm-{s} k={args.esm_reference}" in rows]
    if k20 and ref:
        result["targets"] = {"k20_spearman>=0.95": k20["spearman"] >= 0.95,
                             f"k20_mape<=best_esm_{args.esm_reference}": k20["mape"] <= min(ref)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(args.out)
    print_table(args, result)
    return 0


def print_table(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The figures as a table (medians over draws)."""
    print(f"\nFew-shot transfer: Jetson Nano predictor -> this CPU (onnxruntime, 1 thread), convnet at "
          f"{args.input_size}px, {args.test_size} held-out architectures, medians over {args.draws} draws")
    print(f"{'method':<26}{'k':>5}{'Spearman':>10}{'MAPE %':>9}{'within10':>10}{'90% cover':>11}")
    for name, row in sorted(result["rows"].items(), key=lambda kv: (kv[0].split(" ")[0], kv[1]["k"])):
        cover = f"{row['interval_coverage']:.2f}" if "interval_coverage" in row else "-"
        print(f"{name.split(' k=')[0]:<26}{row['k']:>5}{row['spearman']:>10.3f}{row['mape']:>9.1f}"
              f"{row['within_10']:>10.2f}{cover:>11}")
    for target, ok in result.get("targets", {}).items():
        print(f"target {target}: {'met' if ok else 'MISSED'}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
