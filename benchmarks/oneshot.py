"""One-shot vs multi-trial hardware-aware NAS on digits at the quickstart's budgets (Jetson Nano predictor).

Three searches, one after the other on this machine, each at the budgets of ``experiments/quickstart.yml``
(latency 30 ms, energy 80 mJ, margin 10 %, Jetson Nano predictor):

a. **SPOS + evolution**: ``experiments/oneshot_spos.yml`` through
   :func:`nni_hwaware.nas.oneshot.search.run_oneshot` (convnet supernet, NNI ``RandomOneShot`` then
   ``RegularizedEvolution`` behind the hardware filter, finalists retrained);
b. **Proxyless + latency loss**: NNI's ``Proxyless`` cannot run on ``convnet`` (its candidates change the
   output's shape), so ``experiments/oneshot_proxyless.yml``'s space (``mobilenetv3``) with the quickstart's
   budget and hardware input size (50) instead of the config's own;
c. **multi-trial**: the quickstart's tuner (``HardwareAwareTuner``: TPE behind the budget, its ``classArgs``)
   and trial (``nni_hwaware.nas.trial.evaluate`` with the quickstart's ``trialCommand`` options), driven in
   this process, one trial at a time (as ``trialConcurrency: 1``), for ``--trials`` trials. nnictl's own
   overhead (a Python process per trial, its imports, NNI's manager) is not counted: a lower bound on the
   nnictl experiment's wall time.

Every method's finalists (SPOS / Proxyless: their ``final``; multi-trial: the ``top_k`` most accurate trials
within budget) are then retrained the same way, outside the timed searches: the quickstart trial's training
(1 epoch, 600 digits, width 1/16) with ``--retrain-seeds`` fresh seeds (1, 2, ...: other splits and
initialisations than the searches saw), averaged. Reported per method: wall time, best retrained accuracy
within budget, share of finalists within budget, and against multi-trial the wall-time speed-up and the
accuracy gap in points. The load average around each search records what else was running.

Usage::

    nice python benchmarks/oneshot.py              # about 15 minutes on 2 cores (Proxyless: 12 of them)
    python benchmarks/oneshot.py --quick           # smoke run (a few minutes), written to runs/

Results: ``benchmarks/results/oneshot.json`` (``--quick``: ``runs/bench-oneshot-quick.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from nni_hwaware.artifacts import write_json_atomically  # noqa: E402
from nni_hwaware.hardware import load_predictor  # noqa: E402
from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy  # noqa: E402
from nni_hwaware.nas.constraints import Budget  # noqa: E402
from nni_hwaware.nas.oneshot.config import OneShotConfig, parse_config  # noqa: E402
from nni_hwaware.nas.oneshot.search import quiet_third_party, run_oneshot  # noqa: E402

logger = logging.getLogger("benchmarks.oneshot")
EXPERIMENTS = REPO / "experiments"
TOP_K = 3


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def quickstart() -> dict[str, Any]:
    """The quickstart's tuner ``classArgs``, trial options (from its ``trialCommand``) and search space."""
    config = yaml.safe_load((EXPERIMENTS / "quickstart.yml").read_text())
    tokens = shlex.split(config["trialCommand"])
    trial_args = tokens[tokens.index("nni_hwaware.nas.trial") + 1:]
    class_args = dict(config["tuner"]["classArgs"])
    class_args["predictor"] = str(REPO / class_args["predictor"])
    space = json.loads((EXPERIMENTS / config["searchSpaceFile"]).read_text())
    return {"class_args": class_args, "trial_args": trial_args, "search_space": space}


def _budget_dict(class_args: dict[str, Any]) -> dict[str, float]:
    return {"latency_ms": class_args["latency_budget_ms"], "energy_mj": class_args["energy_budget_mj"],
            "margin": class_args["margin"]}


def oneshot_configs(quick: bool, budget: dict[str, float]) -> dict[str, OneShotConfig]:
    """The SPOS config as shipped and the Proxyless config on its space at the quickstart's budget."""
    spos = yaml.safe_load((EXPERIMENTS / "oneshot_spos.yml").read_text())
    proxyless = yaml.safe_load((EXPERIMENTS / "oneshot_proxyless.yml").read_text())
    proxyless.update(budget=dict(budget), hardware_input_size=spos["hardware_input_size"])
    for config in (spos, proxyless):
        config["predictor"] = str(REPO / config["predictor"])
        if quick:
            config["train"].update(epochs=1, max_train=160)
            config["final"].update(top_k=2)
    if quick:
        spos["strategy"].update(population=4, sample_size=2, cycles=6)
    return {"spos": parse_config(spos, "oneshot_spos.yml"),
            "proxyless": parse_config(proxyless, "oneshot_proxyless.yml (quickstart budget)")}


def run_multitrial(settings: dict[str, Any], trials: int) -> dict[str, Any]:
    """The quickstart's tuner and trial in this process, sequentially; every trial's architecture and result."""
    import nni

    from nni_hwaware.nas.trial import build_parser, evaluate
    from nni_hwaware.nas.tuner import HardwareAwareTuner

    started = time.perf_counter()
    tuner = HardwareAwareTuner(**settings["class_args"])
    tuner.update_search_space(settings["search_space"])
    args = build_parser().parse_args(settings["trial_args"])
    records, first = [], None
    with quiet_third_party():
        for trial_id in range(trials):
            try:
                params = tuner.generate_parameters(trial_id)
            except nni.NoMoreTrialError as exc:
                logger.warning("the tuner stopped after %d trials: %s", trial_id, exc)
                break
            first = first or params
            arch, result = evaluate(args, params)
            tuner.receive_trial_result(trial_id, params, result)
            tuner.trial_end(trial_id, True)
            records.append({"arch": arch, **{k: result[k] for k in
                                             ("accuracy", "latency_ms", "energy_mj", "within_budget")}})
            logger.info("trial %d/%d: accuracy %.3f", trial_id + 1, trials, result["default"])
    within = [r for r in records if r["within_budget"] and r["accuracy"] is not None]
    final = sorted(within, key=lambda r: -r["accuracy"])[:TOP_K]
    wall_s = time.perf_counter() - started
    process_s = time_trial_process(settings["trial_args"], first) if first else None
    return {"wall_s": wall_s, "trials": len(records), "tuner_rejected": tuner.rejected, "final": final,
            "trial_process_s": process_s, "search": records,
            "nnictl_estimate_s": None if process_s is None else len(records) * process_s}


def time_trial_process(trial_args: list[str], params: dict[str, Any]) -> float:
    """Seconds of one trial as nnictl runs it: ``python -m nni_hwaware.nas.trial`` in a fresh process."""
    import subprocess

    command = [sys.executable, "-m", "nni_hwaware.nas.trial", *trial_args, "--params", json.dumps(params)]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def run_method(name: str, config: OneShotConfig, workdir: Path) -> dict[str, Any]:
    """One one-shot search through ``run_oneshot``; its finalists and timings."""
    report = run_oneshot(config, workdir / name)
    return {"wall_s": report["timings"]["wall_s"], "timings": report["timings"], "evaluated": report["evaluated"],
            "final": report["final"], "space": config.space, "config": report["config"]}


def retrain_common(finals: list[dict[str, Any]], space: str, seeds: int) -> list[dict[str, Any]]:
    """The finalists retrained with the quickstart trial's training on fresh seeds (1..seeds), averaged."""
    from nni_hwaware.spaces import load_space

    space_obj = load_space(space)
    rows = []
    for row in finals:
        accs = [estimate_accuracy(space_obj, row["arch"], AccuracySettings(
            method="digits", epochs=1, max_train=600, width_mult=0.0625, min_input=12, seed=seed))["accuracy"]
            for seed in range(1, seeds + 1)]
        rows.append({**row, "retrained_accuracies": accs, "retrained_accuracy": sum(accs) / len(accs)})
    return rows


def summarize(method: dict[str, Any], predictor: Any, budget: Budget) -> dict[str, Any]:
    """Best retrained accuracy within budget and share of finalists within budget (judged again here)."""
    finals = method["final"]
    extra = {k: round(method[k], 1) for k in ("trial_process_s", "nnictl_estimate_s") if method.get(k)}
    ok = [budget.check(predictor.estimate(r["arch"])).ok for r in finals]
    within = [r["retrained_accuracy"] for r, good in zip(finals, ok) if good]
    return {"wall_s": round(method["wall_s"], 1), "finalists": len(finals),
            "within_budget_share": (sum(ok) / len(ok)) if ok else None,
            "best_retrained_accuracy_within_budget": max(within) if within else None,
            "load_before_after": method["load"], **extra}


def _row(name: str, s: dict[str, Any], ref: dict[str, Any]) -> str:
    best, ref_best = s["best_retrained_accuracy_within_budget"], ref["best_retrained_accuracy_within_budget"]
    gap = f"{100 * (best - ref_best):+.1f}" if best is not None and ref_best is not None else "-"
    share = "-" if s["within_budget_share"] is None else f"{s['within_budget_share']:.0%}"
    return (f"{name:<30}{s['wall_s']:>9.0f}{ref['wall_s'] / s['wall_s']:>9.2f}x"
            f"{'-' if best is None else f'{best:.4f}':>10}{gap:>8}{share:>8}{s['finalists']:>6}"
            f"  {s['load_before_after'][0][0]:.1f}/{s['load_before_after'][1][0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny searches, 3 trials, 1 seed")
    parser.add_argument("--trials", type=int, default=None, help="multi-trial trials (default 30; --quick 3)")
    parser.add_argument("--retrain-seeds", type=int, default=None, help="retraining seeds (default 5; --quick 1)")
    parser.add_argument("--methods", default="multitrial,spos,proxyless", help="comma-separated subset, in order")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/oneshot.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trials = args.trials or (3 if args.quick else 30)
    seeds = args.retrain_seeds or (1 if args.quick else 5)
    out = Path(args.out or (REPO / "runs" / "bench-oneshot-quick.json" if args.quick
                            else REPO / "benchmarks" / "results" / "oneshot.json"))
    settings = quickstart()
    budget_dict = _budget_dict(settings["class_args"])
    configs = oneshot_configs(args.quick, budget_dict)
    methods: dict[str, dict[str, Any]] = {}
    summary: dict[str, dict[str, Any]] = {}
    predictors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-oneshot-") as tmp:
        for name in args.methods.split(","):
            before = _load()
            logger.info("%s: starting (load %s)", name, before)
            if name == "multitrial":
                method = dict(run_multitrial(settings, trials), space="convnet")
            else:
                method = run_method(name, configs[name], Path(tmp))
            method["load"] = [before, _load()]
            logger.info("%s: %.0f s; retraining %d finalists x %d seeds", name, method["wall_s"],
                        len(method["final"]), seeds)
            method["final"] = retrain_common(method["final"], method["space"], seeds)
            if method["space"] not in predictors:
                predictors[method["space"]] = load_predictor(str(REPO / "predictors" / "jetson_nano"),
                                                             method["space"], 50)
            methods[name] = method
            summary[name] = summarize(method, predictors[method["space"]], Budget(**budget_dict))
            report(args, methods, summary, budget_dict, seeds, trials, out)  # after each method
    return 0


def report(args: argparse.Namespace, methods: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]],
           budget_dict: dict[str, float], seeds: int, trials: int, out: Path) -> None:
    """Ratios against multi-trial, the JSON and the table of the methods run so far."""
    ref = summary.get("multitrial")
    for name, s in summary.items():
        if ref is not None and name != "multitrial":
            s["speedup_vs_multitrial"] = round(ref["wall_s"] / s["wall_s"], 2)
            if ref.get("nnictl_estimate_s"):
                s["speedup_vs_nnictl_estimate"] = round(ref["nnictl_estimate_s"] / s["wall_s"], 2)
            best, ref_best = s["best_retrained_accuracy_within_budget"], ref["best_retrained_accuracy_within_budget"]
            s["accuracy_gap_points"] = None if best is None or ref_best is None else round(100 * (best - ref_best), 2)
    result = {"quick": args.quick, "budget": budget_dict, "hardware_input_size": 50, "multitrial_trials": trials,
              "retraining": {"epochs": 1, "max_train": 600, "width_mult": 0.0625, "min_input": 12,
                             "seeds": list(range(1, seeds + 1))},
              "cores": os.cpu_count(), "summary": summary,
              "methods": {k: {kk: vv for kk, vv in v.items() if kk != "search"} for k, v in methods.items()},
              "multitrial_search": methods.get("multitrial", {}).get("search")}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, result, indent=1, default=str)
    print(f"\nOne-shot vs multi-trial on digits, budget {budget_dict}, Jetson Nano predictor at 50x50; "
          f"accuracy: best finalist within budget, retrained {seeds} seed(s) (mean)")
    print(f"{'method':<30}{'wall s':>9}{'speed-up':>10}{'accuracy':>10}{'gap pt':>8}{'within':>8}{'final':>6}"
          f"  load 1-min before/after")
    labels = {"spos": "SPOS + evolution (convnet)", "proxyless": "Proxyless (mobilenetv3)",
              "multitrial": f"multi-trial TPE, {trials} trials"}
    for name, s in summary.items():
        print(_row(labels[name], s, ref or s))
    if ref is not None and ref.get("nnictl_estimate_s"):
        print(f"multi-trial with a process per trial, as nnictl runs it (estimate: {trials} x "
              f"{ref['trial_process_s']:.1f} s, one trial timed as a fresh process): {ref['nnictl_estimate_s']:.0f} s; "
              + "speed-up against it: " + ", ".join(f"{n} {s['speedup_vs_nnictl_estimate']:.2f}x" for n, s in summary.items()
                          if "speedup_vs_nnictl_estimate" in s))
    print(f"results: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
