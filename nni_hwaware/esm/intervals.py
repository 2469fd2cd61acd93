"""90 % intervals calibrated on training data only (cross-validation conformal), and their held-out coverage.

A surrogate's interval (ensemble spread, quantile models or the spread of trees) is widened by one pad, set so
that 90 % of *out-of-fold* training points fall inside: each of ``folds`` models is fitted on the other folds
and scores the points it did not see (:meth:`~nni_hwaware.esm.surrogate.MLPSurrogate.conformity_scores`); the
pad is the conformal quantile of all scores; the model itself is fitted on the whole training set. The held-out
set is never used to calibrate, so its coverage (:func:`interval_coverage`) is an honest report.

Examples
--------
>>> import numpy as np
>>> from nni_hwaware.esm.surrogate import make_surrogate
>>> rng = np.random.default_rng(0)
>>> X = rng.random((300, 3)); y = np.exp(X @ [1.0, 2.0, 0.5] + rng.normal(0, 0.1, 300))
>>> model = make_surrogate("rf", random_state=0).fit(X[:200], y[:200])
>>> calibration = calibrate_intervals(model, X[:200], y[:200], folds=5)
>>> calibration["method"], calibration["calibration_size"]
('5-fold cross-validation conformal on the training set', 200)
>>> lo, hi = model.predict_interval(X[200:])
>>> 0.8 < interval_coverage(y[200:], lo, hi) <= 1.0
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold

from nni_hwaware.errors import ParameterError
from nni_hwaware.esm.surrogate import conformal_quantile

#: The nominal coverage of every interval of an ESM predictor.
INTERVAL_LEVEL = 0.9


def calibrate_intervals(model: Any, X: np.ndarray, y: np.ndarray, *, folds: int = 5,
                        level: float = INTERVAL_LEVEL, seed: int = 0) -> dict[str, Any]:
    """Calibrate the interval of ``model``, fitted on ``(X, y)``, by ``folds``-fold cross-validation on ``(X, y)``.

    Each fold's copy of ``model`` (same parameters) is fitted on the other folds and scores the points it did
    not see; ``model``'s pad becomes the conformal quantile of all scores. Nothing but the training set is seen.

    Parameters
    ----------
    model
        A surrogate fitted on all of ``(X, y)``, with ``conformity_scores`` (its pad is set in place).
    X, y
        Its training set.
    folds
        Cross-validation folds, at least 2 (at most the number of points are used; with fewer than 2 points the
        interval stays uncalibrated).
    level
        Nominal coverage.
    seed
        Seed of the fold split.

    Returns
    -------
    dict
        A record of the calibration (method, folds, size, pad) for ``predictor.json``.
    """
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ParameterError(f"interval_folds must be an integer of at least 2, got {folds!r}",
                             parameter="interval_folds")
    X, y = np.asarray(X), np.asarray(y, dtype=float)
    k = min(folds, len(y))
    scores = []
    if k >= 2 and hasattr(model, "conformity_scores"):
        for fit_idx, score_idx in KFold(k, shuffle=True, random_state=seed).split(X):
            fold_model = clone(model).fit(X[fit_idx], y[fit_idx])
            scores.append(fold_model.conformity_scores(X[score_idx], y[score_idx]))
    pad = conformal_quantile(np.concatenate(scores), level) if scores else 0.0
    if scores and getattr(model, "log_target", True):  # the pad is on the log scale
        model.residual_log_q90_ = pad
    return {"method": f"{k}-fold cross-validation conformal on the training set", "folds": k, "level": level,
            "calibration_size": int(len(y)) if scores else 0, "pad": pad}


def interval_coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The share of ``y`` inside ``[low, high]`` (NaN for no points).

    Examples
    --------
    >>> interval_coverage(np.array([1.0, 2.0, 5.0]), np.array([0.5, 2.5, 4.0]), np.array([1.5, 3.0, 6.0]))
    0.6666666666666666
    """
    y = np.asarray(y, dtype=float)
    if not len(y):
        return float("nan")
    return float(np.mean((y >= np.asarray(low)) & (y <= np.asarray(high))))


def held_out_metrics(model: Any, X_test: np.ndarray, y_test: np.ndarray, test_bins: Any, bins: int) -> dict[str, Any]:
    """The held-out figures of a fitted surrogate: :func:`nni_hwaware.metrics.summary` and the share of the
    held-out latencies inside the 90 % intervals (``interval_coverage``)."""
    from nni_hwaware import metrics

    out = metrics.summary(y_test, model.predict(X_test), test_bins, bins)
    if len(y_test) and hasattr(model, "predict_interval"):
        low, high = model.predict_interval(X_test)
        out["interval_coverage"] = interval_coverage(y_test, low, high)
    return out
