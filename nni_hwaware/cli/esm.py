"""``nni-hwaware build`` and ``nni-hwaware compare``: ESM predictors from real measurements.

``build``'s loop settings are the fields of :class:`~nni_hwaware.esm.loop.ESMConfig` (one option each, with its
default); the folder it writes is :func:`~nni_hwaware.esm.folder.write_predictor_folder`'s, the same a Python
build writes with ``ESMResult.save``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nni_hwaware.artifacts import check_output_dir
from nni_hwaware.cli.measure import add_device_arguments, add_window_argument
from nni_hwaware.cli.options import add_dataclass_options, dataclass_from_args, parameter_default
from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm import EVAL_STRATEGIES, ESMConfig, store_backed_measure
from nni_hwaware.esm.encode import ENCODINGS
from nni_hwaware.measure.protocol import Protocol
from nni_hwaware.measure.remote import device_argument
from nni_hwaware.measure.runner import make_measurer

_BUILD_FIELDS = ("sampling", "initial", "step", "bins", "acc_th", "encoding", "surrogate", "eval_strategy", "w_below",
                 "w_above", "max_samples", "test_size", "interval_folds")
_BUILD_HELP = {
    "initial": "N_I: initial samples", "step": "N_step: samples added per extension",
    "bins": "N_bins: equal ranges of total block count", "acc_th": "Acc_TH: accuracy every bin must reach",
    "w_below": "w1: weight of bins below Acc_TH", "w_above": "w2: weight of bins above Acc_TH",
    "max_samples": "budget cap on training measurements", "test_size": "held-out measured architectures",
    "interval_folds": "cross-validation folds on the training set that calibrate the 90% intervals",
    "sampling": "random or balanced (over bins of total block count)",
    "encoding": "architecture encoding: " + ", ".join(ENCODINGS),
    "surrogate": "mlp (the paper's), gb or rf", "eval_strategy": "bin-wise (every bin must pass) or overall",
    "seed": "seed of all sampling",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build`` and ``compare``."""
    p = subparsers.add_parser("build", help="build an ESM latency predictor: sample, measure, train, extend")
    p.add_argument("--space", required=True, help="space name or YAML file")
    p.add_argument("--backend", default=parameter_default(make_measurer, "backend"),
                   choices=("onnxruntime", "torch", "tensorrt"))
    add_dataclass_options(p, ESMConfig, _BUILD_FIELDS, flags={"eval_strategy": "--eval"}, help=_BUILD_HELP,
                          choices={"sampling": ("random", "balanced"), "encoding": ENCODINGS,
                                   "surrogate": ("mlp", "gb", "rf"), "eval_strategy": EVAL_STRATEGIES})
    p.add_argument("--input-size", type=int, default=None)
    add_dataclass_options(p, Protocol, ["runs"], help={"runs": "timed runs per model (ESM protocol)"})
    p.add_argument("--threads", type=int, default=parameter_default(make_measurer, "threads"),
                   help="backend threads (fixed and recorded)")
    add_device_arguments(p)
    p.add_argument("--qc-every", type=int, default=parameter_default(store_backed_measure, "qc_every"),
                   help="reference-model check every K models (0: off)")
    p.add_argument("--drift-threshold", type=float,
                   default=parameter_default(store_backed_measure, "drift_threshold"),
                   help="relative drift of the reference models that fails a check (0.03: 3 %%)")
    add_window_argument(p, parameter_default(store_backed_measure, "window"))
    add_dataclass_options(p, ESMConfig, ["seed"], help=_BUILD_HELP)
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
    esm = ESMConfig()  # the loop's defaults; compare's convergence run starts smaller (--initial, --step)
    p.add_argument("--test-size", type=int, default=esm.test_size)
    p.add_argument("--bins", type=int, default=esm.bins)
    p.add_argument("--acc-th", type=float, default=esm.acc_th)
    p.add_argument("--initial", type=int, default=100, help="N_I of the convergence comparison")
    p.add_argument("--step", type=int, default=50, help="N_step of the convergence comparison")
    p.add_argument("--lut", action="store_true",
                   help="also build the lookup table (measures every block in isolation on this machine)")
    p.add_argument("--nn-meter", default=None, metavar="DIR", help="add rows of an nn-Meter predictor built here")
    p.add_argument("--trust-pickles", action="store_true",
                   help="load the --nn-meter folder's pickle files (they run code when loaded: only folders you trust)")
    p.add_argument("--qc-strict", action="store_true", help="leave out models whose QC check failed (drift)")
    p.add_argument("--seed", type=int, default=esm.seed)
    p.add_argument("--out", default=None, help="folder for compare.md, compare.csv and plots")
    p.set_defaults(func=_compare)


def _build(args: argparse.Namespace) -> int:
    from nni_hwaware.esm import run_esm
    from nni_hwaware.measure.campaign import check_quality_control
    from nni_hwaware.measure.store import MeasurementStore
    from nni_hwaware.spaces import load_space

    space = load_space(args.space)
    size = space.resolve_input_size(args.input_size)
    config = dataclass_from_args(ESMConfig, args)
    config.check()
    protocol = dataclass_from_args(Protocol, args)
    check_quality_control(args.qc_every, 3, args.drift_threshold, args.window)
    device = device_argument(args.device)
    out = check_output_dir(args.out, "esm")
    # the device before the store: an unreachable one leaves no database behind
    measurer = make_measurer(args.backend, threads=args.threads, device=device, protocol=protocol,
                             energy="none", token_file=args.token_file)
    try:
        store = MeasurementStore(args.db)
    except BaseException:
        measurer.close()
        raise
    try:
        # one campaign per build setting: a rerun resumes it, with the same QC baseline
        build = {"config": dataclasses.asdict(config), "protocol": protocol.to_dict(), "backend": args.backend,
                 "threads": args.threads}
        measure = store_backed_measure(space, measurer, store, input_size=size, qc_every=args.qc_every,
                                       drift_threshold=args.drift_threshold, build=build, window=args.window)
        result = run_esm(space, config, measure, input_size=size, device=measurer.device_description)
    finally:
        measurer.close()
        store.close()
    extra = {"backend": args.backend, "db": str(args.db)}
    if device is not None:
        extra["measured_on"] = device
    result.save(out, extra=extra)
    m = result.predictor.info["metrics"]
    status = "converged" if result.converged else "budget spent before convergence"
    print(f"{status}: {len(result.train_latency)} training measurements, held-out accuracy {m['accuracy']:.4f}, "
          f"within 10% {m['within_10']:.3f}, spearman {m['spearman']:.3f}, 90% interval coverage "
          f"{m.get('interval_coverage', float('nan')):.3f}; predictor in {out}")
    return 0


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
