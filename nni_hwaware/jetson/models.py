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

    ``t = sum_c a_c * MACs_c + beta * act_GB + b_w * weight_GB + linear + g * launches + t0``. The compute
    rates ``a_c`` (one per dense and per depthwise kernel size, plus the batch-1 GEMV rate of narrow linear
    layers) are fitted on the data by non-negative least squares on relative error. Three *transfer
    constants* are parameters instead, because the dataset cannot identify them (its networks are a few large
    stride-1 convs each, so memory traffic, kernel count and fixed cost are collinear with its MACs) while real
    networks with hundreds of small or memory-bound layers depend on them: the cost ``beta`` of a GB of
    activation traffic, the cost ``g`` of one kernel, and optionally the fixed cost ``t0``
    (see :mod:`nni_hwaware.jetson.calibrate`).

    The linear-layer term is ``max(beta * linear_GB, b_lin * linear_GB * 10 / N)``: weight streaming at the
    activation bandwidth, or the parallelism-limited GEMV rate calibrated on the dataset's 10-output layers,
    whichever is slower. Compute classes absent from the training data borrow the coefficient of the nearest
    kernel size of the same kind (depthwise falls back to dense), so a 7x7 kernel is never free.

    Parameters
    ----------
    act_cost_per_gb
        ``beta``: cost (ms, or mJ for energy) of one GB of activation traffic, fixed.
    launch_cost
        ``g``: cost of one kernel, fixed.
    fixed_cost
        ``t0``: per-inference cost, fixed; ``None`` fits it.
    weights_at_act_rate
        Price conv weight bytes at ``beta`` (True) or fit their own coefficient ``b_w`` (False).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.abs(np.random.default_rng(0).normal(size=(50, len(ROOFLINE_COLUMNS)))); X[:, -1] = 1
    >>> model = RooflineModel().fit(X, X @ np.linspace(1, 2, X.shape[1]))
    >>> model.predict(X).shape
    (50,)
    """

    def __init__(self, act_cost_per_gb: float = 70.0, launch_cost: float = 0.04, fixed_cost: float | None = None,
                 weights_at_act_rate: bool = False) -> None:
        self.act_cost_per_gb = act_cost_per_gb
        self.launch_cost = launch_cost
        self.fixed_cost = fixed_cost
        self.weights_at_act_rate = weights_at_act_rate

    def _fixed(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed coefficients and the mask of the columns the fit leaves alone."""
        fixed = np.zeros(len(ROOFLINE_COLUMNS))
        held = np.zeros(len(ROOFLINE_COLUMNS), bool)
        values = {"act_gb": self.act_cost_per_gb, "launches": self.launch_cost, "linear_gb": 0.0}
        if self.weights_at_act_rate:
            values["weight_gb"] = self.act_cost_per_gb
        if self.fixed_cost is not None:
            values["one"] = self.fixed_cost
        for column, value in values.items():
            fixed[_COL[column]], held[_COL[column]] = value, True
        return fixed, held

    def fit(self, X: np.ndarray, y: np.ndarray) -> RooflineModel:
        X = np.asarray(X, float)
        y = np.asarray(y, float)
        fixed, held = self._fixed()
        design = X.copy()
        design[:, _COL["linear_gb"]] = 0.0  # linear layers: the GEMV column is fitted, the max() applied below
        free, _ = nnls(design[:, ~held] / y[:, None], (y - design @ fixed) / y)
        coef = fixed.copy()
        coef[~held] = free
        seen = X.sum(axis=0) > 0
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
        gemv_rate = self.coef_[_COL["linear_gb_n10"]]
        parts[:, _COL["linear_gb"]] = np.maximum(self.act_cost_per_gb * X[:, _COL["linear_gb"]],
                                                 gemv_rate * X[:, _COL["linear_gb_n10"]])
        parts[:, _COL["linear_gb_n10"]] = 0.0
        return parts

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.layer_costs(X).sum(axis=1)

    def get_params(self) -> dict[str, Any]:
        return {"act_cost_per_gb": self.act_cost_per_gb, "launch_cost": self.launch_cost,
                "fixed_cost": self.fixed_cost, "weights_at_act_rate": self.weights_at_act_rate}

    def to_dict(self) -> dict[str, Any]:
        return {"columns": ROOFLINE_COLUMNS, "coef": [float(v) for v in self.coef_],
                "seen_classes": self.seen_classes_, "params": self.get_params()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RooflineModel:
        if list(data["columns"]) != ROOFLINE_COLUMNS or "params" not in data:
            raise ValueError("roofline columns changed since this predictor was trained; retrain it")
        model = cls(**data["params"])
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
