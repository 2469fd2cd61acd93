"""Trial entry point of hardware-aware nnictl experiments: ``python -m nni_hwaware.nas.trial ...``.

Reads the architecture NNI's tuner chose (``nni.get_next_parameter()``, nested-choice parameters of
:func:`~nni_hwaware.spaces.nni_space.hpo_search_space`) together with the tuner's hardware settings (space,
predictor folder, input size and budget, sent under ``"_hardware"``: stated once, in the tuner's
``classArgs``), estimates its latency/energy with that predictor (measuring on the target when ``--fallback``
is set and the surrogate cannot decide), estimates accuracy offline (:mod:`nni_hwaware.nas.accuracy`) and
reports::

    nni.report_final_result({"default": accuracy, "latency_ms": ..., "energy_mj": ...,
                             "latency_source": "surrogate" | "measured", "within_budget": ..., ...})

so NNI's web UI shows the hardware numbers and where they came from for every trial. With ``--nn-meter DIR`` the
trial also reports ``nn_meter_latency_ms`` (and ``nn_meter_within_budget``), nn-Meter's prediction beside ours.
The same dict (with the architecture) is written to ``result.json`` in the trial's output folder.

``--params JSON`` runs it outside NNI; then ``--space``, ``--predictor``, ``--input-size``, the budget options
and ``--trust-pickles`` state the hardware settings (unless the JSON carries ``"_hardware"``). In an nnictl
``trialCommand`` they are an error: the tuner's ``classArgs`` state them.

The module imports nothing heavy before ``nni.get_next_parameter()``: torch and the predictors load after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.constraints import HARDWARE_KEY, HardwareSettings

#: Trial options that state hardware settings (outside nnictl only), by settings key.
HARDWARE_OPTIONS = {"space": "--space", "predictor": "--predictor", "input_size": "--input-size",
                    "latency_budget_ms": "--latency-budget-ms", "energy_budget_mj": "--energy-budget-mj",
                    "margin": "--margin", "trust_nn_meter_pickles": "--trust-pickles"}
FALLBACKS = ("none", "onnxruntime", "torch", "tensorrt")
PROG = "python -m nni_hwaware.nas.trial"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`HwAwareError` (one line, also when ``nas check`` parses)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HwAwareError(f"{message} (see `{PROG} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The trial's options (abbreviations off, so that ``nas check`` sees exactly what the trial sees)."""
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0], allow_abbrev=False)
    hw = p.add_argument_group("hardware settings, for --params outside nnictl only (under nnictl the tuner's "
                              "classArgs state them)")
    hw.add_argument("--space")
    hw.add_argument("--predictor", help="predictor folder or jetson_nano")
    hw.add_argument("--input-size", type=int, default=None)
    hw.add_argument("--latency-budget-ms", type=float, default=None)
    hw.add_argument("--energy-budget-mj", type=float, default=None)
    hw.add_argument("--margin", type=float, default=None)
    hw.add_argument("--trust-pickles", dest="trust_nn_meter_pickles", action="store_true", default=None,
                    help="load nn-Meter folders (pickles run code when loaded: only folders you built or trust)")
    p.add_argument("--accuracy", default="digits", help="digits | synflow | images:FOLDER")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train", type=int, default=600)
    p.add_argument("--train-width-mult", type=float, default=0.0625)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallback", default="none", choices=FALLBACKS, help="measure undecided candidates with it")
    p.add_argument("--db", default="runs/nas-fallback.db", help="measurement store of the fallback")
    p.add_argument("--runs", type=int, default=50, help="timed runs of a fallback measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nn-meter", default=None, metavar="DIR",
                   help="also report an nn-Meter predictor's latency (and verdict) beside ours")
    p.add_argument("--params", default=None, help="nnictl parameter JSON (run outside NNI)")
    return p


def check_trial_options(args: argparse.Namespace) -> None:
    """Refuse option values out of range, before anything loads; messages name the option."""
    for option, value, low in (("--epochs", args.epochs, 1), ("--max-train", args.max_train, 0),
                               ("--seed", args.seed, 0), ("--runs", args.runs, 1), ("--threads", args.threads, 1)):
        if value < low:
            raise HwAwareError(f"{option} must be at least {low}, got {value}")
    if not (math.isfinite(args.train_width_mult) and 0 < args.train_width_mult <= 1):
        raise HwAwareError(f"--train-width-mult must be in (0, 1], got {args.train_width_mult}")
    if not args.accuracy or not (args.accuracy in ("digits", "synflow") or args.accuracy.startswith("images:")):
        raise HwAwareError(f"--accuracy must be digits, synflow or images:FOLDER, got {args.accuracy!r}")


def hardware_options_given(args: argparse.Namespace) -> list[str]:
    """The hardware-setting options given on the command line (``--space``, ``--latency-budget-ms``, ...)."""
    return [option for key, option in HARDWARE_OPTIONS.items() if getattr(args, key) is not None]


def state_once_message(options: list[str], context: str = "trialCommand gives") -> str:
    """What to do about hardware settings given to the trial of an nnictl experiment."""
    keys = [key for key, option in HARDWARE_OPTIONS.items() if option in options]
    given = ", ".join(options)
    return (f"{context} {given}: state {', '.join(keys)} once, in the tuner's classArgs (the tuner sends them to "
            f"every trial with its parameters); remove {given} from trialCommand")


def hardware_settings(args: argparse.Namespace, params: Any) -> tuple[HardwareSettings, dict[str, Any]]:
    """The hardware settings of a trial and its architecture parameters (without the settings).

    The settings come from the tuner (``params["_hardware"]``) when it sent them, else from the options;
    both at once is an error, so a budget is never stated twice.
    """
    if not isinstance(params, dict):
        raise HwAwareError(f"the trial's parameters must be a JSON object of nnictl parameters, got "
                           f"{type(params).__name__}")
    given = hardware_options_given(args)
    if HARDWARE_KEY in params:
        if given:
            raise HwAwareError(state_once_message(
                given, f"the parameters carry the tuner's settings ({HARDWARE_KEY}) and the trial is also given"))
        settings = HardwareSettings.from_mapping(params[HARDWARE_KEY], lambda key: f"{HARDWARE_KEY}.{key}",
                                                 what=f"the tuner's settings ({HARDWARE_KEY})")
    else:
        if args.space is None or args.predictor is None:
            raise HwAwareError("no hardware settings: the parameters do not carry the tuner's (its className is "
                               "not nni_hwaware.nas.tuner.HardwareAwareTuner) and --space/--predictor are not "
                               "given; pass them (and a budget) to run a trial by hand")
        settings = HardwareSettings.from_mapping({key: getattr(args, key) for key in HARDWARE_OPTIONS},
                                                 lambda key: HARDWARE_OPTIONS.get(key, key),
                                                 what="the trial's options", require_budget=False)
    return settings, {k: v for k, v in params.items() if k != HARDWARE_KEY}


def _predictors(settings: HardwareSettings, nn_meter_dir: str | None) -> tuple[Any, Any]:
    """The predictor of the settings and the optional nn-Meter estimator shown beside it."""
    from nni_hwaware.nas.hardware import as_hardware_predictor

    # the folder the tuner loaded, when this machine has it (a remote trial resolves the configured name)
    where = settings.predictor_folder
    source = where if where and Path(where).is_dir() else settings.predictor
    predictor = as_hardware_predictor(source, settings.space, settings.input_size,
                                      trust_pickles=settings.trust_nn_meter_pickles)
    nn_meter = None
    if nn_meter_dir:  # checked before any training, so a wrong folder fails at once
        nn_meter = as_hardware_predictor(nn_meter_dir, predictor.space, predictor.input_size, kind="nn_meter",
                                         trust_pickles=settings.trust_nn_meter_pickles)
    return predictor, nn_meter


def evaluate(args: argparse.Namespace, params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate one candidate; returns its architecture and the final-result dict."""
    check_trial_options(args)
    settings, arch_params = hardware_settings(args, params)
    import torch

    from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy
    from nni_hwaware.spaces.nni_space import hpo_params_to_arch

    torch.set_num_threads(max(1, args.threads))
    predictor, nn_meter = _predictors(settings, args.nn_meter)
    space = predictor.space
    arch = hpo_params_to_arch(space, arch_params)
    budget = settings.budget()
    if budget is not None:
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
    return arch, {
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


def run_trial(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one candidate; returns the final-result dict (see :func:`evaluate`)."""
    return evaluate(args, params)[1]


def _params(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwAwareError(f"--params is not JSON ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    """Run one trial; exit status 2 with a one-line ``error:`` for anything the user can fix."""
    try:
        args = build_parser().parse_args(argv)
        check_trial_options(args)
        if args.params is not None:
            params = _params(args.params)
        else:
            import nni

            params = nni.get_next_parameter()  # before torch and the predictor load
            if not params:  # None, or {} in NNI's standalone mode outside an experiment
                raise HwAwareError("no parameters from NNI; run inside an nnictl experiment or pass --params")
        arch, result = evaluate(args, params)
        out_dir = os.environ.get("NNI_OUTPUT_DIR")
        if out_dir:
            from nni_hwaware.spaces.export import write_atomically

            Path(out_dir).mkdir(parents=True, exist_ok=True)
            write_atomically(Path(out_dir) / "result.json",
                             json.dumps({"arch": arch, "result": result}, indent=1).encode())
    except HwAwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.params is None:
        import nni

        nni.report_final_result(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
