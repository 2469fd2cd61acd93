"""The shipped Jetson Nano predictor: load a predictor folder and predict latency/energy for any CNN.

Loading reads one JSON, one small npz and the power model (skops); the gradient-boosting corrections (skops)
are loaded lazily, only when an in-distribution network needs them.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.artifacts import load_skops, read_json_object, require_keys, safe_member
from nni_hwaware.errors import ArtifactError
from nni_hwaware.jetson.features import (
    NETWORK_FEATURES,
    ROOFLINE_COLUMNS,
    network_features,
    roofline_rows,
    structure_summary,
)
from nni_hwaware.jetson.graph import COMPUTE_KINDS, CONV, DECONV, DWCONV, GCONV, GraphLayers, extract_layers
from nni_hwaware.jetson.models import TIME_SHARES, EnergyFromPower, KnnDistance
from nni_hwaware.jetson.prior import PriorAveragedRoofline
from nni_hwaware.paths import data_dir

TARGETS = ("latency_ms", "energy_mj")
ARTIFACT_VERSION = 4  # 4: the OOD distance has a scale floor (arrays.npz and the threshold changed)


def default_predictor_dir() -> Path:
    """The shipped predictor folder (works from a checkout and from an installed wheel)."""
    return data_dir("predictors") / "jetson_nano"


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """``predictor.json`` of a predictor folder as an object, with a clear error when it is missing or broken."""
    path = Path(folder) / "predictor.json"
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a predictor folder (no predictor.json); train one with "
                            "`nni-hwaware jetson-nano train` or pass predictors/jetson_nano")
    return read_json_object(path, "rebuild the predictor")


class JetsonNanoPredictor:
    """Latency (ms) and GPU energy (mJ) of a CNN on a Jetson Nano, with intervals and an OOD flag.

    Parameters
    ----------
    folder
        Predictor folder (default: the shipped ``predictors/jetson_nano``).

    Examples
    --------
    >>> import torch
    >>> predictor = JetsonNanoPredictor.load()
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(64 * 32 * 32, 10))
    >>> result = predictor.predict_module(net, (1, 3, 32, 32))
    >>> {"latency_ms", "energy_mj", "latency_interval", "in_distribution"} <= set(result)
    True
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_predictor_dir()
        meta = read_metadata(self.folder)
        if meta.get("kind") != "jetson_nano":
            raise ArtifactError(f"{self.folder} holds a {meta.get('kind')!r} predictor, not jetson_nano")
        if meta.get("network_features") != NETWORK_FEATURES or meta.get("roofline_columns") != ROOFLINE_COLUMNS:
            raise ArtifactError(f"{self.folder} was trained with other features than this version uses; retrain it")
        self.meta = meta
        try:
            if meta.get("version") != ARTIFACT_VERSION:
                raise ValueError(meta.get("version"))
            latency = PriorAveragedRoofline.from_dict(meta["latency_roofline"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ArtifactError(f"{self.folder} holds a predictor of an older version or a damaged latency "
                                "model; retrain it with `nni-hwaware jetson-nano train`") from None
        require_keys(meta, ("energy_model", "ood", "intervals_log_ratio", "gbm_files"), self.folder / "predictor.json")
        self._residual: dict[str, Any] = {}
        energy = meta["energy_model"]
        power = self._load_model(energy.get("power_file") if isinstance(energy, dict) else None, len(TIME_SHARES))
        self.base = {"latency_ms": latency, "energy_mj": EnergyFromPower.from_parts(latency, power)}
        try:
            with np.load(safe_member(self.folder, "arrays.npz"), allow_pickle=False) as arrays:
                self.knn = KnnDistance.from_arrays(arrays, int(meta["ood"]["k"]))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"cannot read {self.folder / 'arrays.npz'} ({type(exc).__name__}); retrain the "
                                "predictor") from None
        self._check_shapes()

    @classmethod
    def load(cls, folder: str | Path | None = None) -> JetsonNanoPredictor:
        """Load a predictor folder (default: the shipped one)."""
        return cls(folder)

    def _load_model(self, name: Any, n_features: int) -> Any:
        """A gradient-boosting regressor saved with skops (exact allow-list), fitted on ``n_features`` inputs."""
        path = safe_member(self.folder, name)
        model = load_skops(path)
        if getattr(model, "n_features_in_", None) != n_features or not hasattr(model, "predict"):
            raise ArtifactError(f"{path} is not a model of this predictor's {n_features} features; retrain it")
        return model

    def _check_shapes(self) -> None:
        """Weights of the wrong shape (an edited ``arrays.npz`` or ``predictor.json``) fail here, not later."""
        n = len(NETWORK_FEATURES)
        knn = self.knn
        try:
            shapes_ok = (knn.train_.ndim == 2 and knn.train_.shape[1] == n and knn.mean_.shape == (n,)
                         and knn.scale_.shape == (n,) and len(knn.train_) >= knn.k >= 1)
            for target in TARGETS:
                for side in ("in_distribution", "out_of_distribution"):
                    lo, hi = self.meta["intervals_log_ratio"][target][side]
                    shapes_ok = shapes_ok and math.isfinite(float(lo)) and math.isfinite(float(hi))
            shapes_ok = shapes_ok and math.isfinite(float(self.meta["ood"]["threshold"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            shapes_ok = False
        if not shapes_ok:
            raise ArtifactError(f"{self.folder} holds arrays or intervals of the wrong shape; retrain the predictor")

    def _residual_model(self, target: str) -> Any:
        if target not in self._residual:
            files = self.meta["gbm_files"]
            name = files.get(target) if isinstance(files, dict) else None
            self._residual[target] = self._load_model(name, len(NETWORK_FEATURES))
        return self._residual[target]

    # ------------------------------------------------------------------------------------------ predict
    def predict_layers(self, graph: GraphLayers, params: float | None = None) -> dict[str, Any]:
        """Predict from an extracted graph (see :func:`nni_hwaware.jetson.graph.extract_layers`)."""
        return self.predict_layers_many([graph], [params])[0]

    def predict_layers_many(self, graphs: Sequence[GraphLayers],
                            params: Sequence[float | None] | None = None) -> list[dict[str, Any]]:
        """:meth:`predict_layers` of many graphs, with one call of each model for all of them: the same figures
        without each model's fixed cost per call (``estimate_many`` of the Jetson Nano adapter uses it)."""
        params = list(params) if params is not None else [None] * len(graphs)
        R = roofline_rows(list(graphs))
        F = np.array([[network_features(g)[c] for c in NETWORK_FEATURES] for g in graphs],
                     dtype=float).reshape(len(graphs), len(NETWORK_FEATURES))
        ood_scores = self.knn.score(F) if len(graphs) else np.empty(0)
        threshold = float(self.meta["ood"]["threshold"])
        described = [self._describe(g, float(score), threshold, p) for g, score, p in zip(graphs, ood_scores, params)]
        inside = np.array([d["in_distribution"] for d in described], dtype=bool)
        figures: list[dict[str, Any]] = [{} for _ in graphs]
        quantiles = self.meta["intervals_log_ratio"]
        for target in TARGETS:
            base = self.base[target].predict(R) if len(graphs) else np.empty(0)
            correction = np.zeros(len(graphs))
            if inside.any():
                correction[inside] = self._residual_model(target).predict(F[inside])
            for result, ok, b, c in zip(figures, inside, base, correction):
                value = float(b) * math.exp(float(c)) if ok else float(b)
                if not (math.isfinite(value) and value > 0):
                    raise ArtifactError(f"{self.folder} predicted a {target} of {value} (corrupt weights?); retrain "
                                        "the predictor")
                lo, hi = quantiles[target]["in_distribution" if ok else "out_of_distribution"]
                result[target] = value
                result[f"{target}_roofline"] = float(b)
                result[f"{target.split('_')[0]}_interval"] = [value * math.exp(lo), value * math.exp(hi)]
        return [{**f, **d} for f, d in zip(figures, described)]

    @staticmethod
    def _describe(graph: GraphLayers, ood_score: float, threshold: float, params: float | None) -> dict[str, Any]:
        """What a prediction says of its graph besides the figures: distribution, structure, warnings."""
        summary = structure_summary(graph)
        reasons = []
        if ood_score > threshold:
            reasons.append(f"network features are far from the training data (score {ood_score:.2f} > "
                           f"{threshold:.2f})")
        if summary["untrained_structures"]:
            reasons.append("layer structures absent from the training data: "
                           + ", ".join(summary["untrained_structures"]))
        if graph.unknown_ops:
            reasons.append("unknown ops: " + ", ".join(graph.unknown_ops))
        is_cnn = any(layer.kind in (CONV, DWCONV, GCONV, DECONV) for layer in graph.layers)
        warnings = list(graph.warnings)
        if not is_cnn:
            warnings.append("not a CNN: the graph has no convolution; the predictor was trained on CNNs only, so "
                            "this estimate is a rough roofline guess")
            reasons.append("no convolution layer")
        in_distribution = not reasons
        compute = [layer for layer in graph.layers if layer.kind in COMPUTE_KINDS]
        return {
            "in_distribution": in_distribution,
            "ood_score": ood_score,
            "ood_threshold": threshold,
            "ood_reasons": reasons,
            "certain": not graph.unknown_ops and is_cnn,
            "is_cnn": is_cnn,
            "macs": int(round(graph.macs)),
            "params": int(round(params if params is not None else graph.params)),
            "input_shape": graph.input_shape,
            "layers": summary["layers"],
            "compute_layers": len(compute),
            "op_counts": summary["counts"],
            "kernel_mac_share": {k: round(v, 4) for k, v in sorted(summary["kernel_mac_share"].items())},
            "unknown_ops": graph.unknown_ops,
            "warnings": warnings,
            "method": ("hybrid (base x gradient-boosted correction)" if in_distribution
                       else "base (roofline latency; energy = roofline latency x power)"),
        }

    def predict_onnx(self, source: str | Path | bytes, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """Predict for an ONNX file (weights may be external and absent) or ONNX bytes."""
        return self.predict_layers(extract_layers(source, input_shape))

    def predict_module(self, model: Any, input_shape: Sequence[int]) -> dict[str, Any]:
        """Predict for a ``torch.nn.Module`` with input shape e.g. ``(1, 3, 224, 224)``."""
        from nni_hwaware.jetson.graph import layers_from_module

        params = float(sum(p.numel() for p in model.parameters()))
        return self.predict_layers(layers_from_module(model, input_shape), params=params)
