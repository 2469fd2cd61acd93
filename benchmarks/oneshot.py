"""One-shot vs multi-trial hardware-aware NAS on digits at the quickstart's budgets (Jetson Nano predictor).

Three searches, one after the other on this machine, each at the budgets of ``experiments/quickstart.yml``
(latency 30 ms, energy 80 mJ, margin 10 %, Jetson Nano predictor):

a. **SPOS + evolution**: ``experiments/oneshot_spos.yml`` through
   :func:`nni_hwaware.nas.oneshot.search.run_oneshot` (convnet supernet, NNI ``RandomOneShot`` then
   ``RegularizedEvolution`` behind the hardware filter, finalists retrained);
b. **Proxyless + latency loss**: NNI's ``Proxyless`` cannot run on ``convnet`` (its candidates change the
   output's shape), so ``experiments/oneshot_proxyless.yml``'s space (``mobilenetv3``) with the quickstart's
   budget and hardware input size (50) instead of the config's own;
c. **multi-trial, in process**: the quickstart's tuner (``HardwareAwareTuner``: TPE behind the budget, its
   ``classArgs``) and trial (``nni_hwaware.nas.trial.evaluate`` with the quickstart's ``trialCommand``
   options), driven in this process, one trial at a time (as ``trialConcurrency: 1``), for ``--trials``
   trials. nnictl's own overhead (a Python process per trial, its imports, NNI's manager) is not counted: a
   lower bound on any multi-trial search's wall time;
d. **multi-trial, nnictl**: the quickstart experiment itself as users run it (``nnictl create`` through
   :func:`nni_hwaware.nas.experiment.run_experiment`, ``--trials`` trials, stopped at the end), timed from
   the call to the report.

Every method's finalists (SPOS / Proxyless: their ``final``; multi-trial: the ``top_k`` most accurate trials
within budget) are then retrained the same way, outside the timed searches: the quickstart trial's training
(1 epoch, 600 digits, width 1/16) with ``--retrain-seeds`` fresh seeds (1, 2, ...: other splits and
initialisations than the searches saw), averaged. Reported per method: wall time, best retrained accuracy
within budget, share of finalists within budget, and against each multi-trial run the wall-time speed-up and
the accuracy gap in points. The load average around each search records what else was running.

Usage::

    nice python benchmarks/oneshot.py              # about 25 minutes on 2 cores (Proxyless: 12, nnictl: 8)
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
    records = []
    with quiet_third_party():
        for trial_id in range(trials):
            try:
                params = tuner.generate_parameters(trial_id)
            except nni.NoMoreTrialError as exc:
                logger.warning("the tuner stopped after %d trials: %s", trial_id, exc)
                break
            arch, result = evaluate(args, params)
            tuner.receive_trial_result(trial_id, params, result)
            tuner.trial_end(trial_id, True)
            records.append({"arch": arch, **{k: result[k] for k in
                                             ("accuracy", "latency_ms", "energy_mj", "within_budget")}})
            logger.info("trial %d/%d: accuracy %.3f", trial_id + 1, trials, result["default"])
    within = [r for r in records if r["within_budget"] and r["accuracy"] is not None]
    final = sorted(within, key=lambda r: -r["accuracy"])[:TOP_K]
    return {"wall_s": time.perf_counter() - started, "trials": len(records), "tuner_rejected": tuner.rejected,
            "final": final, "search": records}


def run_multitrial_nnictl(trials: int, workdir: Path) -> dict[str, Any]:
    """The quickstart experiment through nnictl (stopped at the end); its ``top_k`` trials within budget."""
    from nni_hwaware.nas.experiment import run_experiment

    started = time.perf_counter()
    report = run_experiment(EXPERIMENTS / "quickstart.yml", out=workdir / "nnictl", trials=trials, stop=True,
                            progress=False)
    wall_s = time.perf_counter() - started
    rows = [{k: r[k] for k in ("arch", "accuracy", "latency_ms", "energy_mj", "within_budget")}
            for r in report["rows"]]
    within = [r for r in rows if r["within_budget"] and r["accuracy"] is not None]
    return {"wall_s": wall_s, "trials": report["trials"], "status": report["status"],
            "final": sorted(within, key=lambda r: -r["accuracy"])[:TOP_K], "search": rows}


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
    ok = [budget.check(predictor.estimate(r["arch"])).ok for r in finals]
    within = [r["retrained_accuracy"] for r, good in zip(finals, ok) if good]
    return {"wall_s": round(method["wall_s"], 1), "finalists": len(finals),
            "within_budget_share": (sum(ok) / len(ok)) if ok else None,
            "best_retrained_accuracy_within_budget": max(within) if within else None,
            "load_before_after": method["load"]}


#: The multi-trial runs every method is compared with.
REFERENCES = ("multitrial", "nnictl")


def _row(name: str, s: dict[str, Any]) -> str:
    best = s["best_retrained_accuracy_within_budget"]
    share = "-" if s["within_budget_share"] is None else f"{s['within_budget_share']:.0%}"
    ratios = "".join(f"{s[f'speedup_vs_{ref}']:>10.2f}x" if f"speedup_vs_{ref}" in s else f"{'-':>11}"
                     for ref in REFERENCES)
    gaps = "".join(f"{s[f'accuracy_gap_points_vs_{ref}']:>+8.1f}" if s.get(f"accuracy_gap_points_vs_{ref}")
                   is not None else f"{'-':>8}" for ref in REFERENCES)
    return (f"{name:<30}{s['wall_s']:>9.0f}{ratios}{'-' if best is None else f'{best:.4f}':>10}{gaps}"
            f"{share:>8}{s['finalists']:>6}  {s['load_before_after'][0][0]:.1f}/{s['load_before_after'][1][0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny searches, 3 trials, 1 seed")
    parser.add_argument("--trials", type=int, default=None, help="multi-trial trials (default 30; --quick 3)")
    parser.add_argument("--retrain-seeds", type=int, default=None, help="retraining seeds (default 5; --quick 1)")
    parser.add_argument("--methods", default="multitrial,nnictl,spos,proxyless",
                        help="comma-separated subset, in order")
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
            elif name == "nnictl":
                method = dict(run_multitrial_nnictl(trials, Path(tmp)), space="convnet")
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
    for name, s in summary.items():
        for ref_name in REFERENCES:
            ref = summary.get(ref_name)
            if ref is None or name == ref_name:
                continue
            s[f"speedup_vs_{ref_name}"] = round(ref["wall_s"] / s["wall_s"], 2)
            best, ref_best = s["best_retrained_accuracy_within_budget"], ref["best_retrained_accuracy_within_budget"]
            s[f"accuracy_gap_points_vs_{ref_name}"] = (None if best is None or ref_best is None
                                                       else round(100 * (best - ref_best), 2))
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
    print(f"{'method':<30}{'wall s':>9}{'vs in-proc':>11}{'vs nnictl':>11}{'accuracy':>10}{'gap pt':>8}"
          f"{'gap pt':>8}{'within':>8}{'final':>6}  load 1-min before/after")
    print(f"{'':<30}{'':>9}{'speed-up':>11}{'speed-up':>11}{'':>10}{'in-proc':>8}{'nnictl':>8}")
    labels = {"spos": "SPOS + evolution (convnet)", "proxyless": "Proxyless (mobilenetv3)",
              "multitrial": f"multi-trial TPE, {trials}, in-proc", "nnictl": f"multi-trial TPE, {trials}, nnictl"}
    for name, s in summary.items():
        print(_row(labels[name], s))
    print(f"results: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
