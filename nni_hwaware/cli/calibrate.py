"""``nni-hwaware calibrate``: few-shot calibration of any predictor to a device from its stored measurements.

Reads the measurements of the predictor's space and input size from a measurement store (one device: the one
with most measurements unless ``--device`` names its key), calibrates the predictor to them
(:func:`nni_hwaware.calibration.calibrate_predictor`), writes the new predictor folder atomically and prints
the held-out figures of the calibration::

    nni-hwaware calibrate --predictor predictors/jetson_nano --space convnet --db runs/orin.db --out runs/orin
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` command."""
    p = subparsers.add_parser("calibrate", help="calibrate a predictor to a device from a few of its measurements")
    p.add_argument("--predictor", required=True, help="predictor folder (or the shipped jetson_nano)")
    p.add_argument("--db", required=True, help="SQLite measurement store holding the device's measurements")
    p.add_argument("--out", required=True, help="new predictor folder to write (kind calibrated)")
    p.add_argument("--space", default=None,
                   help="space of the measured architectures (default: the predictor's own, if it has one)")
    p.add_argument("--input-size", type=int, default=None,
                   help="input size (default: the predictor's own, else the size with most measurements)")
    p.add_argument("--device", default=None, help="device key in the store (default: the one with most measurements)")
    p.add_argument("--backend", default=None, help="only measurements of this backend (onnxruntime, torch, tensorrt)")
    p.add_argument("--limit", type=int, default=None, metavar="K", help="use K measurements drawn at random")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit draw")
    p.add_argument("--allow-device-mismatch", action="store_true",
                   help="extend a calibrated predictor with measurements of another device (recorded in its card)")
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow loading an nn-Meter base predictor's pickles (only folders you trust)")
    p.set_defaults(func=_calibrate)


def _check_args(args: argparse.Namespace) -> Path:
    from nni_hwaware.artifacts import check_output_dir

    if args.input_size is not None and args.input_size < 1:
        raise HwAwareError(f"--input-size must be a positive integer, got {args.input_size}")
    if args.limit is not None and args.limit < 1:
        raise HwAwareError(f"--limit must be at least 1, got {args.limit}")
    if args.seed < 0:
        raise HwAwareError(f"--seed must be non-negative, got {args.seed}")
    db = Path(args.db)
    if db.is_dir():
        raise HwAwareError(f"--db {db} is a folder; give a measurement database file")
    if not db.is_file():
        raise HwAwareError(f"--db {db} does not exist; measure the device first (`nni-hwaware measure`)")
    return check_output_dir(args.out, "calibrated", "out")


def _measurements(args: argparse.Namespace, space: Any, input_size: int | None) -> tuple[Any, dict[str, Any]]:
    """The rows of one device/backend/precision/input size (the largest group), and that group's description."""
    from nni_hwaware.hardware import protocol_name
    from nni_hwaware.measure.store import MeasurementStore

    with MeasurementStore(args.db, readonly=True) as store:
        df = store.dataset(space=space, backend=args.backend, input_size=input_size)
        df, setting = _one_group(args, space, df, input_size)
        row = df.iloc[0]
        first = store.get_measurement(space, row["arch_hash"], setting["device"], setting["backend"],
                                      setting["input_size"], precision=setting["precision"])
    protocol = (first.extra or {}).get("protocol") if first is not None else None
    description = json.loads(df["device_description"].iloc[0])
    description.setdefault("precision", setting["precision"])
    if protocol is not None:
        description.setdefault("protocol", protocol_name(protocol))
    return df, {**description, "_setting": setting}


def _one_group(args: argparse.Namespace, space: Any, df: Any, input_size: int | None) -> tuple[Any, dict[str, Any]]:
    """The largest device/backend/precision/input-size group of ``df`` (``--device``: of that device)."""
    where = (f" of backend {args.backend}" if args.backend else "") + (f" at input size {input_size}"
                                                                       if input_size else "")
    if df.empty:
        raise HwAwareError(f"no measurements of space {space.name!r}{where} in {args.db}; measure the device "
                           "first (`nni-hwaware measure`)")
    if args.device is not None:
        df = df[df["device"] == args.device]
        if df.empty:
            raise HwAwareError(f"no measurements of space {space.name!r}{where} on device {args.device!r} in "
                               f"{args.db}")
    keys = ["device", "backend", "precision", "input_size"]
    group = df.groupby(keys).size().sort_values(ascending=False).index[0]
    df = df[(df[keys] == list(group)).all(axis=1)].drop_duplicates("arch_hash", keep="last")
    if args.limit is not None and args.limit < len(df):
        df = df.sample(n=args.limit, random_state=args.seed)
    return df, dict(zip(keys, [v.item() if hasattr(v, "item") else v for v in group]))


def _calibrate(args: argparse.Namespace) -> int:
    from nni_hwaware.calibration import calibrate_predictor
    from nni_hwaware.hardware import load_predictor

    out = _check_args(args)
    probe = load_predictor(args.predictor, args.space, args.input_size, trust_pickles=args.trust_pickles)
    if probe.target.space is None and args.space is None:
        raise HwAwareError(f"the {probe.kind} predictor reads any CNN; give --space, the space of the measured "
                           "architectures")
    space = probe.space
    df, description = _measurements(args, space, probe.target.input_size or args.input_size)
    setting = description.pop("_setting")
    predictor = probe if probe.input_size == setting["input_size"] else load_predictor(
        args.predictor, space, int(setting["input_size"]), trust_pickles=args.trust_pickles)
    archs = [space.validate(a) for a in df["arch"]]
    energy = [None if v is None or math.isnan(v) else float(v) for v in df["energy_mj"]]
    notes = {"db": str(args.db), **setting, "limit": args.limit, "seed": args.seed if args.limit else None}
    calibrated = calibrate_predictor(predictor, archs, df["latency_ms"].to_numpy(dtype=float),
                                     energy if any(e is not None for e in energy) else None, out=out,
                                     allow_device_mismatch=args.allow_device_mismatch, fingerprint=description,
                                     notes=notes)
    where = description.get("board") or description.get("gpu") or description.get("cpu") or setting["device"]
    print(f"calibrated the {predictor.kind} predictor on {calibrated.meta['measurements']} measurements of "
          f"{where} ({setting['backend']}, {setting['precision']}, {space.name} at {setting['input_size']}px)")
    for metric, params in calibrated.params.items():
        if not params:
            continue
        cv = params.get("cv_figures")
        figures = ("too few measurements for held-out figures" if not cv else
                   f"MAPE {cv['mape']:.1f} %" + (f", Spearman {cv['spearman']:.3f}" if cv.get("spearman") is not None
                                                else "") + f", within +-10 % {cv['within_10']:.2f}")
        print(f"  {metric}: map {params['model']}; held-out ({params['cv']}): {figures}")
    print(f"predictor in {out} (model card: {out / 'MODEL_CARD.md'})")
    return 0
