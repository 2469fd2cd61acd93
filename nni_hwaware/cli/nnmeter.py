"""``nni-hwaware nn-meter``: nn-Meter's predictor-building method on this device, and its predictions.

* ``nn-meter build --backend onnxruntime --out DIR [--space NAME --input-size N] [--device URL]``: fusion
  rules, kernel sampling and per-kernel regressors with nn-Meter's builder, profiling on this machine or, with
  ``--device ssh://...`` / ``http://...``, on a remote device through the agent; resumable;
* ``nn-meter register``: registers our backends with nn-Meter (``nn-meter connect --backend
  hwaware_onnxruntime`` then works with nn-Meter's own CLI);
* ``nn-meter predict --predictor DIR --space NAME --arch JSON --trust-pickles``: nn-Meter's latency of an
  architecture, from a folder we built or from nn-Meter's official predictor files (``--name
  cortexA76cpu_tflite21``); nn-Meter's regressors are pickles, loaded only with ``--trust-pickles``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nni_hwaware.cli.measure import add_device_arguments
from nni_hwaware.cli.options import add_dataclass_options, dataclass_from_args
from nni_hwaware.measure.remote import device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``nn-meter build``, ``nn-meter register`` and ``nn-meter predict``."""
    from nni_hwaware.nnmeter.builder import BuildSettings

    p = subparsers.add_parser("nn-meter", help="nn-Meter's method built on this device (baseline)")
    sub = p.add_subparsers(dest="nn_meter_command", metavar="{build,register,predict}", required=True,
                           parser_class=type(p))

    b = sub.add_parser("build", help="build an nn-Meter kernel-level latency predictor for this device")
    b.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    add_dataclass_options(b, BuildSettings, ["backend", "space", "input_size", "kernels", "fusion_testcases",
                                             "init_samples", "conv_init_samples", "iterations", "finegrained_samples",
                                             "max_mmacs", "runs", "threads", "seed"])
    add_device_arguments(b)
    b.set_defaults(func=_build)

    r = sub.add_parser("register", help="register our backends with nn-Meter (~/.nn_meter/config/registry.yaml)")
    r.add_argument("--meta-dir", dest="folder", default=None,
                   help="folder for the backend meta files (default: ~/.nn_meter/hwaware); its parent must exist")
    r.set_defaults(func=_register)

    q = sub.add_parser("predict", help="nn-Meter's latency of architectures of a space")
    q.add_argument("--predictor", required=True, help="predictor folder (built here, or nn-Meter's files)")
    q.add_argument("--name", default=None, help="official nn-Meter predictor name whose kernel files to check")
    q.add_argument("--space", required=True)
    q.add_argument("--input-size", type=int, default=None)
    q.add_argument("--arch", default=None, help="architecture JSON (default: the space's default)")
    q.add_argument("--trust-pickles", action="store_true",
                   help="load the predictor's pickle files (they run code when loaded: only folders you trust)")
    q.set_defaults(func=_predict)


def _build(args: argparse.Namespace) -> int:
    from nni_hwaware.nnmeter.builder import BuildSettings, build_nn_meter_predictor, check_build_folder

    check_build_folder(args.out)  # before anything is loaded or written
    settings = dataclass_from_args(BuildSettings, args)
    settings.check()
    if args.space:
        from nni_hwaware.spaces import load_space

        # an unknown space or a bad input size fails now, not after the fusion rules
        load_space(args.space).resolve_input_size(args.input_size)
    log = lambda m: print(f"[nn-meter] {m}", file=sys.stderr)  # noqa: E731
    device = device_argument(args.device)
    if device is None:
        summary = build_nn_meter_predictor(args.out, settings, log=log)
    else:
        summary = _build_on_device(args, settings, device, log)
    print(f"nn-Meter predictor in {Path(args.out) / 'predictor'}: {len(summary['kernels'])} kernels, "
          f"{summary['measurements']['total']} models profiled "
          f"({summary['measurements']['fusion_test_models']} fusion test models, "
          f"{summary['measurements']['kernel_models']} kernels) in {summary['build_seconds']:.0f} s")
    for k in summary["kernels"]:
        last = k["iterations"][-1] if k["iterations"] else {}
        print(f"  {k['kernel']:<16} {k['samples']:>5} samples  nn-Meter 10%-accuracy {last.get('acc10', float('nan')):.3f}")
    return 0


def _build_on_device(args: argparse.Namespace, settings: Any, device: str | list[str],
                     log: Callable[[str], None]) -> dict[str, Any]:
    """The nn-Meter build with every kernel and test case timed on ``--device`` through the agent."""
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.runner import make_measurer
    from nni_hwaware.nnmeter.builder import build_nn_meter_predictor, check_build_folder

    check_build_folder(args.out)  # before the device is contacted
    measurer = make_measurer(settings.backend, threads=settings.threads, device=device,
                             protocol=Protocol(runs=settings.runs, warmup=5), energy="none",
                             token_file=args.token_file)
    try:
        return build_nn_meter_predictor(args.out, settings, log, measurer)
    finally:
        measurer.close()


def _register(args: argparse.Namespace) -> int:
    from nni_hwaware.nnmeter.backend import register_backends

    for name in register_backends(args.folder):
        print(f"registered nn-Meter backend {name}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nni_hwaware.nnmeter.predictor import NnMeterEstimator, load_nn_meter_predictor
    from nni_hwaware.spaces import load_space

    space = load_space(args.space)
    space.resolve_input_size(args.input_size)  # a bad size fails before the predictor is loaded
    if args.arch is None:
        arch = space.default_architecture()
    else:
        from nni_hwaware.spaces.archjson import read_architecture_argument

        # JSON text or @FILE; validate() refuses NaN, huge or deeply nested JSON with the field's path
        arch = space.validate(read_architecture_argument(args.arch))
    predictor = load_nn_meter_predictor(args.predictor, args.name, trust_pickles=args.trust_pickles)
    estimator = NnMeterEstimator(predictor, space, args.input_size)
    print(json.dumps(estimator.explain(space.validate(arch))))
    return 0
