"""Benchmark of the measuring half: repeatability, runs saved by the adaptive mode, models measured per minute.

On this machine (onnxruntime CPU, 1 thread) with architectures of one space at a small input size:

1. **Repeatability of the same models**: ``--models`` architectures, each measured ``--repeats`` times with the
   full ESM protocol (150 runs, middle 60 %) in fresh sessions, round-robin so slow drifts show up; the spread
   (CV and (max-min)/mean) of each model's trimmed means.
2. **Reference models across a campaign**: a quality-controlled campaign of ``--campaign`` models; the spread
   of each reference model's latency over the campaign's checks, and how many models QC re-measured.
3. **Adaptive mode**: the same models with ``--adaptive`` (95 % CI of the trimmed mean within +-1 %); runs
   used vs 150, and the gap between adaptive and fixed means next to the fixed protocol's own repeat spread.
4. **Throughput**: models per minute of the fixed and the adaptive campaign (export + timing + storing).
5. **Noise floor** (``--sections noise``): ``--noise-models`` models measured in one campaign, then again in a
   second campaign at least ``--gap-minutes`` later, into the same store; MAPE between the two, per mode:
   *sequential* (one model at a time, references checked every 10 models: the paper's campaign) and
   *interleaved* (windows of ``--window`` models timed interleaved with the references and normalized by them,
   the default). For the interleaved mode the raw (unnormalized) MAPE is reported beside it, and for both the
   references' drift within each campaign (for the interleaved mode: after normalization).

    python benchmarks/measurement.py                      # resnet at 32x32, ~35 minutes on 2 cores (10 idle)
    python benchmarks/measurement.py --sections noise     # the noise floor alone
    python benchmarks/measurement.py --space convnet --input-size 16 --models 4 --campaign 8 --sections \
        repeatability,campaigns
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

from nni_hwaware.measure.backends import get_backend  # noqa: E402
from nni_hwaware.measure.campaign import Campaign  # noqa: E402
from nni_hwaware.measure.protocol import Protocol  # noqa: E402
from nni_hwaware.measure.runner import Measurer, architecture_model  # noqa: E402
from nni_hwaware.measure.store import MeasurementStore  # noqa: E402
from nni_hwaware.spaces import load_space, sample_architectures  # noqa: E402
from nni_hwaware.spaces.export import write_atomically  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "measurement.json"


def _cv(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.mean(values)) if len(values) > 1 else 0.0


def _spread(values: list[float]) -> float:
    return float((max(values) - min(values)) / np.mean(values))


def repeatability(space, archs, size: int, repeats: int, threads: int) -> dict:
    """Fixed protocol, fresh session per repeat, round-robin over the models."""
    fixed = Measurer(get_backend("onnxruntime", threads=threads), Protocol())
    adaptive = Measurer(get_backend("onnxruntime", threads=threads), Protocol(adaptive=True, ci_rel_width=0.01))
    models = [architecture_model(space, a, "onnxruntime", size) for a in archs]
    means: list[list[float]] = [[] for _ in archs]
    adaptive_means, adaptive_runs = [], []
    for _ in range(repeats):
        for i, model in enumerate(models):
            means[i].append(fixed.measure(model).timing.mean_ms)
    for model in models:
        t = adaptive.measure(model).timing
        adaptive_means.append(t.mean_ms)
        adaptive_runs.append(t.runs)
    fixed_mean = [statistics.mean(m) for m in means]
    gap = [abs(a / f - 1) for a, f in zip(adaptive_means, fixed_mean)]
    return {
        "per_model": [
            {"arch_hash": space.arch_hash(a), "latency_ms": [round(v, 4) for v in m], "cv": _cv(m),
             "spread": _spread(m), "adaptive_ms": round(am, 4), "adaptive_runs": r}
            for a, m, am, r in zip(archs, means, adaptive_means, adaptive_runs)
        ],
        "median_cv": statistics.median(_cv(m) for m in means),
        "median_spread": statistics.median(_spread(m) for m in means),
        "max_spread": max(_spread(m) for m in means),
        "adaptive_median_runs": statistics.median(adaptive_runs),
        "adaptive_runs_saved_pct": 100 * (1 - sum(adaptive_runs) / (150 * len(adaptive_runs))),
        "adaptive_median_gap_to_fixed": statistics.median(gap),
        "adaptive_max_gap_to_fixed": max(gap),
    }


def campaign(space, archs, size: int, threads: int, adaptive: bool, qc_every: int, folder: Path) -> dict:
    """A quality-controlled campaign into a fresh store; throughput and the references' spread."""
    store = MeasurementStore(folder / f"{'adaptive' if adaptive else 'fixed'}.db")
    measurer = Measurer(get_backend("onnxruntime", threads=threads),
                        Protocol(adaptive=adaptive, ci_rel_width=0.01))
    run = Campaign(space, archs, measurer, store, input_size=size, qc_every=qc_every, window=0,
                   definition={"benchmark": "adaptive" if adaptive else "fixed"})
    start = time.perf_counter()
    report = run.run()
    elapsed = time.perf_counter() - start
    checks = store.qc_checks(report.campaign)
    by_ref: dict[str, list[float]] = {}
    for row in checks:
        by_ref.setdefault(row["arch_hash"], []).append(row["latency_ms"])
    store.close()
    return {
        "models": len(archs), "seconds": elapsed, "models_per_minute": len(archs) / elapsed * 60,
        "qc_checks": len(report.checks), "remeasured": report.remeasured,
        "max_check_drift": max(c["drift"] for c in report.checks),
        "reference_spread": {h: _spread(v) for h, v in by_ref.items()},
        "reference_cv": {h: _cv(v) for h, v in by_ref.items()},
        "runs_done": report.runs_done, "runs_max": report.runs_max,
        "runs_saved_pct": 100 * report.runs_saved / report.runs_max if report.runs_max else 0.0,
        "outliers": report.outliers,
    }


def _mape(a: list[float], b: list[float]) -> float:
    return float(np.mean([abs(x / y - 1) for x, y in zip(a, b)]))


NOISE_MODES = {"sequential": {"window": 0, "qc_every": 10}, "interleaved": {}}


def _noise_campaign(space, archs, size: int, measurer: Measurer, store: MeasurementStore, mode: str, round_: int,
                    window: int) -> dict:
    """One campaign of the noise floor: every model measured (again), figures read back from the store."""
    settings = {"window": window, **NOISE_MODES[mode]}
    run = Campaign(space, archs, measurer, store, input_size=size, remeasure=True,
                   definition={"benchmark": "noise", "mode": mode, "round": round_}, **settings)
    start = time.perf_counter()
    report = run.run()
    elapsed = time.perf_counter() - start
    by_hash = {m.arch_hash: m for _, m in store.measurements(campaign=report.campaign)}
    ordered = [by_hash[space.arch_hash(a)] for a in archs]
    checks = report.checks[1:] if report.checks and report.checks[0]["models_done"] == 0 else report.checks
    return {"latency_ms": [m.latency_ms for m in ordered], "raw_ms": [m.timed_ms for m in ordered],
            "seconds": elapsed, "models_per_minute": len(archs) / elapsed * 60, "remeasured": report.remeasured,
            "drift_flagged": report.drift_flagged, "started": time.time() - elapsed, "ended": time.time(),
            "check_drift_median": statistics.median(c["drift"] for c in checks),
            "check_drift_max": max(c["drift"] for c in checks),
            "raw_drift_median": statistics.median(c.get("raw_drift", c["drift"]) for c in checks)}


def noise_floor(space, archs, size: int, threads: int, gap_minutes: float, window: int, folder: Path) -> dict:
    """Each mode's two campaigns of the same models, the second at least ``gap_minutes`` after the first ended."""
    out: dict = {}
    first: dict[str, dict] = {}
    for mode in NOISE_MODES:
        store = MeasurementStore(folder / f"noise-{mode}.db")
        measurer = Measurer(get_backend("onnxruntime", threads=threads), Protocol())
        print(f"noise floor, {mode}: first campaign of {len(archs)} models ...", file=sys.stderr)
        first[mode] = _noise_campaign(space, archs, size, measurer, store, mode, 1, window)
        store.close()
    for mode in NOISE_MODES:
        wait = first[mode]["ended"] + 60 * gap_minutes - time.time()
        if wait > 0:
            print(f"noise floor: waiting {wait / 60:.1f} min before the second {mode} campaign", file=sys.stderr)
            time.sleep(wait)
        store = MeasurementStore(folder / f"noise-{mode}.db")
        measurer = Measurer(get_backend("onnxruntime", threads=threads), Protocol())
        print(f"noise floor, {mode}: second campaign ...", file=sys.stderr)
        second = _noise_campaign(space, archs, size, measurer, store, mode, 2, window)
        store.close()
        a, b = first[mode], second
        out[mode] = {
            "mape": _mape(b["latency_ms"], a["latency_ms"]), "raw_mape": _mape(b["raw_ms"], a["raw_ms"]),
            "gap_minutes": (b["started"] - a["ended"]) / 60,
            "reference_drift_median": statistics.median([a["check_drift_median"], b["check_drift_median"]]),
            "reference_drift_max": max(a["check_drift_max"], b["check_drift_max"]),
            "raw_reference_drift_median": statistics.median([a["raw_drift_median"], b["raw_drift_median"]]),
            "remeasured": a["remeasured"] + b["remeasured"], "drift_flagged": b["drift_flagged"],
            "models_per_minute": statistics.mean([a["models_per_minute"], b["models_per_minute"]]),
            "first": a, "second": b,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="resnet")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--models", type=int, default=6, help="models of the repeatability study")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--campaign", type=int, default=12, help="models of each campaign")
    p.add_argument("--qc-every", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sections", default="repeatability,campaigns,noise",
                   help="comma-separated: repeatability, campaigns, noise")
    p.add_argument("--noise-models", type=int, default=40)
    p.add_argument("--gap-minutes", type=float, default=10.0)
    p.add_argument("--window", type=int, default=10, help="interleaved mode's window")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    unknown = sections - {"repeatability", "campaigns", "noise"}
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from repeatability, campaigns, noise")

    load_before = os.getloadavg()
    space = load_space(args.space)
    archs = sample_architectures(space, args.models, seed=11, strategy="balanced", bins=min(args.models, 5))
    camp_archs = sample_architectures(space, args.campaign, seed=12, strategy="balanced", bins=5)
    noise_archs = sample_architectures(space, args.noise_models, seed=13, strategy="balanced", bins=5)
    rep = fixed = adaptive = noise = None
    with tempfile.TemporaryDirectory() as tmp:
        if "repeatability" in sections:
            print(f"repeatability: {args.models} models x {args.repeats} ...", file=sys.stderr)
            rep = repeatability(space, archs, args.input_size, args.repeats, args.threads)
        if "campaigns" in sections:
            print(f"fixed campaign: {args.campaign} models ...", file=sys.stderr)
            fixed = campaign(space, camp_archs, args.input_size, args.threads, False, args.qc_every, Path(tmp))
            print(f"adaptive campaign: {args.campaign} models ...", file=sys.stderr)
            adaptive = campaign(space, camp_archs, args.input_size, args.threads, True, args.qc_every, Path(tmp))
        if "noise" in sections:
            noise = noise_floor(space, noise_archs, args.input_size, args.threads, args.gap_minutes, args.window,
                                Path(tmp))
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    result = {
        "space": args.space, "input_size": args.input_size, "backend": "onnxruntime", "threads": args.threads,
        "host": {"cpu": _cpu(), "machine": platform.machine(), "python": platform.python_version(),
                 "onnxruntime": __import__("onnxruntime").__version__},
        # other processes on the machine are the main source of spread: keep the load next to the numbers
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()},
        "protocol": Protocol().to_dict(),
        # a section not run this time keeps its figures from the last run that did
        "repeatability": rep or previous.get("repeatability"), "campaign_fixed": fixed or previous.get("campaign_fixed"),
        "campaign_adaptive": adaptive or previous.get("campaign_adaptive"),
        "noise_floor": noise or previous.get("noise_floor"),
        "command": "python benchmarks/measurement.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_atomically(args.out, (json.dumps(result, indent=1) + "\n").encode())

    print(f"\nmeasurement benchmark: {args.space} @ {args.input_size}, onnxruntime CPU, {args.threads} thread(s)")
    print(f"{'metric':<58} {'value':>12}")
    rows = (_table_rows(rep, fixed, adaptive) if rep and fixed and adaptive else []) + _noise_rows(noise)
    for name, value in rows:
        print(f"{name:<58} {value:>12}")
    print(f"load average before/after: {result['load_average_1_5_15']['before'][0]:.2f} / "
          f"{result['load_average_1_5_15']['after'][0]:.2f} on {os.cpu_count()} cores")
    print(f"\nwrote {args.out}")
    return 0


def _noise_rows(noise: dict | None) -> list[tuple[str, str]]:
    rows = []
    for mode, n in (noise or {}).items():
        rows += [
            (f"noise floor, {mode}: MAPE of 2nd vs 1st campaign ({n['gap_minutes']:.1f} min apart)",
             f"{100 * n['mape']:.2f} %"),
            (f"  {mode}: raw (unnormalized) MAPE", f"{100 * n['raw_mape']:.2f} %"),
            (f"  {mode}: reference drift per check, median / max", f"{100 * n['reference_drift_median']:.2f} / "
                                                                 f"{100 * n['reference_drift_max']:.2f} %"),
            (f"  {mode}: models re-measured by QC / models per minute", f"{n['remeasured']} / "
                                                                       f"{n['models_per_minute']:.1f}"),
        ]
    return rows


def _table_rows(rep: dict, fixed: dict, adaptive: dict) -> list[tuple[str, str]]:
    return [
        ("same models, fixed 150 runs: median CV of repeats", f"{100 * rep['median_cv']:.2f} %"),
        ("same models: median (max-min)/mean of repeats", f"{100 * rep['median_spread']:.2f} %"),
        ("same models: worst (max-min)/mean", f"{100 * rep['max_spread']:.2f} %"),
        ("reference models across fixed campaign: median spread",
         f"{100 * statistics.median(fixed['reference_spread'].values()):.2f} %"),
        ("QC checks / max drift / models re-measured (fixed)",
         f"{fixed['qc_checks']} / {100 * fixed['max_check_drift']:.1f}% / {fixed['remeasured']}"),
        ("adaptive (CI +-1 %): median runs per model", f"{rep['adaptive_median_runs']:.0f} of 150"),
        ("adaptive: runs saved (repeatability models)", f"{rep['adaptive_runs_saved_pct']:.1f} %"),
        ("adaptive: runs saved (campaign)", f"{adaptive['runs_saved_pct']:.1f} %"),
        ("adaptive vs fixed mean: median gap", f"{100 * rep['adaptive_median_gap_to_fixed']:.2f} %"),
        ("adaptive vs fixed mean: max gap", f"{100 * rep['adaptive_max_gap_to_fixed']:.2f} %"),
        ("models per minute, fixed campaign (incl. export, QC)", f"{fixed['models_per_minute']:.1f}"),
        ("models per minute, adaptive campaign", f"{adaptive['models_per_minute']:.1f}"),
        ("throughput ratio adaptive / fixed", f"{adaptive['models_per_minute'] / fixed['models_per_minute']:.2f}x"),
    ]


def _cpu() -> str:
    from nni_hwaware.measure.backends import host_description

    return str(host_description()["cpu"])


if __name__ == "__main__":
    raise SystemExit(main())
