"""Trial entry point of hardware-aware nnictl experiments: ``python -m nni_hwaware.nas.trial ...``.

Reads the architecture NNI's tuner chose (``nni.get_next_parameter()``, nested-choice parameters of
:func:`~nni_hwaware.spaces.nni_space.hpo_search_space`) together with the tuner's hardware settings (space,
predictor folder, input size and budget, sent under ``"_hardware"``: stated once, in the tuner's
``classArgs``), estimates its latency/energy with that predictor (measuring on the target when ``--fallback``
is set or the tuner names a ``fallback_device``, and the surrogate cannot decide), estimates accuracy offline
(:mod:`nni_hwaware.nas.accuracy`) and reports::

    nni.report_final_result({"default": accuracy, "latency_ms": ..., "energy_mj": ...,
                             "latency_source": "surrogate" | "measured", "within_budget": ...,
                             "fallback_error": None | "...", "notes": [...], "refit": None | FOLDER, ...})

Before predicting, the trial takes the newest refit of its predictor learnt from its measurement store
(``refits/latest.json`` beside the store, written by the tuner or a fallback; see
:mod:`nni_hwaware.nas.fallback`). When the device cannot be reached or its agent dies, the trial does not fail:
it reports the surrogate's numbers (source ``"surrogate"``) with the failure in ``fallback_error`` and
``notes``.

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

from nni_hwaware.artifacts import write_json_atomically
from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.progress import log_to_stderr
from nni_hwaware.nas.constraints import (
    FALLBACK_RUNS,
    HARDWARE_KEY,
    HardwareSettings,
    wire_decode,
    wire_safe_text,
)

#: Trial options that state hardware settings (outside nnictl only), by settings key.
HARDWARE_OPTIONS = {"space": "--space", "predictor": "--predictor", "input_size": "--input-size",
                    "latency_budget_ms": "--latency-budget-ms", "energy_budget_mj": "--energy-budget-mj",
                    "margin": "--margin", "trust_nn_meter_pickles": "--trust-pickles",
                    "fallback_device": "--device", "token_file": "--token-file",
                    "fallback_protocol": "--fallback-protocol", "allow_device_mismatch": "--allow-device-mismatch"}
FALLBACKS = ("none", "onnxruntime", "torch", "tensorrt")
DEFAULT_DB = "runs/nas-fallback.db"
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
    hw.add_argument("--device", dest="fallback_device", action="append", default=None, metavar="URL",
                    help="measure undecided candidates on this device (ssh://user@host, http://host:port; "
                         "repeat for a pool)")
    hw.add_argument("--token-file", default=None, help="the HTTP agent's token (else NNI_HWAWARE_TOKEN)")
    hw.add_argument("--fallback-protocol", default=None, choices=("predictor", "esm", "jetson_dataset", "both"),
                    help="measuring protocol (default: the predictor's own)")
    hw.add_argument("--allow-device-mismatch", action="store_true", default=None,
                    help="measure on another device than the predictor's (recorded)")
    # the training settings' defaults are AccuracySettings', the one place they are written
    from nni_hwaware.nas.accuracy import AccuracySettings  # torch: only once the trial's options are read

    accuracy = AccuracySettings()
    p.add_argument("--accuracy", default=accuracy.method, help="digits | synflow | images:FOLDER")
    p.add_argument("--epochs", type=int, default=accuracy.epochs)
    p.add_argument("--max-train", type=int, default=accuracy.max_train)
    p.add_argument("--train-width-mult", type=float, default=accuracy.width_mult)
    p.add_argument("--seed", type=int, default=accuracy.seed)
    p.add_argument("--fallback", default="none", choices=FALLBACKS, help="measure undecided candidates with it")
    p.add_argument("--db", default=None, help=f"measurement store of the fallback (default: the tuner's "
                   f"refit_db, else {DEFAULT_DB})")
    p.add_argument("--runs", type=int, default=FALLBACK_RUNS,
                   help="timed runs of a fallback measurement (esm protocol)")
    p.add_argument("--fallback-seconds", type=float, default=60.0,
                   help="timed window of a fallback measurement with the jetson_dataset protocol")
    p.add_argument("--energy", default="auto", help="energy meter of the fallback: auto (what the device has), "
                   "none, tegrastats, nvml, rapl")
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
    if not (math.isfinite(args.fallback_seconds) and args.fallback_seconds > 0):
        raise HwAwareError(f"--fallback-seconds must be a positive number, got {args.fallback_seconds}")
    if args.energy not in ("auto", "none", "tegrastats", "nvml", "rapl"):
        raise HwAwareError(f"--energy must be auto, none, tegrastats, nvml or rapl, got {args.energy!r}")
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
        settings = HardwareSettings.from_mapping(wire_decode(params[HARDWARE_KEY]),
                                                 lambda key: f"{HARDWARE_KEY}.{key}",
                                                 what=f"the tuner's settings ({HARDWARE_KEY})")
    else:
        if args.space is None or args.predictor is None:
            raise HwAwareError("no hardware settings: the parameters do not carry the tuner's (its className is "
                               "not nni_hwaware.nas.tuner.HardwareAwareTuner) and --space/--predictor are not "
                               "given; pass them (and a budget) to run a trial by hand")
        values = {key: getattr(args, key) for key in HARDWARE_OPTIONS}
        if isinstance(values["fallback_device"], list) and len(values["fallback_device"]) == 1:
            values["fallback_device"] = values["fallback_device"][0]
        settings = HardwareSettings.from_mapping(values, lambda key: HARDWARE_OPTIONS.get(key, key),
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


def _latest(predictor: Any, db: str) -> tuple[Any, Path | None]:
    """The newest refit of ``predictor`` learnt from the store ``db``, when there is one (else itself)."""
    from nni_hwaware.nas.fallback import latest_refit
    from nni_hwaware.nas.hardware import as_hardware_predictor

    folder = latest_refit(db, predictor)
    if folder is None:
        return predictor, None
    try:
        return as_hardware_predictor(folder, predictor.space, predictor.input_size), folder
    except HwAwareError:  # a refit that does not load: predict with the base, as before it was written
        return predictor, None


def fallback_backend(args: argparse.Namespace, settings: HardwareSettings, predictor: Any) -> str | None:
    """The backend undecided candidates are measured with, or ``None`` when the trial does not measure."""
    from nni_hwaware.nas.tuner import default_backend

    if args.fallback != "none":
        if settings.backend and settings.backend != args.fallback:
            raise HwAwareError(f"--fallback {args.fallback} and the tuner's backend {settings.backend} differ; "
                               "state the backend once, in the tuner's classArgs (backend)")
        return str(args.fallback)
    if settings.fallback_device:
        return settings.backend or default_backend(predictor)
    return None


def measure_or_note(args: argparse.Namespace, settings: HardwareSettings, predictor: Any, db: str, backend: str,
                    arch: Any, estimate: Any) -> tuple[Any, str | None]:
    """The estimate measured on the fallback device; when the device cannot be reached, its agent dies or it
    is not the predictor's, the surrogate's estimate with the failure noted (and returned as the error)."""
    import dataclasses

    from nni_hwaware.errors import DeviceError
    from nni_hwaware.nas.fallback import MeasuredFallback

    try:
        fallback = MeasuredFallback(
            predictor, db, backend=backend, device=settings.fallback_device, token_file=settings.token_file,
            runs=args.runs, seconds=args.fallback_seconds, threads=args.threads, energy=args.energy,
            protocol=settings.fallback_protocol, allow_device_mismatch=settings.allow_device_mismatch)
        try:
            return fallback.measure(arch, estimate), None
        finally:
            fallback.close()
    except DeviceError as exc:
        note = f"fallback measurement failed, the surrogate's numbers are reported: {exc}"
        return dataclasses.replace(estimate, notes=[*estimate.notes, note]), str(exc)


def evaluate(args: argparse.Namespace, params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate one candidate; returns its architecture and the final-result dict."""
    check_trial_options(args)
    settings, arch_params = hardware_settings(args, params)
    import torch

    from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy
    from nni_hwaware.spaces.nni_space import hpo_params_to_arch

    torch.set_num_threads(max(1, args.threads))
    predictor, nn_meter = _predictors(settings, args.nn_meter)
    db = args.db or settings.refit_db or DEFAULT_DB
    predictor, refit = _latest(predictor, db)
    space = predictor.space
    arch = hpo_params_to_arch(space, arch_params)
    budget = settings.budget()
    if budget is not None:
        budget.check_predictor(predictor)
    estimate = predictor.estimate(arch)
    backend, fallback_error = fallback_backend(args, settings, predictor), None
    if backend is not None:
        verdict = budget.check(estimate) if budget else None
        if verdict is None or not verdict.decided:
            estimate, fallback_error = measure_or_note(args, settings, predictor, db, backend, arch, estimate)
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
        "refit": str(refit) if refit else None,
        # no "//" or "#" (device URLs): NNI's round trip of results to the tuner would break on them
        "fallback_error": None if fallback_error is None else wire_safe_text(fallback_error),
        "notes": [wire_safe_text(n) for n in estimate.notes],
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
    log_to_stderr()  # the library's messages reach NNI's trial log (the trial's stderr)
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
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            write_json_atomically(Path(out_dir) / "result.json", {"arch": arch, "result": result}, indent=1)
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
