"""Benchmark of the shipped Jetson Nano predictor: held-out dataset splits and real-world CNNs at 224x224.

Held-out figures come from the model card written by training (re-run training to recompute them). Nothing in
the predictor is fitted on the real-world networks: the latency roofline is averaged over a physical prior of
the constants the dataset cannot identify, and energy is that latency times a power learned on the dataset, so
the real-world errors below are a test. Real-world CNNs: plain-torch definitions (nni_hwaware/jetson/zoo.py) compared with the only public Jetson Nano
measurements of them we found, by the dataset's authors (source and conditions in zoo.REFERENCE_SOURCE).
Three predictors are compared on them: the shipped one (roofline, with the gradient-boosted correction only in
distribution), the hybrid forced everywhere, and a gradient-boosting model on whole-network features
(the published approach; refitted here on the full dataset).

    python benchmarks/jetson_nano.py [--data ../shared/data/jetson_nano] [--no-baseline]

Writes benchmarks/results/jetson_nano.json and updates the real-world section of the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from nni_hwaware import metrics  # noqa: E402
from nni_hwaware.jetson import zoo  # noqa: E402
from nni_hwaware.jetson.card import write_model_card  # noqa: E402
from nni_hwaware.jetson.features import NETWORK_FEATURES, feature_matrix, network_features  # noqa: E402
from nni_hwaware.jetson.graph import layers_from_module  # noqa: E402
from nni_hwaware.jetson.predictor import JetsonNanoPredictor, default_predictor_dir  # noqa: E402
from nni_hwaware.spaces.export import write_atomically  # noqa: E402


def _gbm_baseline(data: Path) -> dict:
    from nni_hwaware.jetson.dataset import load_dataset
    from nni_hwaware.jetson.models import gradient_boosting
    from nni_hwaware.jetson.train import dataset_graphs

    models, _ = load_dataset(data)
    F = feature_matrix(dataset_graphs(models))
    return {t: gradient_boosting().fit(F, np.log([getattr(m, t) for m in models]))
            for t in ("latency_ms", "energy_mj")}


def zoo_rows(predictor: Any, baseline: Any, power_w: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The predictor (and the whole-network baseline) on every zoo network: rows with a public measurement,
    and the others."""
    rows, other = [], []
    for name in zoo.ZOO:
        start = time.time()
        model = zoo.build(name)
        graph = layers_from_module(model, zoo.INPUT_SHAPE)
        result = predictor.predict_layers(graph, params=zoo.param_count(model))
        F = np.array([[network_features(graph)[c] for c in NETWORK_FEATURES]])
        forced = {t: result[f"{t}_roofline"] * math.exp(float(predictor._residual_model(t).predict(F)[0]))
                  for t in ("latency_ms", "energy_mj")}
        row = {"model": name, "macs": result["macs"], "params": result["params"],
               "pred_latency_ms": result["latency_ms"], "pred_energy_mj": result["energy_mj"],
               "latency_interval": result["latency_interval"], "energy_interval": result["energy_interval"],
               "in_distribution": result["in_distribution"], "ood_score": round(result["ood_score"], 2),
               "hybrid_forced_latency_ms": forced["latency_ms"], "hybrid_forced_energy_mj": forced["energy_mj"],
               "predict_s": round(time.time() - start, 1)}
        if baseline is not None:
            row["gbm_latency_ms"] = float(np.exp(baseline["latency_ms"].predict(F)[0]))
            row["gbm_energy_mj"] = float(np.exp(baseline["energy_mj"].predict(F)[0]))
        ref = zoo.REFERENCE.get(name)
        if ref is None:
            other.append(row)
            continue
        row.update(latency_ms=ref[0], energy_mj=ref[1], reference_macs=ref[2], reference_params=ref[3],
                   latency_err_pct=100 * (row["pred_latency_ms"] / ref[0] - 1),
                   energy_err_pct=100 * (row["pred_energy_mj"] / ref[1] - 1),
                   power_w=ref[1] / ref[0], pred_power_w=power_w[name]["predicted"],
                   latency_in_interval=row["latency_interval"][0] <= ref[0] <= row["latency_interval"][1],
                   energy_in_interval=row["energy_interval"][0] <= ref[1] <= row["energy_interval"][1])
        rows.append(row)
    return rows, other


def real_world_summary(rows: list[dict], with_baseline: bool) -> tuple[dict, dict]:
    """MAPE % per method on the measured zoo networks, and the 90 % intervals' coverage."""

    def mape(key: str, target: str) -> float:
        return round(metrics.mape([r[target] for r in rows], [r[key] for r in rows]), 2)

    summary = {"shipped": {"latency": mape("pred_latency_ms", "latency_ms"), "energy": mape("pred_energy_mj", "energy_mj")},
               "hybrid_forced": {"latency": mape("hybrid_forced_latency_ms", "latency_ms"),
                                 "energy": mape("hybrid_forced_energy_mj", "energy_mj")},
               "published_predictor": {"latency": 15.50, "energy": 15.28}}
    if with_baseline:
        summary["gbm_whole_network"] = {"latency": mape("gbm_latency_ms", "latency_ms"),
                                        "energy": mape("gbm_energy_mj", "energy_mj")}
    summary["shipped_power_w"] = {"latency": None, "energy": mape("pred_power_w", "power_w")}
    coverage = {"latency": sum(r["latency_in_interval"] for r in rows) / len(rows),
                "energy": sum(r["energy_in_interval"] for r in rows) / len(rows)}
    return summary, coverage


def print_report(card: dict, rows: list[dict], other: list[dict], summary: dict, coverage: dict,
                 check: dict) -> None:
    """The benchmark's tables."""
    print("Held-out dataset splits, MAPE % (pooled over folds)")
    print(f"{'split':<30}{'target':<12}{'base':>10}{'gbm':>8}{'hybrid':>8}")
    for split, res in card["metrics_held_out_mape_pct"].items():
        for target, v in res["pooled"].items():
            print(f"{split:<30}{target:<12}{v['roofline']:>10.2f}{v['gbm']:>8.2f}{v['hybrid']:>8.2f}")
    print("\nReal-world CNNs at 224x224 vs measurements by the dataset authors (" + zoo.REFERENCE_SOURCE + ")")
    print(f"{'model':<16}{'meas ms':>9}{'pred ms':>9}{'err':>8}{'meas mJ':>9}{'pred mJ':>9}{'err':>8}"
          f"{'meas W':>8}{'pred W':>8}  in-dist  gbm ms")
    for r in rows:
        print(f"{r['model']:<16}{r['latency_ms']:>9.1f}{r['pred_latency_ms']:>9.1f}{r['latency_err_pct']:>+7.1f}%"
              f"{r['energy_mj']:>9.1f}{r['pred_energy_mj']:>9.1f}{r['energy_err_pct']:>+7.1f}%"
              f"{r['power_w']:>8.2f}{r['pred_power_w']:>8.2f}  {r['in_distribution']!s:<7}"
              f"{r.get('gbm_latency_ms', float('nan')):>8.1f}")
    for r in other:
        print(f"{r['model']:<16}{'-':>9}{r['pred_latency_ms']:>9.1f}{'':>8}{'-':>9}{r['pred_energy_mj']:>9.1f}   (no public measurement)")
    print("\nReal-world MAPE % (nothing in the shipped predictor is fitted on these networks; shipped_power_w: the "
          "GPU power factor of the energy prediction):")
    for k, v in summary.items():
        print(f"  {k:<24} latency {v['latency']!s:>6}  energy {v['energy']:>6}")
    print("\nLatency MAPE % on the real-world networks under narrower priors of the transfer constants:")
    for r in check["latency_prior_sensitivity"]:
        print(f"  {r['prior']:<36} {r['candidates']:>5} candidates  {r['mape_pct']:>6.2f}")
    print(f"90 % interval coverage on real-world: latency {coverage['latency']:.0%}, energy {coverage['energy']:.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "jetson_nano"))
    parser.add_argument("--predictor", default=str(default_predictor_dir()))
    parser.add_argument("--no-baseline", action="store_true", help="skip refitting the gradient-boosting baseline")
    args = parser.parse_args(argv)
    predictor = JetsonNanoPredictor.load(args.predictor)
    card = json.loads((Path(args.predictor) / "model_card.json").read_text())
    baseline = None if args.no_baseline else _gbm_baseline(Path(args.data))

    check = predictor.meta["real_world_check"]
    rows, other = zoo_rows(predictor, baseline, {r["model"]: r for r in check["power_w"]["rows"]})
    summary, coverage = real_world_summary(rows, baseline is not None)
    out = {"held_out_mape_pct": card["metrics_held_out_mape_pct"], "real_world": rows,
           "real_world_without_reference": other, "real_world_mape_pct": summary,
           "real_world_interval_coverage": coverage, "latency_prior_sensitivity": check["latency_prior_sensitivity"],
           "reference_source": zoo.REFERENCE_SOURCE}
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    write_atomically(results / "jetson_nano.json", (json.dumps(out, indent=1) + "\n").encode())

    print_report(card, rows, other, summary, coverage, check)

    meta = predictor.meta
    real = {"source": zoo.REFERENCE_SOURCE, "rows": rows, "mape_latency_pct": summary["shipped"]["latency"],
            "mape_energy_pct": summary["shipped"]["energy"], "comparison": summary, "interval_coverage": coverage}
    write_model_card(Path(args.predictor), meta, card["data"]["report"], card["metrics_held_out_mape_pct"],
                     card.get("training_time_s", 0.0), real_world=real)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
