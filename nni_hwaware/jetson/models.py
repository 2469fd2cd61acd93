"""The estimators: per-layer roofline model, gradient-boosting residual model, out-of-distribution scorer.

All follow scikit-learn conventions (``__init__`` stores parameters, ``fit`` returns ``self``, ``predict`` is
pure) and save to plain arrays (JSON/npz), except the gradient-boosting model, which is saved with skops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import nnls

from nni_hwaware.jetson.features import COMPUTE_CLASSES, ROOFLINE_COLUMNS

_COL = {c: i for i, c in enumerate(ROOFLINE_COLUMNS)}


class RooflineModel:
    """Sum over layers of non-negative per-class costs, fitted on relative error.

    ``t = sum_c a_c * MACs_c + b_act * act_GB + b_w * weight_GB + linear + g * launches + t0`` where the
    linear-layer term is ``max(b_act * linear_GB, b_lin * linear_GB * 10 / N)``: weight streaming at the
    activation bandwidth, or the parallelism-limited GEMV rate calibrated on the dataset's 10-output layers,
    whichever is slower. Compute classes absent from the training data borrow the coefficient of the
    nearest kernel size of the same kind (depthwise falls back to dense), so a 7x7 kernel is never free.
    Depthwise convs share one per-MAC coefficient across kernel sizes: they are bandwidth/latency-bound, and
    separate coefficients let the fit zero out one kernel size (3x3) that the dataset cannot separate from the
    activation traffic, which would make every MobileNet's depthwise layers free.

    Parameters
    ----------
    min_launch_ms
        Per-kernel launch cost ``g`` imposed as a floor (ms). The dataset's networks have at most 21 kernels of
        large work each, so it cannot identify ``g`` (an unconstrained fit gives 0); networks with hundreds of
        small kernels (MobileNet, EfficientNet) need it. 0.1 ms is the largest value the dataset tolerates
        within 0.2 points of random-split MAPE.
    min_act_ms_per_gb
        Floor of the activation-traffic cost: the Jetson Nano's LPDDR4 peak of 25.6 GB/s, i.e. 39 ms per GB.
        The dataset's activation traffic is collinear with its depthwise MACs; without the floor the fit can
        make pooling and element-wise layers (absent from the data) free.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.abs(np.random.default_rng(0).normal(size=(50, len(ROOFLINE_COLUMNS)))); X[:, -1] = 1
    >>> model = RooflineModel().fit(X, X @ np.linspace(1, 2, X.shape[1]))
    >>> model.predict(X).shape
    (50,)
    """

    def __init__(self, min_launch_ms: float = 0.1, min_act_ms_per_gb: float = 1000 / 25.6) -> None:
        self.min_launch_ms = min_launch_ms
        self.min_act_ms_per_gb = min_act_ms_per_gb

    def fit(self, X: np.ndarray, y: np.ndarray) -> RooflineModel:
        X = np.asarray(X, float)
        y = np.asarray(y, float)
        design = X.copy()
        design[:, _COL["linear_gb"]] = X[:, _COL["linear_gb_n10"]]
        design[:, _COL["linear_gb_n10"]] = 0.0
        dw = [_COL[c] for c in COMPUTE_CLASSES if c.startswith("dw_")]
        design[:, dw[0]] = X[:, dw].sum(axis=1)
        design[:, dw[1:]] = 0.0
        floor = np.zeros(len(ROOFLINE_COLUMNS))
        floor[_COL["launches"]], floor[_COL["act_gb"]] = self.min_launch_ms, self.min_act_ms_per_gb
        target = y - design @ floor
        coef, _ = nnls(design / y[:, None], target / y)
        coef[dw[1:]] = coef[dw[0]]
        coef += floor
        coef[_COL["linear_gb"]] = max(coef[_COL["linear_gb"]], coef[_COL["act_gb"]])
        seen = X.sum(axis=0) > 0
        if seen[dw].any():
            seen[dw] = True
        self.seen_classes_ = [c for c in COMPUTE_CLASSES if seen[_COL[c]]]
        self.coef_ = self._fill_unseen(coef, seen)
        return self

    @staticmethod
    def _fill_unseen(coef: np.ndarray, seen: np.ndarray) -> np.ndarray:
        coef = coef.copy()
        for cls in COMPUTE_CLASSES:
            if seen[_COL[cls]]:
                continue
            kind, k = cls.split("_k")[0], int(cls.split("_k")[1])
            for kinds in ([kind], ["conv"]):
                options = [c for c in COMPUTE_CLASSES if c.split("_k")[0] in kinds and seen[_COL[c]]]
                if options:
                    nearest = min(options, key=lambda c: (abs(int(c.split("_k")[1]) - k), -int(c.split("_k")[1])))
                    coef[_COL[cls]] = coef[_COL[nearest]]
                    break
        return coef

    def layer_costs(self, X: np.ndarray) -> np.ndarray:
        """Cost of each column's share (rows x columns), the linear term already maxed."""
        X = np.asarray(X, float)
        parts = X * self.coef_
        act_rate, lin_rate = self.coef_[_COL["act_gb"]], self.coef_[_COL["linear_gb"]]
        parts[:, _COL["linear_gb"]] = np.maximum(act_rate * X[:, _COL["linear_gb"]],
                                                 lin_rate * X[:, _COL["linear_gb_n10"]])
        parts[:, _COL["linear_gb_n10"]] = 0.0
        return parts

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.layer_costs(X).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": ROOFLINE_COLUMNS, "coef": [float(v) for v in self.coef_],
                "seen_classes": self.seen_classes_, "min_launch_ms": self.min_launch_ms,
                "min_act_ms_per_gb": self.min_act_ms_per_gb}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RooflineModel:
        if list(data["columns"]) != ROOFLINE_COLUMNS:
            raise ValueError("roofline columns changed since this predictor was trained; retrain it")
        model = cls(min_launch_ms=float(data["min_launch_ms"]), min_act_ms_per_gb=float(data["min_act_ms_per_gb"]))
        model.coef_ = np.asarray(data["coef"], float)
        model.seen_classes_ = list(data["seen_classes"])
        return model


class KnnDistance:
    """Out-of-distribution score: mean distance to the k nearest training networks in standardised features.

    Parameters
    ----------
    k
        Neighbours averaged.
    """

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, X: np.ndarray) -> KnnDistance:
        X = np.asarray(X, float)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-6
        self.train_ = ((X - self.mean_) / self.scale_).astype(np.float32)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = ((np.asarray(X, float) - self.mean_) / self.scale_).astype(np.float32)
        out = np.empty(len(Z))
        for i, z in enumerate(Z):
            d = np.sqrt(((self.train_ - z) ** 2).sum(axis=1))
            k = min(self.k, len(d))
            out[i] = float(np.partition(d, k - 1)[:k].mean())
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"knn_mean": self.mean_, "knn_scale": self.scale_, "knn_train": self.train_}

    @classmethod
    def from_arrays(cls, arrays: Any, k: int) -> KnnDistance:
        model = cls(k=k)
        model.mean_ = np.asarray(arrays["knn_mean"], float)
        model.scale_ = np.asarray(arrays["knn_scale"], float)
        model.train_ = np.asarray(arrays["knn_train"], np.float32)
        return model


def gradient_boosting(seed: int = 0, max_iter: int = 300) -> Any:
    """The gradient-boosting regressor used both as baseline (on log target) and as residual model."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.05, max_leaf_nodes=31,
                                         min_samples_leaf=20, l2_regularization=1e-3, random_state=seed)
