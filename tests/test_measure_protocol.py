"""The timing protocol: trimmed mean of the middle 60 %, its confidence interval, and the adaptive stop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.protocol import Protocol, run_protocol, trimmed_stats


def test_trimmed_mean_drops_fastest_and_slowest_20_percent():
    samples = list(range(1, 11))  # 1..10: drop 1, 2 and 9, 10
    stats = trimmed_stats([float(s) for s in samples], trim=0.2)
    assert stats.kept == 6
    assert stats.mean_ms == pytest.approx(np.mean([3, 4, 5, 6, 7, 8]))
    assert stats.std_ms == pytest.approx(np.std([3, 4, 5, 6, 7, 8], ddof=1))
    assert stats.runs == 10 and stats.min_ms == 1 and stats.max_ms == 10


def test_outlier_runs_do_not_move_the_trimmed_mean():
    rng = np.random.default_rng(0)
    base = rng.normal(5.0, 0.05, 150)
    spiky = base.copy()
    spiky[::10] = 50.0  # 10 % of runs hit by interrupts
    assert trimmed_stats(spiky).mean_ms == pytest.approx(trimmed_stats(base).mean_ms, rel=0.01)
    assert np.mean(spiky) > 1.5 * trimmed_stats(spiky).mean_ms


def test_confidence_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        x = rng.normal(10.0, 1.0, 60)
        s = trimmed_stats(x, trim=0.2, confidence=0.95)
        hits += abs(s.mean_ms - 10.0) <= s.ci_half_width_ms
    assert 0.90 <= hits / 400 <= 0.99


def test_fixed_protocol_times_exactly_runs_after_warmup():
    calls = itertools.count()
    result = run_protocol(lambda: float(next(calls) % 3 + 1), Protocol(runs=30, warmup=7))
    assert result.runs == 30
    assert next(calls) == 37


def test_adaptive_mode_stops_early_on_quiet_timings_and_not_on_noisy_ones():
    rng = np.random.default_rng(2)
    quiet = run_protocol(lambda: float(rng.normal(2.0, 0.01)),
                         Protocol(runs=150, warmup=0, adaptive=True, ci_rel_width=0.01, min_runs=20))
    assert quiet.runs == 20
    noisy = run_protocol(lambda: float(rng.lognormal(0.0, 0.5)),
                         Protocol(runs=150, warmup=0, adaptive=True, ci_rel_width=0.01, min_runs=20))
    assert noisy.runs == 150
    assert quiet.ci_half_width_ms <= 0.01 * quiet.mean_ms


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"trim": 0.5}, {"ci_rel_width": 0.0}, {"min_runs": 1}])
def test_bad_protocol_values_are_user_errors(kwargs):
    with pytest.raises(HwAwareError):
        Protocol(**kwargs)
