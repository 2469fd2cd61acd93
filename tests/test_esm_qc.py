"""Quality control across a whole ESM build: one campaign (one drift baseline, one check history) for every
iteration and every resumption, and measurements from a drifted window never train or judge a predictor.

The campaign test measures real models (onnxruntime, tiny inputs) into a real SQLite store; the loop test draws
real Jetson Nano latencies from the public dataset as a measured pool.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nni_hwaware.esm import ESMConfig, MeasuredPool, run_esm, store_backed_measure
from nni_hwaware.measure.protocol import Protocol
from nni_hwaware.measure.runner import make_measurer
from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.spaces import load_space, sample_architectures

INPUT_SIZE = 16
#: These tests are about which campaign a check belongs to, not about drift: no re-measurement rounds.
NO_REMEASURE = 10.0


@pytest.fixture
def measured(tmp_path):
    space = load_space("mobilenetv3")
    measurer = make_measurer("onnxruntime", threads=1, protocol=Protocol(runs=5, warmup=1), energy="none")
    store = MeasurementStore(tmp_path / "m.db")
    yield space, measurer, store
    measurer.close()
    store.close()


def _campaigns(store):
    return {m.campaign for _, m in store.measurements()}


@pytest.mark.slow  # about 17 real measurements (models and reference checks)
@pytest.mark.parametrize("window", [0, 2])
def test_every_iteration_and_resumption_of_a_build_is_one_campaign(measured, window):
    space, measurer, store = measured
    archs = sample_architectures(space, 5, seed=3)
    build = {"config": "a"}
    measure = store_backed_measure(space, measurer, store, input_size=INPUT_SIZE, qc_every=2, build=build,
                                   drift_threshold=NO_REMEASURE, show_progress=False, window=window)
    measure(archs[:2])  # the first iteration: its first check is the baseline
    measure(archs[2:4])  # the next iteration: same campaign, checks go on from there
    (campaign,) = _campaigns(store)
    checks = store.qc_checks(campaign)
    first = {c["check_index"] for c in checks}
    assert first == set(range(len(first))) and len(first) >= 3
    baseline = store.qc_baseline(campaign)
    # a rerun of the same build (a new process, a new measure function) resumes the campaign
    again = store_backed_measure(space, measurer, store, input_size=INPUT_SIZE, qc_every=2, build=build,
                                 drift_threshold=NO_REMEASURE, show_progress=False, window=window)
    again(archs[4:])
    assert _campaigns(store) == {campaign}
    assert store.qc_baseline(campaign) == baseline and len(store.qc_checks(campaign)) > len(checks)
    # another build is another campaign
    other = store_backed_measure(space, measurer, store, input_size=INPUT_SIZE, qc_every=2, build={"config": "b"},
                                 drift_threshold=NO_REMEASURE, show_progress=False, window=window)
    other(sample_architectures(space, 1, seed=99))
    assert len(_campaigns(store)) == 2


def test_a_measurement_left_flagged_drift_reads_back_as_nan(measured):
    space, measurer, store = measured
    archs = sample_architectures(space, 3, seed=5)
    measure = store_backed_measure(space, measurer, store, input_size=INPUT_SIZE, qc_every=0, show_progress=False)
    first = measure(archs)
    assert np.isfinite(first).all()
    flagged = [i for i, m in store.measurements() if m.arch_hash == space.arch_hash(archs[1])]
    store.set_qc_status(flagged, "drift")
    again = measure(archs)  # nothing is measured again: read back from the store
    assert math.isnan(again[1]) and again[0] == first[0] and again[2] == first[2]


@pytest.mark.slow  # real measurements with reference checks
def test_a_resumed_build_checks_its_drifted_models_again(measured):
    space, measurer, store = measured
    archs = sample_architectures(space, 2, seed=11)
    measure = store_backed_measure(space, measurer, store, input_size=INPUT_SIZE, qc_every=2, build={"b": 1},
                                   drift_threshold=NO_REMEASURE, show_progress=False)
    first = measure(archs)
    flagged = [i for i, m in store.measurements() if m.arch_hash == space.arch_hash(archs[0])]
    store.set_qc_status(flagged, "drift")  # as a drifted window would have left it
    assert math.isnan(measure(archs)[0]) is False  # checked again: within the (wide) threshold, it is kept
    assert [m.qc_status for i, m in store.measurements() if i in flagged] == ["ok"]
    assert measure(archs)[1] == first[1]


@pytest.fixture(scope="module")
def jetson_pool(shared_dir):
    from nni_hwaware.jetson.dataset import load_dataset

    models, _ = load_dataset(shared_dir / "data" / "jetson_nano", stages=["dws", "misc_conv_models"])
    at_size = [m for m in models if m.input_size == 50]
    return load_space("convnet"), MeasuredPool(load_space("convnet"), [m.arch for m in at_size],
                                               [m.latency_ms for m in at_size])


def test_drifted_measurements_train_and_judge_nothing(jetson_pool):
    space, pool = jetson_pool
    drifted: set[str] = set()

    def measure(archs):
        y = np.asarray(pool.measure(archs), dtype=float)
        for i, arch in enumerate(archs):
            if int(space.arch_hash(arch), 16) % 4 == 0:  # about a quarter, decided by the architecture alone
                drifted.add(space.arch_hash(arch))
                y[i] = math.nan
        return y

    config = ESMConfig(initial=60, step=20, max_samples=80, test_size=40, bins=3, acc_th=0.999, surrogate="rf")
    result = run_esm(space, config, measure, input_size=50, source=pool)
    train = {space.arch_hash(a) for a in result.train_archs}
    test = {space.arch_hash(a) for a in result.test_archs}
    assert drifted and not (train | test) & drifted
    assert len(result.train_latency) == len(result.train_archs) < 80  # the budget counted the drifted ones
    assert len(result.test_latency) == len(result.test_archs) < 40
    assert np.isfinite(result.train_latency).all() and np.isfinite(result.test_latency).all()
    assert result.predictor.info["train_size"] == len(result.train_archs)
