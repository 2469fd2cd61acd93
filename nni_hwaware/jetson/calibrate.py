"""Transfer constants of the roofline models, chosen on the published real-world measurements by leave-one-out.

The public dataset identifies the compute rates of the roofline model (ms per GMAC of each conv class) but not
the costs that dominate real networks and that its own networks barely exercise: a GB of memory traffic, one
more kernel, and the fixed cost of an inference. Each dataset network is 2-21 large stride-1 convs, so those
terms are collinear with its MACs and an unconstrained fit trades them freely (it puts 0 on the kernel cost and
4-5 ms on the fixed cost). Real CNNs at 224x224 (MobileNets, EfficientNets, ShuffleNet) have hundreds of small
or memory-bound kernels, and their predictions swing by tens of percent over that unidentified range.

So these constants are chosen on the only public Jetson Nano measurements of real CNNs
(:data:`nni_hwaware.jetson.zoo.REFERENCE`, measured by the dataset's authors with the same pipeline): for
every candidate on a grid of physically plausible values, the remaining coefficients are fitted on the whole
dataset and the candidate is scored by the mean absolute log error on the references. Leave-one-out tells
how well that transfers: each reference network is predicted by the candidate chosen on the other eight, and
that is the real-world error the model card and the benchmark report.

Energy uses the latency model's constants times a power: memory traffic and kernels at ``busy_w`` watts
(mJ = ms x W), the fixed cost at ``fixed_w`` watts (host-side work while the GPU idles).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nni_hwaware.jetson.models import RooflineModel

# Candidate latency constants. 39 ms/GB is the Jetson Nano's LPDDR4 peak of 25.6 GB/s, the fastest memory
# traffic can be; the dataset's own tegrastats EMC readings show 65 % of that peak sustained (60 ms/GB).
LATENCY_GRID: dict[str, Sequence[Any]] = {
    "act_cost_per_gb": (40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 120.0),
    "launch_cost": (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1),
    "fixed_cost": (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, None),
    "weights_at_act_rate": (True, False),
}
# GPU-rail power (W) while memory traffic and kernels run, and while the host works (GPU idle).
ENERGY_GRID: dict[str, Sequence[float]] = {
    "busy_w": (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    "fixed_w": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0),
}


def latency_candidates(grid: dict[str, Sequence[Any]] = LATENCY_GRID) -> list[dict[str, Any]]:
    """Every combination of the latency grid as :class:`RooflineModel` parameters."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def energy_candidates(latency: dict[str, Any], grid: dict[str, Sequence[float]] = ENERGY_GRID) -> list[dict[str, Any]]:
    """Energy-model parameters: the chosen latency constants (ms) times candidate powers (W) give mJ."""
    out, seen = [], set()
    for busy_w, fixed_w in itertools.product(grid["busy_w"], grid["fixed_w"]):
        fixed = latency["fixed_cost"]
        params = {"act_cost_per_gb": latency["act_cost_per_gb"] * busy_w,
                  "launch_cost": latency["launch_cost"] * busy_w,
                  "fixed_cost": None if fixed is None else fixed * fixed_w,
                  "weights_at_act_rate": latency["weights_at_act_rate"]}
        key = tuple(params.values())
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


@dataclass
class Calibration:
    """Chosen constants, in-sample and leave-one-out predictions of the reference networks.

    Parameters
    ----------
    params
        Constants chosen on all references (what the shipped model uses).
    names, measured
        Reference networks and their measured values.
    predicted
        Predictions of the model with ``params``.
    loo_predicted, loo_params
        Each reference predicted by the model whose constants were chosen without it.
    candidates
        Number of candidates scored.
    """

    params: dict[str, Any]
    names: list[str]
    measured: np.ndarray
    predicted: np.ndarray
    loo_predicted: np.ndarray
    loo_params: list[dict[str, Any]]
    candidates: int

    @property
    def loo_log_residuals(self) -> np.ndarray:
        """``log(measured / predicted)`` of the leave-one-out predictions."""
        return np.log(self.measured / self.loo_predicted)

    def mape(self, leave_one_out: bool = True) -> float:
        pred = self.loo_predicted if leave_one_out else self.predicted
        return float(np.mean(np.abs(pred / self.measured - 1)) * 100)

    def as_dict(self) -> dict[str, Any]:
        rows = [{"model": n, "measured": float(m), "predicted": float(p), "loo_predicted": float(lp),
                 "error_pct": round(100 * (p / m - 1), 2), "loo_error_pct": round(100 * (lp / m - 1), 2),
                 "loo_params": lpar}
                for n, m, p, lp, lpar in zip(self.names, self.measured, self.predicted, self.loo_predicted,
                                            self.loo_params)]
        return {"params": self.params, "candidates": self.candidates, "rows": rows,
                "mape_pct": round(self.mape(False), 2), "loo_mape_pct": round(self.mape(True), 2),
                "loo_median_ape_pct": round(float(np.median(np.abs(self.loo_predicted / self.measured - 1))) * 100,
                                            2)}


def calibrate(candidates: list[dict[str, Any]], R: np.ndarray, y: np.ndarray, R_ref: np.ndarray,
              y_ref: np.ndarray, names: list[str],
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Score every candidate on the reference networks and pick the best, also leaving each reference out.

    Parameters
    ----------
    candidates
        :class:`RooflineModel` parameter sets (see :func:`latency_candidates`, :func:`energy_candidates`).
    R, y
        Roofline design matrix and target of the dataset networks (every candidate is fitted on them).
    R_ref, y_ref, names
        The same for the reference networks.

    Returns
    -------
    Calibration

    Examples
    --------
    >>> import numpy as np
    >>> from nni_hwaware.jetson.features import ROOFLINE_COLUMNS
    >>> X = np.abs(np.random.default_rng(0).normal(size=(60, len(ROOFLINE_COLUMNS)))); X[:, -1] = 1
    >>> y = X @ np.linspace(1, 2, X.shape[1])
    >>> cal = calibrate(latency_candidates()[:4], X[:50], y[:50], X[50:], y[50:], [str(i) for i in range(10)])
    >>> len(cal.loo_params)
    10
    """
    if len(y_ref) < 2:
        raise ValueError("calibration needs at least two reference networks")
    predictions = np.empty((len(candidates), len(y_ref)))
    for i, params in enumerate(candidates):
        predictions[i] = RooflineModel(**params).fit(R, y).predict(R_ref)
        if progress and (i + 1) % 250 == 0:
            progress(f"  calibration candidates {i + 1}/{len(candidates)}")
    loss = np.abs(np.log(np.maximum(predictions, 1e-9) / y_ref))
    best = int(np.argmin(loss.mean(axis=1)))
    loo_pred, loo_params = np.empty(len(y_ref)), []
    for j in range(len(y_ref)):
        others = [k for k in range(len(y_ref)) if k != j]
        chosen = int(np.argmin(loss[:, others].mean(axis=1)))
        loo_pred[j] = predictions[chosen, j]
        loo_params.append(candidates[chosen])
    return Calibration(params=candidates[best], names=list(names), measured=np.asarray(y_ref, float),
                       predicted=predictions[best], loo_predicted=loo_pred, loo_params=loo_params,
                       candidates=len(candidates))
