"""Does the SPOS supernet rank architectures as training them from scratch does? (``oneshot_spos.yml``)

For each setting (supernet epochs; paths within the budget or over the whole space), the ``convnet`` supernet
is trained as ``nni-hwaware nas oneshot`` trains it (:func:`~nni_hwaware.nas.oneshot.search.train_supernet`:
NNI's ``RandomOneShot``), then ``--archs`` random architectures within the budget (the ones the evolution may
score; the same ones for every setting) are scored twice: on the supernet (its weights, the search's
validation split) and trained from scratch with the quickstart trial's training (1 epoch, 600 digits, its
test split, seed 1). Reported: Spearman and Kendall correlation of the two, the supernet's mean and best
accuracy, and the training time. A supernet at chance scores every architecture about 0.1.

Usage::

    nice python benchmarks/supernet_ranking.py                      # about 6 minutes on 2 cores
    python benchmarks/supernet_ranking.py --settings 30:budget --archs 8

Results: ``benchmarks/results/supernet_ranking.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from nni_hwaware.artifacts import write_json_atomically  # noqa: E402
from nni_hwaware.hardware import load_predictor  # noqa: E402
from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy  # noqa: E402
from nni_hwaware.nas.constraints import Budget  # noqa: E402
from nni_hwaware.nas.oneshot import search  # noqa: E402
from nni_hwaware.nas.oneshot.config import OneShotConfig, load_config  # noqa: E402
from nni_hwaware.nas.oneshot.supernet import HwSupernet  # noqa: E402
from nni_hwaware.spaces import sample_architectures  # noqa: E402


def in_budget_architectures(config: OneShotConfig, supernet: HwSupernet, predictor: Any, budget: Budget,
                            count: int) -> list[dict[str, Any]]:
    """``count`` random architectures the supernet holds and the budget admits (seed 1: not the training's)."""
    archs = [a for a in sample_architectures(supernet.space, 40 * count, seed=1) if search.trainable(supernet, a)]
    return [a for a, e in zip(archs, predictor.estimate_many(archs)) if budget.check(e).ok][:count]


def ranking(config: OneShotConfig, epochs: int, within_budget: bool, archs: list[dict[str, Any]],
            scratch: list[float], predictor: Any, budget: Budget) -> dict[str, Any]:
    """Train the supernet in one setting and compare its scores of ``archs`` with ``scratch``."""
    from scipy.stats import kendalltau, spearmanr

    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs),
                                 strategy=dataclasses.replace(config.strategy, train_within_budget=within_budget))
    supernet = HwSupernet(config.space, input_size=config.train.input_size, width_mult=config.train.width_mult,
                          num_classes=10)
    data = search.load_data(config)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as tmp, search.quiet_third_party():
        trained = search.train_supernet(config, supernet, predictor, budget, data, Path(tmp)).supernet
    train_s = time.perf_counter() - started
    scores = [search.evaluate_on_supernet(trained.freeze(trained.arch_to_sample(a)), data,
                                          config.train.batch_size, config.strategy.calibration_batches)
              for a in archs]
    return {"epochs": epochs, "within_budget": within_budget, "train_s": round(train_s, 1),
            "spearman": round(float(spearmanr(scores, scratch)[0]), 3),
            "kendall": round(float(kendalltau(scores, scratch)[0]), 3),
            "supernet_mean_accuracy": round(float(np.mean(scores)), 3),
            "supernet_best_accuracy": round(float(np.max(scores)), 3), "supernet_accuracy": scores}


def parse_settings(text: str) -> list[tuple[int, bool]]:
    """``"3:space,30:budget"`` -> ``[(3, False), (30, True)]``; anything else is argparse's one-line error."""
    settings = []
    for item in text.split(","):
        epochs, _, paths = item.partition(":")
        if not epochs.isdigit() or int(epochs) < 1 or paths not in ("space", "budget"):
            raise argparse.ArgumentTypeError(f"{item!r} is not EPOCHS:space or EPOCHS:budget (e.g. 30:budget)")
        settings.append((int(epochs), paths == "budget"))
    return settings


def architecture_count(text: str) -> int:
    """4 to 200 (fewer say nothing about a ranking; more take long), else argparse's one-line error."""
    if not text.isdigit() or not 4 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of architectures from 4 to 200")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=parse_settings, default="3:space,30:space,30:budget",
                        help="comma-separated EPOCHS:space|budget (paths over the whole space or within the budget)")
    parser.add_argument("--archs", type=architecture_count, default=16, help="architectures scored both ways (4-200)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "supernet_ranking.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = load_config(REPO / "experiments" / "oneshot_spos.yml")
    predictor = load_predictor(str(REPO / "predictors" / "jetson_nano"), config.space, config.hardware_input_size)
    budget = Budget(**config.budget)
    probe = HwSupernet(config.space, input_size=config.train.input_size, width_mult=config.train.width_mult,
                       num_classes=10)
    archs = in_budget_architectures(config, probe, predictor, budget, args.archs)
    settings = AccuracySettings(method="digits", epochs=1, max_train=600, width_mult=config.train.width_mult,
                                min_input=config.train.input_size, seed=1)
    scratch = [estimate_accuracy(probe.space, a, settings)["accuracy"] for a in archs]
    rows = []
    for epochs, within_budget in args.settings:
        logging.info("training the supernet: %d epochs, paths %s", epochs,
                     "within the budget" if within_budget else "over the whole space")
        rows.append(ranking(config, epochs, within_budget, archs, scratch, predictor, budget))
    result = {"space": config.space, "budget": config.budget, "archs": archs, "scratch_accuracy": scratch,
              "settings": rows, "load_after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
    write_json_atomically(Path(args.out), result, indent=1)
    print(f"\nSPOS supernet vs training from scratch, {len(archs)} random convnet architectures within the budget")
    print(f"{'epochs':>6} {'paths':<7}{'train s':>8}{'Spearman':>10}{'Kendall':>9}{'mean acc':>10}{'best acc':>10}")
    for r in rows:
        print(f"{r['epochs']:>6} {'budget' if r['within_budget'] else 'space':<7}{r['train_s']:>8.0f}"
              f"{r['spearman']:>10.3f}{r['kendall']:>9.3f}{r['supernet_mean_accuracy']:>10.3f}"
              f"{r['supernet_best_accuracy']:>10.3f}")
    print(f"stand-alone accuracy of the same architectures: {min(scratch):.3f}-{max(scratch):.3f}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
