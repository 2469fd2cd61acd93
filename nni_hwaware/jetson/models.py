"""The estimators: per-layer roofline model, GPU power and energy models, gradient-boosting residual model,
out-of-distribution scorer.

All follow scikit-learn conventions (``__init__`` stores parameters, ``fit`` returns ``self``, ``predict`` is
pure) and save to plain arrays (JSON/npz), except the gradient-boosting models, which are saved with skops.
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
    (:mod:`nni_hwaware.jetson.prior` averages the model over plausible values of them).

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
        if model.coef_.shape != (len(ROOFLINE_COLUMNS),):
            raise ValueError(f"{len(model.coef_)} roofline coefficients for {len(ROOFLINE_COLUMNS)} columns")
        model.seen_classes_ = list(data["seen_classes"])
        return model


# Where an inference's predicted time goes, as shares of the total: the inputs of the power model.
TIME_SHARES = ["dense_compute", "depthwise_compute", "memory", "conv_weights", "gemv", "launches", "fixed"]
# More of the time in dense compute cannot lower the GPU's power; more of it in launches or host-side fixed
# work (GPU waiting) cannot raise it.
POWER_MONOTONE = [1, 0, 0, 0, 0, -1, -1]


def time_shares(roofline: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted latency and its shares by kind of work (:data:`TIME_SHARES`), per row of ``X``.

    ``roofline`` is a fitted latency model with ``layer_costs`` and ``act_cost_per_gb``. Linear layers count as
    memory traffic where weight streaming at the activation bandwidth is their cost (wide layers, such as
    VGG's 4096-output ones), as batch-1 GEMV otherwise (the dataset's 10-output heads).
    """
    X = np.asarray(X, float)
    parts = roofline.layer_costs(X)
    total = parts.sum(axis=1)
    dense = parts[:, [_COL[c] for c in COMPUTE_CLASSES if c.startswith("conv")]].sum(axis=1)
    depthwise = parts[:, [_COL[c] for c in COMPUTE_CLASSES if c.startswith("dw")]].sum(axis=1)
    linear = parts[:, _COL["linear_gb"]]
    streaming = roofline.act_cost_per_gb * X[:, _COL["linear_gb"]] >= linear - 1e-12
    shares = np.c_[dense, depthwise, parts[:, _COL["act_gb"]] + np.where(streaming, linear, 0.0),
                   parts[:, _COL["weight_gb"]], np.where(streaming, 0.0, linear), parts[:, _COL["launches"]],
                   parts[:, _COL["one"]]]
    return total, shares / np.maximum(total, 1e-12)[:, None]


class PowerModel:
    """Average GPU-rail power (W) of back-to-back inferences, from the shares of their predicted time.

    A gradient-boosted regression, monotone where physics fixes the sign (:data:`POWER_MONOTONE`). Power is
    bounded (the dataset spans 1.4-5.3 W) and trees do not extrapolate beyond their training targets, so a
    network unlike the training data still gets a power inside the measured range.

    Parameters
    ----------
    max_iter, seed
        Boosting iterations and random seed.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.random.default_rng(0).dirichlet(np.ones(len(TIME_SHARES)), size=300)
    >>> model = PowerModel(max_iter=20).fit(S, 2 + 3 * S[:, 0] - S[:, 5])
    >>> bool(model.predict(S).min() > 1)
    True
    """

    def __init__(self, max_iter: int = 300, seed: int = 0) -> None:
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, shares: np.ndarray, power_w: np.ndarray) -> PowerModel:
        self.gbm_ = gradient_boosting(self.seed, self.max_iter, monotonic_cst=POWER_MONOTONE)
        self.gbm_.fit(np.asarray(shares, float), np.asarray(power_w, float))
        return self

    def predict(self, shares: np.ndarray) -> np.ndarray:
        return self.gbm_.predict(np.asarray(shares, float))


class EnergyFromPower:
    """GPU energy per inference (mJ) = predicted latency (ms) x predicted average GPU power (W).

    The dataset's energy is the GPU-rail energy of a 60 s run divided by its inferences, i.e. average power
    times the time per inference. Predicting the two factors separately lets energy inherit the latency
    model's transfer to real networks, and leaves a bounded quantity (power) to learn from the dataset: no
    energy constant is chosen on real-world measurements.

    Parameters
    ----------
    power_iters, seed
        Boosting iterations and seed of the :class:`PowerModel`.
    """

    def __init__(self, power_iters: int = 300, seed: int = 0) -> None:
        self.power_iters = power_iters
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, *, latency_model: Any, latency_ms: np.ndarray) -> EnergyFromPower:
        """Fit the power model on measured power ``y / latency_ms`` against ``latency_model``'s time shares."""
        self.latency_model_ = latency_model
        _, shares = time_shares(latency_model, X)
        self.power_ = PowerModel(self.power_iters, self.seed).fit(shares, np.asarray(y, float) / latency_ms)
        return self

    def predict_parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted latency (ms) and power (W)."""
        latency, shares = time_shares(self.latency_model_, X)
        return latency, self.power_.predict(shares)

    def predict(self, X: np.ndarray) -> np.ndarray:
        latency, power = self.predict_parts(X)
        return latency * power

    @classmethod
    def from_parts(cls, latency_model: Any, power_gbm: Any) -> EnergyFromPower:
        """Rebuild a fitted model from its latency model and the power model's saved regressor."""
        model = cls()
        model.latency_model_ = latency_model
        model.power_ = PowerModel()
        model.power_.gbm_ = power_gbm
        return model


#: The smallest unit a network feature is measured in by the OOD distance. Features are log10 quantities and
#: shares of time or MACs, so 0.05 is a 12 % change of a quantity or 5 points of a share. Without a floor, a
#: feature that never varies in the dataset (the share of 7x7 depthwise convs is always 0) turns any network
#: that has some into a distance of 10^5, and nothing of the search spaces is ever in distribution.
SCALE_FLOOR = 0.05


class KnnDistance:
    """Out-of-distribution score: mean distance to the k nearest training networks in standardised features.

    Each feature is divided by its standard deviation in the training data, but never by less than
    ``scale_floor`` (see :data:`SCALE_FLOOR`).

    Parameters
    ----------
    k
        Neighbours averaged.
    scale_floor
        The smallest feature scale.
    """

    def __init__(self, k: int = 5, scale_floor: float = SCALE_FLOOR) -> None:
        self.k = k
        self.scale_floor = scale_floor

    def fit(self, X: np.ndarray) -> KnnDistance:
        X = np.asarray(X, float)
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.maximum(X.std(axis=0), self.scale_floor)
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


def gradient_boosting(seed: int = 0, max_iter: int = 300, monotonic_cst: list[int] | None = None) -> Any:
    """The gradient-boosting regressor of the baseline (log target), the residual and the power models."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.05, max_leaf_nodes=31,
                                         min_samples_leaf=20, l2_regularization=1e-3, random_state=seed,
                                         monotonic_cst=monotonic_cst)
