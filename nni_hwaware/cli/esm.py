"""``nni-hwaware build`` and ``nni-hwaware compare``: ESM predictors from real measurements."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from nni_hwaware.artifacts import check_output_dir, replace_output_dir, staging_dir
from nni_hwaware.cli.measure import add_device_arguments
from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm import EVAL_STRATEGIES, ESMConfig, ESMResult, build_data_line
from nni_hwaware.esm.encode import ENCODINGS
from nni_hwaware.measure.protocol import DEFAULT_RUNS
from nni_hwaware.measure.remote import device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build`` and ``compare``."""
    p = subparsers.add_parser("build", help="build an ESM latency predictor: sample, measure, train, extend")
    p.add_argument("--space", required=True, help="space name or YAML file")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt"))
    p.add_argument("--sampling", default="balanced", choices=("random", "balanced"))
    p.add_argument("--initial", type=int, default=300, help="N_I: initial samples")
    p.add_argument("--step", type=int, default=100, help="N_step: samples added per extension")
    p.add_argument("--bins", type=int, default=5, help="N_bins: equal ranges of total block count")
    p.add_argument("--acc-th", type=float, default=0.95, help="Acc_TH: accuracy every bin must reach")
    p.add_argument("--encoding", default="fcc", choices=ENCODINGS)
    p.add_argument("--surrogate", default="mlp", choices=("mlp", "gb", "rf"))
    p.add_argument("--eval", dest="eval_strategy", default="bin-wise", choices=EVAL_STRATEGIES)
    p.add_argument("--w-below", type=float, default=0.8, help="w1: weight of bins below Acc_TH")
    p.add_argument("--w-above", type=float, default=0.2, help="w2: weight of bins above Acc_TH")
    p.add_argument("--max-samples", type=int, default=500, help="budget cap on training measurements")
    p.add_argument("--test-size", type=int, default=100, help="held-out measured architectures")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per model (ESM protocol: {DEFAULT_RUNS})")
    p.add_argument("--threads", type=int, default=1, help="backend threads (fixed and recorded)")
    add_device_arguments(p)
    p.add_argument("--qc-every", type=int, default=50, help="reference-model check every K models (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", required=True, help="SQLite measurement store (created if missing)")
    p.add_argument("--out", required=True, help="predictor directory to write")
    p.set_defaults(func=_build)

    p = subparsers.add_parser("compare", help="compare encodings x surrogates x training sizes on stored data")
    p.add_argument("--db", required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--input-size", type=int, default=None, help="default: the largest group in the store")
    p.add_argument("--device", default=None, help="device key (default: the device with most measurements)")
    p.add_argument("--sizes", default="50,100,200,400", help="training sizes, comma-separated")
    p.add_argument("--encodings", default=",".join(ENCODINGS))
    p.add_argument("--surrogates", default="mlp,gb,rf")
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--acc-th", type=float, default=0.95)
    p.add_argument("--initial", type=int, default=100, help="N_I of the convergence comparison")
    p.add_argument("--step", type=int, default=50, help="N_step of the convergence comparison")
    p.add_argument("--lut", action="store_true",
                   help="also build the lookup table (measures every block in isolation on this machine)")
    p.add_argument("--nn-meter", default=None, metavar="DIR", help="add rows of an nn-Meter predictor built here")
    p.add_argument("--trust-pickles", action="store_true",
                   help="load the --nn-meter folder's pickle files (they run code when loaded: only folders you trust)")
    p.add_argument("--qc-strict", action="store_true", help="leave out models whose QC check failed (drift)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for compare.md, compare.csv and plots")
    p.set_defaults(func=_compare)


def _build(args: argparse.Namespace) -> int:
    from nni_hwaware.esm import run_esm, store_backed_measure
    from nni_hwaware.measure.campaign import check_quality_control
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.runner import make_measurer
    from nni_hwaware.measure.store import MeasurementStore
    from nni_hwaware.spaces import load_space

    space = load_space(args.space)
    size = space.resolve_input_size(args.input_size)
    config = ESMConfig(
        sampling=args.sampling, initial=args.initial, step=args.step, w_below=args.w_below, w_above=args.w_above,
        encoding=args.encoding, surrogate=args.surrogate, eval_strategy=args.eval_strategy, bins=args.bins,
        acc_th=args.acc_th, max_samples=args.max_samples, test_size=args.test_size, seed=args.seed,
    )
    config.check()
    check_quality_control(args.qc_every, 3, 0.03)
    device = device_argument(args.device)
    out = check_output_dir(args.out, "esm", "--out")
    # the device before the store: an unreachable one leaves no database behind
    measurer = make_measurer(args.backend, threads=args.threads, device=device, protocol=Protocol(runs=args.runs),
                             energy="none", token_file=args.token_file)
    try:
        store = MeasurementStore(args.db)
    except BaseException:
        measurer.close()
        raise
    try:
        measure = store_backed_measure(space, measurer, store, input_size=size, qc_every=args.qc_every)
        result = run_esm(space, config, measure, input_size=size, device=measurer.device_description,
                         log=lambda msg: print(f"[esm] {msg}", file=sys.stderr))
    finally:
        measurer.close()
        store.close()
    extra = {"backend": args.backend, "db": str(args.db)}
    if device is not None:
        extra["measured_on"] = device
    write_predictor_dir(result, out, extra=extra)
    m = result.predictor.info["metrics"]
    status = "converged" if result.converged else "budget spent before convergence"
    print(f"{status}: {len(result.train_latency)} training measurements, held-out accuracy {m['accuracy']:.4f}, "
          f"within 10% {m['within_10']:.3f}, spearman {m['spearman']:.3f}; predictor in {out}")
    return 0


def write_predictor_dir(result: ESMResult, out: Path, extra: dict[str, Any] | None = None) -> None:
    """Write predictor, model card, plots and the data it was built from; all or nothing."""
    from nni_hwaware import plots

    predictor = result.predictor
    predictor.info.update(extra or {})
    tmp = staging_dir(out)
    try:
        predictor.save(tmp)
        info = predictor.info
        title = (f"{info['space']} @ {info['input_size']}px, {info['encoding']}-{info['surrogate']}, "
                 f"{info['train_size']} samples")
        plots.scatter_predicted_vs_measured(result.test_latency, result.test_prediction, tmp / "scatter.png", title)
        plots.bin_accuracy_per_iteration(info["history"], info["config"]["acc_th"], tmp / "bin_accuracy.png")
        plots.convergence(
            {"overall": [(h["train_size"], h["accuracy"]) for h in info["history"]]},
            info["config"]["acc_th"], tmp / "convergence.png", "held-out accuracy",
        )
        space = predictor.space
        with (tmp / "data.jsonl").open("w") as fh:
            for split, archs, ys in (("train", result.train_archs, result.train_latency),
                                     ("test", result.test_archs, result.test_latency)):
                fh.writelines(build_data_line(space, split, arch, y) for arch, y in zip(archs, ys))
        (tmp / "MODEL_CARD.md").write_text(model_card(info))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_output_dir(tmp, out, "esm", "--out")


def model_card(info: dict[str, Any]) -> str:
    """Markdown model card of an ESM predictor."""
    m = info["metrics"]
    cfg = info["config"]
    dev = info.get("device", {})
    bins = m.get("bin_accuracy", [])
    lo, hi, nb = info["bin_edges_total_blocks"]
    rows = "\n".join(
        f"| {i + 1} | {lo + i * (hi - lo) / nb:.1f}-{lo + (i + 1) * (hi - lo) / nb:.1f} | "
        f"{'-' if a is None else f'{a:.4f}'} |"
        for i, a in enumerate(bins)
    )
    hist = "\n".join(
        f"| {h['iteration']} | {h['train_size']} | {h['accuracy']:.4f} | {h['within_10']:.3f} | "
        f"{h['measure_seconds']:.0f} | {h['train_seconds']:.1f} |"
        for h in info["history"]
    )
    return f"""# ESM latency predictor: {info['space']} at {info['input_size']}x{info['input_size']}

- **Space**: `{info['space']}` (fingerprint `{info['space_fingerprint']}`), width multiplier {info['width_mult']}
- **Input size**: {info['input_size']}
- **Device**: {dev.get('cpu_model', dev.get('accelerator', '?'))} on host `{dev.get('host', '?')}`,
  backend `{info.get('backend', dev.get('backend', '?'))}` {dev.get('backend_version', '')}, threads {dev.get('threads', '?')}
- **Method**: ESM (train-evaluate-extend), encoding `{info['encoding']}` (length {info['encoding_length']}),
  surrogate `{info['surrogate']}`, sampling `{cfg['sampling']}`, N_I={cfg['initial']}, N_step={cfg['step']},
  w1={cfg['w_below']}, w2={cfg['w_above']}, N_bins={cfg['bins']}, Acc_TH={cfg['acc_th']}, evaluation `{cfg['eval_strategy']}`
- **Data**: {info['train_size']} training measurements, {info['test_size']} held-out measurements (balanced over bins);
  converged: {info['converged']}
- **Held-out metrics**: accuracy {m['accuracy']:.4f}, MAPE {m['mape']:.2f} %, within +-10 % {m['within_10']:.3f},
  Spearman {m['spearman']:.4f}

## Accuracy per bin of total block count

| bin | total blocks | accuracy |
| --- | --- | --- |
{rows}

## Iterations

| iteration | samples | accuracy | within 10 % | measure s | train s |
| --- | --- | --- | --- | --- | --- |
{hist}

Intended use: latency of architectures of this space, at this input size, on this device and backend. The
predictor refuses other spaces and input sizes. Plots: `scatter.png`, `bin_accuracy.png`, `convergence.png`;
the measured data it was built from: `data.jsonl`.
"""


def _compare(args: argparse.Namespace) -> int:
    from nni_hwaware.esm.compare import run_compare

    # run_compare checks every setting (and the output folder) before it reads or writes anything
    sizes = _int_list(args.sizes, "--sizes")
    encodings = [e.strip() for e in args.encodings.split(",") if e.strip()]
    surrogates = [s.strip() for s in args.surrogates.split(",") if s.strip()]
    out = Path(args.out) if args.out else Path("runs") / f"compare-{Path(args.space).stem}"
    report = run_compare(
        db=args.db, space_name=args.space, input_size=args.input_size, device=args.device, sizes=sizes,
        encodings=encodings, surrogates=surrogates, test_size=args.test_size, bins=args.bins, acc_th=args.acc_th,
        initial=args.initial, step=args.step, lut=args.lut, nn_meter_dir=args.nn_meter, seed=args.seed,
        qc_strict=args.qc_strict, trust_pickles=args.trust_pickles, out=out,
        log=lambda msg: print(f"[compare] {msg}", file=sys.stderr),
    )
    print(report)
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise HwAwareError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise HwAwareError(f"{flag} must list positive integers")
    return values
