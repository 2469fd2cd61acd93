"""Transfer calibration: the grid search recovers constants the data cannot identify, leave-one-out is honest."""

from __future__ import annotations

import numpy as np
import pytest

from nni_hwaware.jetson.calibrate import calibrate, energy_candidates, latency_candidates
from nni_hwaware.jetson.features import ROOFLINE_COLUMNS
from nni_hwaware.jetson.models import RooflineModel

COL = {c: i for i, c in enumerate(ROOFLINE_COLUMNS)}
TRUE = {"act_cost_per_gb": 70.0, "launch_cost": 0.04, "fixed_cost": 1.5, "weights_at_act_rate": True}


def _rows(rng: np.random.Generator, n: int, memory_heavy: bool) -> np.ndarray:
    X = np.zeros((n, len(ROOFLINE_COLUMNS)))
    X[:, COL["conv_k3"]] = rng.uniform(1, 10, n)       # GMACs
    X[:, COL["conv_k1"]] = rng.uniform(0, 3, n)
    # Like the dataset: little memory traffic and few kernels, proportional to the MACs (unidentifiable) ...
    scale = rng.uniform(0.5, 2.0, n) if memory_heavy else 0.01
    X[:, COL["act_gb"]] = scale * X[:, COL["conv_k1"]] * (5 if memory_heavy else 1)
    X[:, COL["weight_gb"]] = 0.002 * X[:, COL["conv_k3"]]
    X[:, COL["launches"]] = rng.integers(50, 400, n) if memory_heavy else 10
    X[:, COL["one"]] = 1.0
    return X


def _truth(X: np.ndarray) -> np.ndarray:
    coef = np.zeros(len(ROOFLINE_COLUMNS))
    coef[COL["conv_k3"]], coef[COL["conv_k1"]] = 6.0, 11.0
    coef[COL["act_gb"]] = coef[COL["weight_gb"]] = TRUE["act_cost_per_gb"]
    coef[COL["launches"]], coef[COL["one"]] = TRUE["launch_cost"], TRUE["fixed_cost"]
    return X @ coef


def test_calibration_recovers_transfer_constants_and_reports_leave_one_out():
    rng = np.random.default_rng(0)
    R, R_ref = _rows(rng, 300, memory_heavy=False), _rows(rng, 6, memory_heavy=True)
    y, y_ref = _truth(R), _truth(R_ref)
    cal = calibrate(latency_candidates(), R, y, R_ref, y_ref, [f"net{i}" for i in range(6)])
    assert cal.params == TRUE
    assert cal.mape(leave_one_out=False) < 0.5 and cal.mape(leave_one_out=True) < 0.5
    report = cal.as_dict()
    assert len(report["rows"]) == 6 and report["candidates"] == len(latency_candidates())
    # A wrong constant shows up on the references, not on the dataset-like rows.
    wrong = RooflineModel(**{**TRUE, "launch_cost": 0.0}).fit(R, y)
    assert np.mean(np.abs(wrong.predict(R) / y - 1)) < 0.01
    assert np.mean(np.abs(wrong.predict(R_ref) / y_ref - 1)) > 0.03


def test_energy_candidates_scale_latency_constants_by_power():
    cands = energy_candidates(TRUE)
    assert all(c["act_cost_per_gb"] / TRUE["act_cost_per_gb"] == pytest.approx(c["launch_cost"] / TRUE["launch_cost"])
               for c in cands)
    no_fixed = energy_candidates({**TRUE, "fixed_cost": None})
    assert all(c["fixed_cost"] is None for c in no_fixed) and len(no_fixed) < len(cands)


def test_calibration_needs_two_references():
    X = np.ones((3, len(ROOFLINE_COLUMNS)))
    with pytest.raises(ValueError, match="two reference"):
        calibrate(latency_candidates()[:2], X, np.ones(3), X[:1], np.ones(1), ["a"])
