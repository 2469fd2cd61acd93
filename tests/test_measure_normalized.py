"""Interleaved timing and normalization by reference models: the order of runs, the arithmetic of a window, and a
real campaign on this machine whose windows share one device-wide baseline."""

from __future__ import annotations

import pytest

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.campaign import Campaign, reference_architectures
from nni_hwaware.measure.normalize import WindowNormalization
from nni_hwaware.measure.protocol import Protocol, run_interleaved
from nni_hwaware.measure.runner import make_measurer
from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.spaces import load_space, sample_architectures


def test_interleaved_rounds_time_every_model_once_and_alternate_the_order():
    calls: list[str] = []

    def timer(name: str, ms: float):
        def run() -> float:
            calls.append(name)
            return ms
        return run

    results = run_interleaved([timer("a", 1.0), timer("b", 2.0), timer("c", 3.0)], Protocol(runs=4, warmup=1))
    assert calls[:3] == ["a", "b", "c"]  # warm-up, each model on its own
    assert calls[3:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    assert [r.mean_ms for r in results] == [1.0, 2.0, 3.0] and all(r.runs == 4 for r in results)


def test_a_uniform_slowdown_is_taken_out_and_passes_the_check():
    baseline = {"a": 1.0, "b": 2.0, "c": 4.0}
    slow = WindowNormalization.from_references({k: 1.25 * v for k, v in baseline.items()}, baseline)
    assert slow.factor == pytest.approx(1.25) and slow.drift == pytest.approx(0.25)
    assert slow.residual == pytest.approx(0.0, abs=1e-12)
    assert slow.normalize(10.0) == pytest.approx(8.0)


def test_references_that_disagree_fail_the_check_whatever_the_factor():
    baseline = {"a": 1.0, "b": 2.0, "c": 4.0}
    # one reference hit by a burst: the median factor ignores it, but the residual shows the window was uneven
    burst = WindowNormalization.from_references({"a": 1.0, "b": 2.0, "c": 4.8}, baseline)
    assert burst.factor == pytest.approx(1.0) and burst.residual == pytest.approx(1 - 1 / 1.1)
    uneven = WindowNormalization.from_references({"a": 1.0, "b": 2.2, "c": 4.8}, baseline)
    assert uneven.factor == pytest.approx(1.1) and uneven.residual > 0.03
    with pytest.raises(HwAwareError, match="no baseline for reference model"):
        WindowNormalization.from_references({"d": 1.0}, baseline)


def test_window_setting_is_checked_in_one_line():
    space = load_space("convnet")
    measurer = make_measurer("onnxruntime", energy="none")
    for bad in (-1, 101, 2.5, True):
        with pytest.raises(ParameterError, match="window must be an integer from 0"):
            Campaign(space, [], measurer, None, input_size=16, window=bad)  # type: ignore[arg-type]


@pytest.mark.slow  # two small campaigns of real onnxruntime measurements
def test_campaigns_on_one_device_share_the_reference_baseline(tmp_path):
    space = load_space("mobilenetv3")
    measurer = make_measurer("onnxruntime", energy="none", protocol=Protocol(runs=10, warmup=2))
    store = MeasurementStore(tmp_path / "m.db")
    first = Campaign(space, sample_architectures(space, 3, seed=1), measurer, store, input_size=8, window=2,
                     drift_threshold=10.0, definition={"seed": 1}).run()
    second = Campaign(space, sample_architectures(space, 2, seed=2), measurer, store, input_size=8, window=2,
                      drift_threshold=10.0, definition={"seed": 2}).run()
    assert first.campaign != second.campaign
    base = {c["arch_hash"]: c["latency_ms"] for c in store.qc_checks(first.campaign) if c["check_index"] == 0}
    assert set(base) == {space.arch_hash(a) for a in reference_architectures(space)}
    # the second campaign measured no baseline of its own: its first check is a window judged against the first's
    later = store.qc_checks(second.campaign)
    assert {c["models_done"] for c in later} == {2} and all(c["baseline_ms"] == base[c["arch_hash"]] for c in later)
    for _, m in store.measurements():
        assert m.normalization["method"] == "reference-window" and m.qc_status == "ok"
        checks = store.qc_checks(m.campaign)
        factor = next(c["factor"] for c in checks if c["check_index"] == m.normalization["check"])
        assert m.latency_ms == pytest.approx(m.timed_ms / factor)
    # the same models again at another time: every one measured anew, the earlier figures kept in the history
    again = Campaign(space, sample_architectures(space, 3, seed=1), measurer, store, input_size=8, window=2,
                     drift_threshold=10.0, definition={"seed": 1, "round": 2}, remeasure=True).run()
    assert again.measured == 3 and again.skipped == 0
    reasons = [r[0] for r in store._conn.execute("SELECT reason FROM measurement_history")]
    assert reasons == ["remeasured"] * 3
    store.close()


def test_adaptive_interleaved_rounds_stop_when_every_model_is_precise_enough():
    steady = iter([1.0] * 500)
    noisy = iter([1.0, 3.0] * 250)  # never within 1 %: keeps the whole window going
    protocol = Protocol(runs=100, warmup=0, adaptive=True, min_runs=20, ci_rel_width=0.01)
    assert [r.runs for r in run_interleaved([lambda: next(steady)], protocol)] == [20]
    steady = iter([1.0] * 500)
    assert [r.runs for r in run_interleaved([lambda: next(steady), lambda: next(noisy)], protocol)] == [100, 100]
