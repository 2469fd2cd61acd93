"""Model card of the Jetson Nano predictor: machine-readable ``model_card.json`` and a human ``README.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nni_hwaware.spaces.export import write_atomically

INTENDED_USE = (
    "Ranking and budgeting CNN candidates for a Jetson Nano (TensorRT, batch 1, power mode 0) during "
    "hardware-aware NAS, without a board. Inputs: any CNN as a torch module or an ONNX graph (weights not needed).")
LIMITS = [
    "Trained only on plain and depthwise-separable conv stacks (stride 1, no batch-norm, no residuals, no "
    "pooling, 10-output linear head, inputs 10-100 px). Costs of pooling, element-wise ops, residual adds, "
    "strided and transposed convs come from the calibrated memory-traffic and per-kernel constants, not from "
    "measurements of those ops; such networks are flagged out of distribution and get the wider interval.",
    "Depthwise 3x3 convs get no compute cost of their own (the fit puts 0 on it): on the dataset they cost "
    "only their memory traffic and launch, consistent with TensorRT's specialised, memory-bound 3x3 depthwise "
    "kernel; other depthwise kernel sizes cost about ten times more per MAC than dense convs.",
    "Linear layers: the dataset's only linear layers have 10 outputs and very long inputs; wide linear "
    "layers (e.g. VGG's 4096 outputs) are assumed to stream weights at the fitted activation bandwidth.",
    "TensorRT's layer fusions are modelled by the rules of TensorRT 8.x on the Jetson Nano (conv+BN+ReLU/ReLU6, "
    "conv+residual add, other pointwise ops such as SiLU and HardSwish as separate chained PointWise kernels, "
    "concat elimination); a different TensorRT version may fuse differently.",
    "The engine precision of the measurements is not stated by the dataset authors.",
    "Real-world reference: only 9 published measurements. Three transfer constants of the roofline model "
    "(cost per GB of memory traffic, per kernel, fixed per inference) cannot be identified on the dataset and "
    "are chosen on these 9 networks, so the shipped predictor's real-world errors are in-sample; the "
    "leave-one-out errors (each network predicted with constants chosen on the other 8) are the honest "
    "estimate for a new architecture and are reported beside them. The out-of-distribution interval is "
    "widened to the largest leave-one-out miss, so it covers these 9 networks by construction.",
    "ShuffleNetV2 is the network the others disagree with: left out, its latency is over-predicted by ~40 % "
    "and its energy by ~65 % (its measured GPU power, 2.5 W, is the lowest of all). Energy transfers worse "
    "than latency: leave-one-out energy MAPE is above the published 15.28 %.",
]


SPLITS = {
    "random_80_20": "random rows, 80 % train / 20 % test",
    "architecture_family_5fold": "5 folds over the 601 architecture families (model name without depth and input "
                                 "size: layer type, filters, kernel configuration); every depth and input size of "
                                 "a family is in the same fold, so no near-copy of a test model is in training",
    "architecture_family_x_depth": "the same family folds, training only on L <= 7 and testing only on L >= 8 of "
                                   "the held-out families: unseen family and unseen depth at once",
    "depth_8_10_held_out": "train on L <= 7, test on L >= 8",
    "leave_family_out": "leave one dataset family (plain, plain_high_mac, dws, mixed) out: op-type extrapolation. "
                        "Without dws, training has no depthwise conv at all; without mixed, no dense 5x5-7x7 conv",
    "leave_stage_out": "leave one of the nine published stage folders out",
}


def write_model_card(out: Path, meta: dict[str, Any], data_report: dict[str, Any], metrics: dict[str, Any],
                     elapsed_s: float, real_world: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model_card.json`` and ``README.md`` into ``out``; keep an existing real-world section."""
    card_path = out / "model_card.json"
    previous: dict[str, Any] = {}
    if card_path.is_file():
        try:
            previous = json.loads(card_path.read_text())
        except (OSError, ValueError):
            previous = {}
    card = {
        "name": "jetson_nano",
        "kind": meta["kind"],
        "device": meta["device"],
        "targets": meta["targets"],
        "data": {
            "source": "public Jetson Nano dataset (../shared/data/jetson_nano; iCAS-Lab/NAS-Performance-Modeling, "
                      "ICOIS 2025), raw stage CSVs as published",
            "report": data_report,
            "duplicates_policy": "same model name in several stages: one model, mean of the measurements",
        },
        "features": {
            "roofline_columns": meta["roofline_columns"],
            "network_features": meta["network_features"],
            "extractor": "ONNX graph only (shape inference, initializer dims); torch modules are exported to "
                         "ONNX in memory and go through the same extractor",
        },
        "method": {
            "latency_and_energy": "per-layer roofline model (non-negative least squares on relative error: "
                                  "MACs per dense and per depthwise kernel size, weight bytes, linear GEMV term, "
                                  "fixed cost) with three transfer constants (cost per GB of activation traffic, "
                                  "per kernel launch, fixed cost) chosen on the published real-world "
                                  "measurements, times a gradient-boosted log-residual correction applied "
                                  "only in distribution",
            "intervals": f"{int(meta['interval_quantiles'][0] * 100)}-{int(meta['interval_quantiles'][1] * 100)} % "
                         "quantiles of held-out log residuals: random-split hybrid residuals in distribution, "
                         "leave-family-out and held-out-depth roofline residuals outside, widened to cover the "
                         "real-world leave-one-out errors",
            "ood": meta["ood"],
            "coefficients": {t: dict(zip(r["columns"], r["coef"])) for t, r in meta["roofline"].items()},
            "transfer_calibration": meta.get("transfer_calibration", {}),
        },
        "metrics_held_out_mape_pct": metrics or previous.get("metrics_held_out_mape_pct", {}),
        "real_world": real_world if real_world is not None else previous.get("real_world", {}),
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "training_time_s": round(elapsed_s, 1),
        "rebuild": "nni-hwaware jetson-nano train --data ../shared/data/jetson_nano --out predictors/jetson_nano",
    }
    write_atomically(card_path, (json.dumps(card, indent=1) + "\n").encode())
    write_atomically(out / "README.md", render_readme(card).encode())
    return card


def render_readme(card: dict[str, Any]) -> str:
    """Human-readable model card."""
    lines = ["# Jetson Nano latency and energy predictor", "",
             f"Device: {card['device']}. Targets: latency (ms) and GPU energy per inference (mJ).", "",
             "## Intended use", "", card["intended_use"], "",
             "## Data", "", card["data"]["source"] + ".", ""]
    rep = card["data"]["report"]
    lines += [f"{rep.get('models')} measured models ({rep.get('skipped_unmeasured')} rows without latency "
              f"skipped, {rep.get('duplicates')} duplicates; {card['data']['duplicates_policy']}). Rebuilt "
              f"architectures match the CSV's MACs for {rep.get('macs_match')}/{rep.get('models')} and its "
              f"parameters for {rep.get('params_match')}/{rep.get('models')} models.", "",
              "## Method", "", card["method"]["latency_and_energy"] + ".", "",
              "Intervals: " + card["method"]["intervals"] + ".", "",
              "Out of distribution: " + card["method"]["ood"]["method"] + f", threshold "
              f"{card['method']['ood']['threshold']:.3f} (the {card['method']['ood']['threshold_quantile']:.0%} "
              "quantile on held-out rows); any layer structure absent from the data (pooling, residual add, "
              "strided conv, ...) also makes a network out of distribution.", "",
              "## Held-out MAPE (%)", "",
              "| split | target | roofline | gbm (published approach) | hybrid |", "| --- | --- | --- | --- | --- |"]
    for split, res in card["metrics_held_out_mape_pct"].items():
        for target, row in res.get("pooled", {}).items():
            lines.append(f"| {split} | {target} | {row['roofline']} | {row['gbm']} | {row['hybrid']} |")
    lines.append("")
    for split, res in card["metrics_held_out_mape_pct"].items():
        folds = res.get("folds", {})
        per_fold = "; ".join(f"{label} {f['latency_ms']['hybrid']}/{f['energy_mj']['hybrid']}"
                             for label, f in folds.items()) if len(folds) > 1 else ""
        lines.append(f"- `{split}`: {SPLITS.get(split, split)}."
                     + (f" Hybrid per fold (latency/energy): {per_fold}." if per_fold else ""))
    calibration = card["method"].get("transfer_calibration") or {}
    if calibration:
        lines += ["", "## Transfer calibration", "",
                  "Constants chosen on the real-world networks below (leave-one-out: each network predicted with "
                  "the constants chosen on the other eight):", ""]
        for target, cal in calibration.items():
            lines.append(f"- {target}: {cal['params']} ({cal['candidates']} candidates); real-world MAPE "
                         f"{cal['mape_pct']} % in-sample, {cal['loo_mape_pct']} % leave-one-out (median "
                         f"{cal['loo_median_ape_pct']} %).")
    real = card.get("real_world") or {}
    if real.get("rows"):
        loo = {t: {r["model"]: r["loo_error_pct"] for r in cal["rows"]} for t, cal in calibration.items()}
        lines += ["", "## Real-world CNNs (224x224, measured by the dataset authors)", "",
                  f"Reference: {real.get('source')}.", "",
                  "| model | measured ms | predicted ms | error | leave-one-out | measured mJ | predicted mJ | error "
                  "| leave-one-out |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in real["rows"]:
            lat_loo, en_loo = loo.get("latency_ms", {}).get(r["model"]), loo.get("energy_mj", {}).get(r["model"])
            lines.append(f"| {r['model']} | {r['latency_ms']:.1f} | {r['pred_latency_ms']:.1f} | "
                         f"{r['latency_err_pct']:+.1f} % | {_pct(lat_loo)} | {r['energy_mj']:.1f} | "
                         f"{r['pred_energy_mj']:.1f} | {r['energy_err_pct']:+.1f} % | {_pct(en_loo)} |")
        lines += ["", f"MAPE latency {real.get('mape_latency_pct')} %, energy {real.get('mape_energy_pct')} % "
                  "(in-sample); leave-one-out latency "
                  f"{calibration.get('latency_ms', {}).get('loo_mape_pct')} %, energy "
                  f"{calibration.get('energy_mj', {}).get('loo_mape_pct')} % "
                  "(published predictor: 15.50 % / 15.28 %)."]
    lines += ["", "## Limits", ""] + [f"- {x}" for x in card["limits"]]
    lines += ["", "## Rebuild", "", f"`{card['rebuild']}`", ""]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"
