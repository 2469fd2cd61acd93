"""Fit the Jetson Nano predictor on the public dataset, evaluate it on held-out splits, write the artifact.

Three models are compared on every split: the base model, the gradient-boosting model on whole-network
features (the published approach, log target), and the hybrid that multiplies the base prediction by a
gradient-boosted correction. The base model of latency is the per-layer roofline averaged over a physical
prior of the transfer constants the dataset cannot identify (cost per GB of memory traffic, per kernel, fixed;
:mod:`nni_hwaware.jetson.prior`); the base model of energy is that latency times a GPU power learned from where
the predicted time goes (:class:`~nni_hwaware.jetson.models.EnergyFromPower`). The shipped predictor uses the
hybrid for in-distribution networks and the base model alone outside the training distribution, where a
learned correction has nothing to stand on. The 9 published real-world measurements are never fitted: they
are predicted once, as a test (:func:`real_world_check`).

Splits:

* random rows (80/20);
* architecture families, 5-fold: a family is a model name without depth and input size (layer type, filters,
  kernel configuration; 601 of them), and every depth and input size of a family lands in the same fold, so
  no near-copy of a test model is in training;
* architecture families x depth: the same folds, training only on L <= 7 and testing only on L >= 8 of the
  held-out families (unseen family and unseen depth at once);
* held-out depth (train on L <= 7, test on L >= 8);
* leave-one-dataset-family-out (plain, plain_high_mac, dws, mixed): op-type extrapolation. Leaving out ``dws``
  removes every depthwise conv from training and ``mixed`` every dense 5x5-7x7 conv, so these folds measure
  how a model prices layer types it has never seen;
* leave-one-stage-out (the nine published stage folders).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.artifacts import check_output_dir, replace_output_dir, staging_dir
from nni_hwaware.errors import HwAwareError
from nni_hwaware.jetson.dataset import DatasetModel, load_dataset
from nni_hwaware.jetson.features import NETWORK_FEATURES, ROOFLINE_COLUMNS, feature_matrix, roofline_rows
from nni_hwaware.jetson.graph import GraphLayers, convnet_onnx, extract_layers
from nni_hwaware.jetson.models import (
    POWER_MONOTONE,
    SCALE_FLOOR,
    TIME_SHARES,
    EnergyFromPower,
    KnnDistance,
    gradient_boosting,
)
from nni_hwaware.jetson.predictor import ARTIFACT_VERSION
from nni_hwaware.jetson.prior import PriorAveragedRoofline, prior_sensitivity, reference_errors
from nni_hwaware.measure.progress import progress_bar
from nni_hwaware.metrics import mape

logger = logging.getLogger(__name__)

TARGETS = ("latency_ms", "energy_mj")
METHODS = ("roofline", "gbm", "hybrid")
INTERVAL_QUANTILES = (0.05, 0.95)
OOD_QUANTILE = 0.99
KNN_K = 5
FAMILY_FOLDS = 5
POWER_FILE = "power_w.skops"


def dataset_graphs(models: list[DatasetModel], show_progress: bool = False) -> list[GraphLayers]:
    """Per-layer graphs of all dataset models, from their weight-less ONNX graphs (with a progress bar)."""
    graphs = []
    with progress_bar(len(models), "per-layer graphs", enabled=show_progress, unit="network") as bar:
        for model in models:
            graphs.append(extract_layers(convnet_onnx(model.arch, model.input_size)))
            bar.update(1)
    return graphs


class HybridFit:
    """Base models of both targets plus gradient-boosted log-residual corrections, fitted together.

    Parameters
    ----------
    prior
        Prior of the latency roofline's transfer constants (default
        :data:`~nni_hwaware.jetson.prior.TRANSFER_PRIOR`).
    gbm_iters, seed
        Boosting iterations and random seed of the gradient-boosting models (power model included).
    """

    def __init__(self, prior: dict[str, Any] | None = None, gbm_iters: int = 300, seed: int = 0) -> None:
        self.prior = prior
        self.gbm_iters = gbm_iters
        self.seed = seed

    def fit(self, R: np.ndarray, F: np.ndarray, Y: dict[str, np.ndarray]) -> HybridFit:
        self.latency_ = PriorAveragedRoofline(self.prior).fit(R, Y["latency_ms"])
        self.energy_ = EnergyFromPower(self.gbm_iters, self.seed).fit(
            R, Y["energy_mj"], latency_model=self.latency_, latency_ms=Y["latency_ms"])
        base = self.base(R)
        self.residual_ = {t: gradient_boosting(self.seed, self.gbm_iters).fit(F, np.log(Y[t] / base[t]))
                          for t in TARGETS}
        self.gbm_ = {t: gradient_boosting(self.seed, self.gbm_iters).fit(F, np.log(Y[t])) for t in TARGETS}
        return self

    def base(self, R: np.ndarray) -> dict[str, np.ndarray]:
        """Base-model predictions of both targets."""
        return {"latency_ms": self.latency_.predict(R), "energy_mj": self.energy_.predict(R)}

    def predict(self, R: np.ndarray, F: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        base = self.base(R)
        return {t: {"roofline": base[t], "gbm": np.exp(self.gbm_[t].predict(F)),
                    "hybrid": base[t] * np.exp(self.residual_[t].predict(F))} for t in TARGETS}


def splits(models: list[DatasetModel], seed: int = 0) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Named held-out splits: each a list of (fold label, train indices, test indices)."""
    n = len(models)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    cut = int(0.8 * n)
    family = np.array([m.family for m in models])
    stage = np.array([m.stage for m in models])
    depth = np.array([m.layers for m in models])
    arch_family = np.array([m.architecture_family for m in models])
    names = sorted(set(arch_family))
    fold_of = {names[j]: i % FAMILY_FOLDS for i, j in enumerate(rng.permutation(len(names)))}
    group = np.array([fold_of[a] for a in arch_family])
    shallow, deep = depth <= 7, depth >= 8
    out: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {
        "random_80_20": [("random", np.sort(perm[:cut]), np.sort(perm[cut:]))],
        "architecture_family_5fold": [(f"families {g}", np.where(group != g)[0], np.where(group == g)[0])
                                      for g in range(FAMILY_FOLDS)],
        "architecture_family_x_depth": [(f"families {g}, L>=8", np.where((group != g) & shallow)[0],
                                         np.where((group == g) & deep)[0]) for g in range(FAMILY_FOLDS)],
        "depth_8_10_held_out": [("L>=8", np.where(shallow)[0], np.where(deep)[0])],
        "leave_family_out": [(f, np.where(family != f)[0], np.where(family == f)[0]) for f in sorted(set(family))],
        "leave_stage_out": [(s, np.where(stage != s)[0], np.where(stage == s)[0]) for s in sorted(set(stage))],
    }
    return {name: [f for f in folds if len(f[1]) and len(f[2])] for name, folds in out.items()}


def evaluate(R: np.ndarray, F: np.ndarray, Y: dict[str, np.ndarray], models: list[DatasetModel],
             gbm_iters: int = 300) -> tuple[dict[str, Any], dict]:
    """MAPE of every method on every split; also returns held-out residuals for intervals and OOD calibration."""
    results: dict[str, Any] = {}
    residuals: dict[str, Any] = {"hybrid_random": {}, "roofline_extrapolation": {t: [] for t in TARGETS}}
    for split_name, folds in splits(models).items():
        if not folds:  # a small subset may have no model on one side of a split
            continue
        split_res: dict[str, Any] = {"folds": {}}
        pooled: dict[str, dict[str, list[np.ndarray]]] = {t: {m: [] for m in METHODS} for t in TARGETS}
        truth: dict[str, list[np.ndarray]] = {t: [] for t in TARGETS}
        for label, tr, te in folds:
            fold: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te))}
            fit = HybridFit(gbm_iters=gbm_iters).fit(R[tr], F[tr], {t: Y[t][tr] for t in TARGETS})
            all_preds = fit.predict(R[te], F[te])
            for target in TARGETS:
                y = Y[target]
                preds = all_preds[target]
                fold[target] = {m: round(mape(y[te], preds[m]), 2) for m in METHODS}
                for m in METHODS:
                    pooled[target][m].append(preds[m])
                truth[target].append(y[te])
                if split_name == "random_80_20":
                    residuals["hybrid_random"][target] = np.log(y[te] / preds["hybrid"])
                    residuals["random_split"] = (tr, te)
                if split_name in ("leave_family_out", "depth_8_10_held_out"):
                    residuals["roofline_extrapolation"][target].append(np.log(y[te] / preds["roofline"]))
            split_res["folds"][label] = fold
            logger.info("  %s / %s: %s", split_name, label, ", ".join(
                f"{t} " + " ".join(f"{m} {fold[t][m]:.1f}%" for m in METHODS) for t in TARGETS))
        split_res["pooled"] = {t: {m: round(mape(np.concatenate(truth[t]), np.concatenate(pooled[t][m])), 2)
                                   for m in METHODS} for t in TARGETS}
        results[split_name] = split_res
    for t in TARGETS:
        residuals["roofline_extrapolation"][t] = np.concatenate(residuals["roofline_extrapolation"][t])
    return results, residuals


def real_world_check(fit: HybridFit) -> dict[str, Any]:
    """Predict the published real-world networks with the base models (a test: nothing is fitted on them).

    Returns per-target errors (:func:`~nni_hwaware.jetson.prior.reference_errors`), the log residuals used to
    widen the out-of-distribution intervals, and the latency MAPE under narrower priors.
    """
    from nni_hwaware.jetson.zoo import reference_graphs

    logger.info("building the real-world reference networks (224x224) ...")
    names, ref_graphs, ref_latency, ref_energy = reference_graphs()
    R_ref = roofline_rows(ref_graphs)
    base = fit.base(R_ref)
    measured = {"latency_ms": ref_latency, "energy_mj": ref_energy}
    out: dict[str, Any] = {t: reference_errors(names, measured[t], base[t]) for t in TARGETS}
    _, power = fit.energy_.predict_parts(R_ref)
    out["power_w"] = reference_errors(names, ref_energy / ref_latency, power)
    out["latency_prior_sensitivity"] = prior_sensitivity(fit.latency_, R_ref, ref_latency)
    out["log_residuals"] = {t: [float(v) for v in np.log(measured[t] / base[t])] for t in TARGETS}
    for target in TARGETS:
        logger.info("  real-world %s: MAPE %.1f %% (not fitted on these networks)", target,
                    out[target]["mape_pct"])
    return out


def _write_artifacts(folder: Path, meta: dict[str, Any], knn: KnnDistance, final: HybridFit) -> None:
    """The predictor's files (no pickles): ``arrays.npz``, the skops models and ``predictor.json``."""
    import skops.io as sio

    np.savez_compressed(folder / "arrays.npz", **{k: np.asarray(v) for k, v in knn.arrays().items()})
    for name, regressor in [(POWER_FILE, final.energy_.power_.gbm_),
                            *((f"residual_{t}.skops", final.residual_[t]) for t in TARGETS)]:
        sio.dump(regressor, folder / name)
    (folder / "predictor.json").write_text(json.dumps(meta, indent=1) + "\n")


def _ood_threshold(F: np.ndarray, residuals: dict[str, Any] | None) -> float:
    """The distance above which a network is out of distribution: a quantile of held-out networks' distances
    (the random split's test part; alternate rows when there was no held-out evaluation)."""
    if residuals is not None:
        tr, te = residuals["random_split"]
        held = KnnDistance(KNN_K).fit(F[tr]).score(F[te])
    else:
        held = KnnDistance(KNN_K).fit(F[::2]).score(F[1::2])
    return float(np.quantile(held, OOD_QUANTILE))


def _interval_bounds(final: HybridFit, R: np.ndarray, F: np.ndarray, Y: dict[str, np.ndarray],
                     residuals: dict[str, Any] | None, real_world: dict[str, Any]) -> dict[str, Any]:
    """Log-ratio interval bounds per target, in and out of distribution, from held-out residuals."""
    intervals: dict[str, Any] = {}
    for t in TARGETS:
        if residuals is not None:
            in_res, ood_res = residuals["hybrid_random"][t], residuals["roofline_extrapolation"][t]
        else:
            full = final.predict(R, F)[t]
            in_res = np.log(Y[t] / full["hybrid"])
            ood_res = np.log(Y[t] / full["roofline"])
        # Outside the data the interval must also cover the real-world networks' errors.
        real = np.array(real_world["log_residuals"][t])
        intervals[t] = {
            "in_distribution": [float(np.quantile(in_res, q)) for q in INTERVAL_QUANTILES],
            "out_of_distribution": [float(min(np.quantile(ood_res, INTERVAL_QUANTILES[0]), real.min(), -0.1)),
                                    float(max(np.quantile(ood_res, INTERVAL_QUANTILES[1]), real.max(), 0.1))],
        }
    return intervals


def _predictor_meta(final: HybridFit, real_world: dict[str, Any], threshold: float, intervals: dict[str, Any],
                    training: dict[str, Any]) -> dict[str, Any]:
    """The predictor's ``predictor.json``."""
    return {
        "kind": "jetson_nano",
        "version": ARTIFACT_VERSION,
        "device": "NVIDIA Jetson Nano (TensorRT, batch 1, power mode 0)",
        "targets": {"latency_ms": "average_latency(ms)", "energy_mj": "GPU_energy_per_inference (mJ)"},
        "latency_roofline": final.latency_.to_dict(),
        "energy_model": {"kind": "latency x power", "power_inputs": TIME_SHARES, "power_monotone": POWER_MONOTONE,
                         "power_file": POWER_FILE},
        "real_world_check": real_world,
        "network_features": NETWORK_FEATURES,
        "roofline_columns": ROOFLINE_COLUMNS,
        "ood": {"method": f"mean Euclidean distance to the {KNN_K} nearest training networks in network "
                          f"features standardised by their spread (at least {SCALE_FLOOR})", "k": KNN_K,
                "scale_floor": SCALE_FLOOR, "threshold": threshold,
                "threshold_quantile": OOD_QUANTILE},
        "interval_quantiles": list(INTERVAL_QUANTILES),
        "intervals_log_ratio": intervals,
        "gbm_files": {t: f"residual_{t}.skops" for t in TARGETS},
        "training": training,
    }


def train(data_dir: str | Path, out_dir: str | Path, *, limit_per_stage: int | None = None,
          gbm_iters: int = 300, evaluate_splits: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Load the dataset, evaluate on held-out splits, fit on everything and write the predictor folder.

    Parameters
    ----------
    data_dir
        The Jetson Nano dataset folder.
    out_dir
        Where to write ``predictor.json``, ``arrays.npz``, ``*.skops``, ``model_card.json`` and ``README.md``.
    limit_per_stage
        Use at most this many models per stage (quick runs and tests).
    gbm_iters
        Boosting iterations of the gradient-boosting models.
    evaluate_splits
        Run the held-out evaluation (needed for intervals; without it intervals come from training residuals).
    show_progress
        Draw a progress bar on stderr while the graphs are extracted (the steps are logged at INFO).

    Returns
    -------
    dict
        The model card.
    """
    from nni_hwaware.jetson.card import write_model_card

    out = check_output_dir(out_dir, "jetson_nano", "out_dir")
    t0 = time.time()
    logger.info("loading %s ...", data_dir)
    models, report = load_dataset(data_dir, limit_per_stage=limit_per_stage)
    logger.info("  %d measured models (%d rows without latency skipped, %d duplicates averaged); MACs match "
                "%d/%d, params match %d/%d", report.models, report.skipped_unmeasured, report.duplicates,
                report.macs_match, report.models, report.params_match, report.models)
    if report.models < 40:
        raise HwAwareError(f"only {report.models} measured models found; need at least 40 to train")
    graphs = dataset_graphs(models, show_progress)
    R, F = roofline_rows(graphs), feature_matrix(graphs)
    Y = {"latency_ms": np.array([m.latency_ms for m in models]), "energy_mj": np.array([m.energy_mj for m in models])}
    metrics: dict[str, Any] = {}
    residuals: dict[str, Any] = {}
    if evaluate_splits:
        logger.info("held-out evaluation (roofline / gbm / hybrid) ...")
        metrics, residuals = evaluate(R, F, Y, models, gbm_iters)
    logger.info("fitting on all data ...")
    final = HybridFit(gbm_iters=gbm_iters).fit(R, F, Y)
    real_world = real_world_check(final)
    knn = KnnDistance(KNN_K).fit(F)
    threshold = _ood_threshold(F, residuals if evaluate_splits else None)
    intervals = _interval_bounds(final, R, F, Y, residuals if evaluate_splits else None, real_world)
    meta = _predictor_meta(final, real_world, threshold, intervals,
                           {"models": report.models, "limit_per_stage": limit_per_stage, "gbm_iters": gbm_iters})
    staged = staging_dir(out)
    try:
        if (out / "model_card.json").is_file():  # its real-world section (from the benchmark) is kept
            shutil.copy2(out / "model_card.json", staged / "model_card.json")
        _write_artifacts(staged, meta, knn, final)
        card = write_model_card(staged, meta, report.as_dict(), metrics, elapsed_s=time.time() - t0)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    replace_output_dir(staged, out, "jetson_nano", "out_dir")
    logger.info("wrote %s in %.0f s", out, time.time() - t0)
    return card
