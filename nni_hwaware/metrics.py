"""Accuracy metrics of latency predictors, defined once and used by the builder, ``compare`` and benchmarks.

All metrics are on the original scale (milliseconds), whatever transform a surrogate uses internally.

``accuracy``
    the ESM paper's: mean over models of ``1 - |pred - true| / true``.
``mape``
    mean absolute percentage error, in percent.
``within_10``
    share of models predicted within +-10 % of the truth.
``spearman``
    Spearman rank correlation.
``bin_accuracy``
    accuracy per bin of total block count, bins splitting the space's total depth range into equal ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr


def _arrays(y_true: Sequence[float], y_pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    return t, p


def accuracy(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Mean of ``1 - |pred - true| / true`` (the ESM paper's average accuracy)."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(1.0 - np.abs(p - t) / t)) if t.size else float("nan")


def mape(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t) * 100.0) if t.size else float("nan")


def within(y_true: Sequence[float], y_pred: Sequence[float], tolerance: float = 0.10) -> float:
    """Share of predictions within ``+-tolerance`` (relative) of the truth."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t <= tolerance)) if t.size else float("nan")


def spearman(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Spearman rank correlation (nan for fewer than 3 models)."""
    t, p = _arrays(y_true, y_pred)
    if t.size < 3:
        return float("nan")
    return float(spearmanr(t, p).statistic)


def bin_accuracy(
    y_true: Sequence[float], y_pred: Sequence[float], bins: Sequence[int], num_bins: int
) -> list[float | None]:
    """Accuracy per bin index ``0..num_bins-1``; ``None`` for a bin without models."""
    t, p = _arrays(y_true, y_pred)
    b = np.asarray(bins, dtype=int)
    out: list[float | None] = []
    for i in range(num_bins):
        mask = b == i
        out.append(accuracy(t[mask], p[mask]) if mask.any() else None)
    return out


def summary(
    y_true: Sequence[float],
    y_pred: Sequence[float],
    bins: Sequence[int] | None = None,
    num_bins: int | None = None,
) -> dict[str, Any]:
    """Every metric at once, as a JSON-able dict."""
    out: dict[str, Any] = {
        "n": int(np.asarray(y_true).size),
        "accuracy": accuracy(y_true, y_pred),
        "mape": mape(y_true, y_pred),
        "within_10": within(y_true, y_pred, 0.10),
        "spearman": spearman(y_true, y_pred),
    }
    if bins is not None and num_bins:
        out["bin_accuracy"] = bin_accuracy(y_true, y_pred, bins, num_bins)
    return out
