"""``nni-hwaware jetson-nano train``: rebuild the Jetson Nano predictor from the public dataset."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``jetson-nano`` command group."""
    group = subparsers.add_parser("jetson-nano", help="Jetson Nano latency/energy predictor: train")
    sub = group.add_subparsers(dest="jetson_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("train", help="fit on the public dataset, evaluate held-out splits, test on the published "
                                        "real-world measurements, write the predictor")
    p.add_argument("--data", dest="data_dir", default="../shared/data/jetson_nano",
                   help="dataset folder (default: %(default)s)")
    p.add_argument("--out", default="predictors/jetson_nano", help="predictor folder to write (default: %(default)s)")
    p.add_argument("--limit-per-stage", type=int, default=None, help="use at most N models per stage (quick runs)")
    p.add_argument("--gbm-iters", type=int, default=300, help="boosting iterations (default: %(default)s)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation (faster, no metrics)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from nni_hwaware.errors import HwAwareError
    from nni_hwaware.jetson.train import train

    if args.limit_per_stage is not None and args.limit_per_stage < 5:
        raise HwAwareError("--limit-per-stage must be at least 5")
    card = train(args.data_dir, args.out, limit_per_stage=args.limit_per_stage, gbm_iters=args.gbm_iters,
                 evaluate_splits=not args.no_eval)
    for split, res in card["metrics_held_out_mape_pct"].items():
        pooled = res.get("pooled", {})
        print(f"{split:<22} " + "  ".join(
            f"{t}: roofline {v['roofline']:.1f}% gbm {v['gbm']:.1f}% hybrid {v['hybrid']:.1f}%" for t, v in pooled.items()))
    check = card["method"].get("real_world_check", {})
    for target in ("latency_ms", "energy_mj"):
        if target in check:
            print(f"{'real-world ' + target:<22} MAPE {check[target]['mape_pct']:.1f}% "
                  "(9 published networks, not fitted on them)")
    print(f"wrote {args.out}")
    return 0
