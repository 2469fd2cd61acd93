"""``nni-hwaware predict``: latency/energy of a model from a trained predictor folder.

The predictor folder's ``predictor.json`` names its ``kind``; this command dispatches on it, so other
predictor kinds (e.g. search-space ESM predictors taking ``--space NAME --arch JSON``) plug in by adding an
entry to :data:`_HANDLERS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from nni_hwaware.errors import HwAwareError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    p = subparsers.add_parser("predict", help="predict latency/energy with a trained predictor")
    p.add_argument("--predictor", default=None,
                   help="predictor folder (default: the shipped predictors/jetson_nano)")
    p.add_argument("--onnx", metavar="FILE", help="ONNX model (external weights need not exist)")
    p.add_argument("--input-shape", default=None, help="input shape, e.g. 1,3,224,224 (if the model's is symbolic)")
    p.add_argument("--space", default=None, help="search space of an ESM predictor")
    p.add_argument("--arch", default=None, help="one architecture JSON (or @FILE) for an ESM predictor")
    p.add_argument("--archs", default=None, metavar="FILE.jsonl", help="architectures, one JSON per line")
    p.add_argument("--input-size", type=int, default=None,
                   help="input size the architectures are meant for (checked against the ESM predictor)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_predict)


def _parse_shape(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shape = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise HwAwareError(f"--input-shape {text!r} is not a list of integers; give e.g. 1,3,224,224") from None
    if not shape or any(v <= 0 for v in shape):
        raise HwAwareError(f"--input-shape {text!r} must be positive integers, e.g. 1,3,224,224")
    return shape


def _predict_jetson(args: argparse.Namespace, folder: Any) -> list[dict[str, Any]]:
    from nni_hwaware.jetson.predictor import JetsonNanoPredictor

    if not args.onnx:
        raise HwAwareError("this predictor needs --onnx FILE")
    return [JetsonNanoPredictor.load(folder).predict_onnx(args.onnx, _parse_shape(args.input_shape))]


def _predict_esm(args: argparse.Namespace, folder: Any) -> list[dict[str, Any]]:
    from nni_hwaware.cli.spaces import read_arch_argument
    from nni_hwaware.esm import predict_rows

    if not args.space or bool(args.arch) == bool(args.archs):
        raise HwAwareError("an ESM predictor needs --space NAME and exactly one of --arch JSON or --archs FILE.jsonl")
    if args.arch:
        archs: list[Any] = [read_arch_argument(args.arch)]
    else:
        try:
            lines = open(args.archs).read().splitlines()  # noqa: SIM115 - read once, small file
        except OSError as exc:
            raise HwAwareError(f"cannot read --archs {args.archs}: {exc.strerror}") from None
        archs = [line for line in lines if line.strip()]
        if not archs:
            raise HwAwareError(f"--archs {args.archs} holds no architecture (one JSON per line)")
    return predict_rows(folder, args.space, archs, args.input_size)


_HANDLERS: dict[str, Callable[[argparse.Namespace, Any], list[dict[str, Any]]]] = {
    "jetson_nano": _predict_jetson,
    "esm": _predict_esm,
}


def _predict(args: argparse.Namespace) -> int:
    from nni_hwaware.jetson.predictor import default_predictor_dir, read_metadata

    folder = args.predictor or default_predictor_dir()
    kind = read_metadata(folder).get("kind")
    if kind not in _HANDLERS:
        raise HwAwareError(f"predictor kind {kind!r} in {folder} is not supported by this version")
    results = _HANDLERS[kind](args, folder)
    if args.json:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in results))
        return 0
    if kind == "esm":
        for r in results:
            lo, hi = r["latency_interval"]
            print(f"{r['arch_hash']}  latency {r['latency_ms']:.3f} ms [{lo:.3f}, {hi:.3f}]")
        return 0
    (result,) = results
    lat, en = result["latency_ms"], result["energy_mj"]
    li, ei = result["latency_interval"], result["energy_interval"]
    print(f"latency {lat:.2f} ms [{li[0]:.2f}, {li[1]:.2f}]  energy {en:.2f} mJ [{ei[0]:.2f}, {ei[1]:.2f}]")
    print(f"MACs {result['macs']:,}  params {result['params']:,}  in distribution: {result['in_distribution']}"
          f" (OOD score {result['ood_score']:.2f}, threshold {result['ood_threshold']:.2f})")
    for reason in result["ood_reasons"]:
        print(f"  out of distribution: {reason}")
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
