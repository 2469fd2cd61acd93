"""Trial entry point of hardware-aware nnictl experiments: ``python -m nni_hwaware.nas.trial ...``.

Reads the architecture NNI's tuner chose (``nni.get_next_parameter()``, nested-choice parameters of
:func:`~nni_hwaware.spaces.nni_space.hpo_search_space`), estimates its latency/energy with the predictor
(measuring on the target when ``--fallback`` is set and the surrogate cannot decide), estimates accuracy
offline (:mod:`nni_hwaware.nas.accuracy`) and reports::

    nni.report_final_result({"default": accuracy, "latency_ms": ..., "energy_mj": ...,
                             "latency_source": "surrogate" | "measured", "within_budget": ..., ...})

so NNI's web UI shows the hardware numbers and where they came from for every trial. With ``--nn-meter DIR`` the
trial also reports ``nn_meter_latency_ms`` (and ``nn_meter_within_budget``), nn-Meter's prediction beside ours.
The same dict (with the
architecture) is written to ``result.json`` in the trial's output folder. ``--params JSON`` runs it outside NNI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nni_hwaware.nas.trial", description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True)
    p.add_argument("--predictor", required=True, help="predictor folder or jetson_nano")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--latency-budget-ms", type=float, default=None)
    p.add_argument("--energy-budget-mj", type=float, default=None)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--accuracy", default="digits", help="digits | synflow | images:FOLDER")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train", type=int, default=600)
    p.add_argument("--train-width-mult", type=float, default=0.0625)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallback", default="none", help="none | onnxruntime | torch | tensorrt: measure undecided ones")
    p.add_argument("--db", default="runs/nas-fallback.db", help="measurement store of the fallback")
    p.add_argument("--runs", type=int, default=50, help="timed runs of a fallback measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nn-meter", default=None, metavar="DIR",
                   help="also report an nn-Meter predictor's latency (and verdict) beside ours")
    p.add_argument("--params", default=None, help="nnictl parameter JSON (run outside NNI)")
    return p


def run_trial(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one candidate; returns the final-result dict."""
    import torch

    from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy
    from nni_hwaware.nas.constraints import Budget
    from nni_hwaware.nas.hardware import as_hardware_predictor, nn_meter_folder
    from nni_hwaware.spaces.nni_space import hpo_params_to_arch

    torch.set_num_threads(max(1, args.threads))
    predictor = as_hardware_predictor(args.predictor, args.space, args.input_size)
    space = predictor.space
    nn_meter = None
    if args.nn_meter:  # checked before any training, so a wrong folder fails at once
        from nni_hwaware.nnmeter.predictor import NnMeterEstimator

        folder = nn_meter_folder(args.nn_meter)
        if folder is None:
            raise HwAwareError(f"--nn-meter {args.nn_meter}: no nn-Meter predictor folder there (fusion_rules.json); "
                               "build one with `nni-hwaware nn-meter build`")
        nn_meter = NnMeterEstimator(folder, space, predictor.input_size)
    arch = hpo_params_to_arch(space, params)
    budget = None
    if args.latency_budget_ms is not None or args.energy_budget_mj is not None:
        budget = Budget(args.latency_budget_ms, args.energy_budget_mj, args.margin)
        budget.check_predictor(predictor)
    estimate = predictor.estimate(arch)
    if args.fallback != "none":
        from nni_hwaware.nas.fallback import MeasuredFallback

        fallback = MeasuredFallback(predictor, args.db, backend=args.fallback, runs=args.runs, threads=args.threads)
        verdict = budget.check(estimate) if budget else None
        if verdict is None or not verdict.decided:
            estimate = fallback.measure(arch, estimate)
    verdict = budget.check(estimate) if budget else None
    if verdict is not None and not verdict.ok and verdict.decided:
        # measured, or surely over budget (the tuner may screen with a refitted surrogate): not worth
        # training; the tuner sees the worst score and moves on
        accuracy: dict[str, Any] = {"default": 0.0, "accuracy": None, "accuracy_method": "skipped: over budget",
                                    "train_seconds": 0.0}
    else:
        accuracy = estimate_accuracy(space, arch, AccuracySettings(
            method=args.accuracy, epochs=args.epochs, max_train=args.max_train, width_mult=args.train_width_mult,
            seed=args.seed))
    side_by_side: dict[str, Any] = {}
    if nn_meter is not None:
        other = nn_meter.estimate(arch)
        side_by_side = {"nn_meter_latency_ms": other.latency_ms, "nn_meter_covered": other.in_distribution,
                        "nn_meter_within_budget": None if budget is None else budget.check(other).ok}
    return {
        **accuracy,
        **side_by_side,
        "latency_ms": estimate.latency_ms,
        "latency_low_ms": estimate.latency_interval[0],
        "latency_high_ms": estimate.latency_interval[1],
        "energy_mj": estimate.energy_mj,
        "latency_source": estimate.source,
        "energy_source": estimate.energy_source,
        "in_distribution": estimate.in_distribution,
        "within_budget": None if verdict is None else verdict.ok,
        "over_budget": [] if verdict is None else verdict.violations,
        "predictor": predictor.kind,
        "arch_hash": space.arch_hash(arch),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.params is not None:
            params = json.loads(args.params)
        else:
            import nni

            params = nni.get_next_parameter()
            if not params:  # None, or {} in NNI's standalone mode outside an experiment
                raise HwAwareError("no parameters from NNI; run inside an nnictl experiment or pass --params")
        result = run_trial(args, params)
        out_dir = os.environ.get("NNI_OUTPUT_DIR")
        if out_dir:
            from nni_hwaware.spaces import load_space
            from nni_hwaware.spaces.export import write_atomically
            from nni_hwaware.spaces.nni_space import hpo_params_to_arch

            Path(out_dir).mkdir(parents=True, exist_ok=True)
            arch = hpo_params_to_arch(load_space(args.space), params)
            write_atomically(Path(out_dir) / "result.json",
                             json.dumps({"arch": arch, "result": result}, indent=1).encode())
    except HwAwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: --params is not JSON ({exc})", file=sys.stderr)
        return 2
    if args.params is None:
        import nni

        nni.report_final_result(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
