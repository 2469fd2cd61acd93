"""Prior-averaged roofline and the power-based energy model: averaging is exact, sensitivity and power behave."""

from __future__ import annotations

import numpy as np
import pytest

from nni_hwaware.jetson.features import ROOFLINE_COLUMNS
from nni_hwaware.jetson.models import POWER_MONOTONE, TIME_SHARES, EnergyFromPower, RooflineModel, time_shares
from nni_hwaware.jetson.prior import (
    TRANSFER_PRIOR,
    PriorAveragedRoofline,
    prior_candidates,
    prior_sensitivity,
    reference_errors,
    sub_priors,
)

COL = {c: i for i, c in enumerate(ROOFLINE_COLUMNS)}
SMALL_PRIOR = {"act_cost_per_gb": (40.0, 70.0, 100.0), "launch_cost": (0.0, 0.05, 0.1),
               "fixed_cost": (1.0, 2.0, None), "weights_at_act_rate": (True, False)}


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
    coef[COL["act_gb"]] = coef[COL["weight_gb"]] = 70.0
    coef[COL["launches"]], coef[COL["one"]] = 0.05, 2.0
    return X @ coef


def test_prior_average_predicts_the_mean_of_all_candidates():
    rng = np.random.default_rng(0)
    R, R_ref = _rows(rng, 200, memory_heavy=False), _rows(rng, 6, memory_heavy=True)
    y = _truth(R)
    model = PriorAveragedRoofline(SMALL_PRIOR).fit(R, y)
    candidates = prior_candidates(SMALL_PRIOR)
    assert len(model.candidates_) == len(candidates) == 54
    each = np.array([RooflineModel(**c).fit(R, y).predict(R_ref) for c in candidates])
    np.testing.assert_allclose(model.predict(R_ref), each.mean(axis=0), rtol=1e-9)
    # Every candidate fits the dataset-like rows, yet they disagree on the memory- and launch-heavy ones:
    # the spread the average integrates over.
    fit_err = [np.mean(np.abs(RooflineModel(**c).fit(R, y).predict(R) / y - 1)) for c in candidates]
    assert max(fit_err) < 0.02
    assert (each.max(axis=0) / each.min(axis=0)).min() > 1.3
    again = PriorAveragedRoofline.from_dict(model.to_dict())
    np.testing.assert_allclose(again.predict(R_ref), model.predict(R_ref))
    assert model.get_params() == {"prior": SMALL_PRIOR}


def test_sensitivity_narrows_each_range_and_reports_errors():
    names = {"act_cost_per_gb without 40.0", "act_cost_per_gb without 120.0", "fixed_cost without 4.0",
             "weights_at_act_rate = True", "weights_at_act_rate = False"}
    assert names <= set(sub_priors())
    assert all(None in p["fixed_cost"] for p in sub_priors().values())
    rng = np.random.default_rng(1)
    R, R_ref = _rows(rng, 200, memory_heavy=False), _rows(rng, 5, memory_heavy=True)
    model = PriorAveragedRoofline(SMALL_PRIOR).fit(R, _truth(R))
    rows = prior_sensitivity(model, R_ref, _truth(R_ref))
    assert rows[0]["prior"] == "full" and rows[0]["candidates"] == 54
    # The small prior is centred on the true constants (70 ms/GB, 0.05 ms/kernel), so its average is exact on
    # the memory-heavy references; dropping either end of a range moves the average off the truth.
    by_name = {r["prior"]: r["mape_pct"] for r in rows}
    assert by_name["full"] < 0.5
    assert min(by_name["act_cost_per_gb without 40.0"], by_name["act_cost_per_gb without 100.0"]) > 5
    assert min(by_name["launch_cost without 0.0"], by_name["launch_cost without 0.1"]) > 1
    report = reference_errors(["a", "b"], np.array([10.0, 20.0]), np.array([11.0, 18.0]))
    assert report["mape_pct"] == 10.0 and [r["error_pct"] for r in report["rows"]] == [10.0, -10.0]
    assert len(prior_candidates()) == np.prod([len(v) for v in TRANSFER_PRIOR.values()])


def test_energy_is_latency_times_a_monotone_power():
    rng = np.random.default_rng(2)
    R = np.vstack([_rows(rng, 400, memory_heavy=False), _rows(rng, 400, memory_heavy=True)])
    latency = _truth(R)
    lat_model = PriorAveragedRoofline(SMALL_PRIOR).fit(R, latency)
    total, shares = time_shares(lat_model, R)
    assert shares.shape == (len(R), len(TIME_SHARES)) and len(POWER_MONOTONE) == len(TIME_SHARES)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(total, lat_model.predict(R))
    # GPU power: 4.5 W while computing, 2 W while launching/idle; energy in mJ = ms x W.
    power = 2.0 + 2.5 * shares[:, 0] - 0.5 * shares[:, 5]
    energy = latency * power
    model = EnergyFromPower(power_iters=200).fit(R, energy, latency_model=lat_model, latency_ms=latency)
    assert np.mean(np.abs(model.predict(R) / energy - 1)) < 0.05
    t, p = model.predict_parts(R)
    np.testing.assert_allclose(t * p, model.predict(R))
    # More launch share never raises the predicted power (the monotone constraint).
    base = np.tile(shares[:1], (11, 1))
    base[:, 5] = np.linspace(0, 0.5, 11)
    assert np.all(np.diff(model.power_.predict(base)) <= 1e-9)
    assert p.min() >= power.min() - 0.1 and p.max() <= power.max() + 0.1


def test_old_format_roofline_is_refused():
    with pytest.raises(ValueError, match="retrain"):
        RooflineModel.from_dict({"columns": ROOFLINE_COLUMNS, "coef": [0.0] * len(ROOFLINE_COLUMNS),
                                 "seen_classes": []})
