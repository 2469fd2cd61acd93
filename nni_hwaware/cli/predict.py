"""``nni-hwaware predict``: latency/energy of architectures or ONNX models from any predictor folder.

Every predictor kind goes through the one interface (:mod:`nni_hwaware.hardware`): ``--space NAME --arch JSON``
(or ``--archs FILE.jsonl``) works with every predictor that can build the space's architectures (an ESM
predictor of that space, the Jetson Nano predictor for any space, nn-Meter's); ``--onnx FILE`` with those that
read any graph (Jetson Nano, nn-Meter).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nni_hwaware.errors import HwAwareError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    p = subparsers.add_parser("predict", help="predict latency/energy with a predictor folder")
    p.add_argument("--predictor", default="jetson_nano",
                   help="predictor folder (default: the shipped predictors/jetson_nano)")
    p.add_argument("--kind", default=None,
                   help="the folder's kind when it declares none (nn-Meter's own predictor files: nn_meter)")
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow loading nn-Meter's pickled predictors (they can run code: only folders you trust)")
    p.add_argument("--onnx", metavar="FILE", help="ONNX model (external weights need not exist)")
    p.add_argument("--input-shape", default=None, help="input shape, e.g. 1,3,224,224 (if the model's is symbolic)")
    p.add_argument("--space", default=None,
                   help="search space of the architectures (default for an ESM predictor: the one it was built for)")
    p.add_argument("--arch", default=None, help="one architecture JSON (or @FILE)")
    p.add_argument("--archs", default=None, metavar="FILE.jsonl", help="architectures, one JSON per line")
    p.add_argument("--input-size", type=int, default=None, help="input size of the architectures")
    p.add_argument("--json", action="store_true", help="print one JSON object per estimate")
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


def _architectures(args: argparse.Namespace, space: Any) -> list[Any]:
    """The canonical architectures of ``--arch`` or ``--archs`` (each validated; a bad one named by position)."""
    from nni_hwaware.spaces.archjson import read_architecture_argument, read_architecture_lines

    if args.archs:
        return read_architecture_lines(args.archs, space)
    return [space.validate(read_architecture_argument(args.arch))]


def _estimates(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from nni_hwaware.hardware import load_predictor

    wants_onnx = args.onnx is not None
    if wants_onnx == bool(args.arch or args.archs) or (args.arch and args.archs):
        raise HwAwareError("give exactly one of --onnx FILE, --arch JSON or --archs FILE.jsonl")
    if wants_onnx and args.space:
        raise HwAwareError("--space goes with --arch/--archs, not with --onnx")
    predictor = load_predictor(args.predictor, args.space, args.input_size, kind=args.kind,
                               trust_pickles=args.trust_pickles)
    if wants_onnx:
        return predictor, [predictor.estimate_onnx(args.onnx, _parse_shape(args.input_shape))]
    if args.input_shape:
        raise HwAwareError("--input-shape goes with --onnx; architectures take --input-size")
    return predictor, predictor.estimate_many(_architectures(args, predictor.space))


def _row(predictor: Any, estimate: Any, of_architecture: bool) -> dict[str, Any]:
    """One estimate as the flat JSON object ``--json`` prints."""
    row = {**estimate.details, **estimate.to_dict()}
    row.pop("details", None)
    row["ood_reasons"] = row.pop("notes")
    row["predictor"] = predictor.kind
    if of_architecture:
        row.update(space=predictor.space.name, input_size=predictor.input_size)
    return row


def _predict(args: argparse.Namespace) -> int:
    predictor, estimates = _estimates(args)
    rows = [_row(predictor, e, args.onnx is None) for e in estimates]
    if args.json:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        return 0
    for row in rows:
        lo, hi = row["latency_interval"]
        line = f"{row['arch_hash']}  latency {row['latency_ms']:.3f} ms [{lo:.3f}, {hi:.3f}]"
        if row.get("energy_mj") is not None:
            elo, ehi = row["energy_interval"]
            line += f"  energy {row['energy_mj']:.3f} mJ [{elo:.3f}, {ehi:.3f}]"
        print(line + f"  in distribution: {row['in_distribution']}")
        if "macs" in row:
            print(f"  MACs {row['macs']:,}  params {row['params']:,}  (OOD score {row['ood_score']:.2f}, "
                  f"threshold {row['ood_threshold']:.2f})")
        for reason in row["ood_reasons"]:
            print(f"  out of distribution: {reason}")
    for warning in {w for r in rows for w in r.get("warnings", [])}:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
