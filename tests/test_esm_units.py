"""Encodings, metrics, surrogates and Algorithm 1, each checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from nni_hwaware import metrics
from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm import allocate_extension
from nni_hwaware.esm.encode import ENCODINGS, Encoder, encoding_lengths
from nni_hwaware.esm.surrogate import load_surrogate, make_surrogate, save_surrogate
from nni_hwaware.spaces import load_space, sample_architectures


def test_encoding_lengths_follow_the_space():
    lengths = encoding_lengths(load_space("resnet"))
    # 4 units; block features kernel (3 values) x expansion (3 values); max depth 7
    assert lengths == {"onehot": 4 * 7 * 6, "feature": 4 * 7 * 2, "statistical": 4 * (1 + 2 * 2), "fc": 4 * 6,
                       "fcc": 4 * 9}
    dense = encoding_lengths(load_space("densenet"))
    assert dense["fcc"] == 5 * 5 and dense["onehot"] == 5 * 20 * 5
    conv = encoding_lengths(load_space("convnet"))
    assert conv["fcc"] == (2 + 31) + 7 * 2  # global one-hot + kernel x padding combinations


def test_fcc_and_fc_count_what_the_paper_says():
    space = load_space("resnet")
    block = {"kernel_size": 5, "expand_ratio": 0.6667}
    arch = {"units": [
        {"depth": 2, "blocks": [block, {"kernel_size": 3, "expand_ratio": 0.5}]},
        {"depth": 1, "blocks": [block]},
        {"depth": 1, "blocks": [block]},
        {"depth": 3, "blocks": [block, block, block]},
    ]}
    fcc = Encoder(space, "fcc").encode([arch])[0].reshape(4, 3, 3)  # unit x kernel index x expansion index
    assert fcc[0, 1, 1] == 1 and fcc[0, 0, 0] == 1 and fcc[0].sum() == 2
    assert fcc[3, 1, 1] == 3 and fcc.sum() == 7
    fc = Encoder(space, "fc").encode([arch])[0].reshape(4, 6)
    assert list(fc[3]) == [0, 3, 0, 0, 3, 0]
    stat = Encoder(space, "statistical").encode([arch])[0].reshape(4, 5)
    assert stat[0, 0] == 2 and stat[0, 1] == pytest.approx(4.0) and stat[0, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["resnet", "densenet", "convnet"])
def test_batched_encoding_equals_one_by_one(name):
    space = load_space(name)
    archs = sample_architectures(space, 50, seed=3)
    for kind in ENCODINGS:
        enc = Encoder(space, kind)
        batch = enc.encode(archs)
        assert batch.shape == (50, enc.length)
        assert np.array_equal(batch, np.stack([enc.encode_one(a) for a in archs]))
        assert len(enc.feature_names()) == enc.length


def test_metrics_definitions():
    true = np.array([10.0, 20.0, 40.0, 80.0])
    pred = np.array([11.0, 18.0, 40.0, 100.0])
    assert metrics.accuracy(true, pred) == pytest.approx(1 - np.mean([0.1, 0.1, 0.0, 0.25]))
    assert metrics.mape(true, pred) == pytest.approx(11.25)
    assert metrics.within(true, pred, 0.10) == pytest.approx(0.75)
    assert metrics.spearman(true, pred) == pytest.approx(1.0)
    assert metrics.bin_accuracy(true, pred, [0, 0, 1, 1], 3) == [pytest.approx(0.9), pytest.approx(0.875), None]


def test_algorithm_1_allocation():
    # 2 bins below, 3 above, w1=0.8, w2=0.2, N_step=100 -> N_norm = 2.2
    counts = allocate_extension([0.9, 0.99, None, 0.97, 0.98], 0.95, 100, 0.8, 0.2)
    assert counts == [37, 10, 37, 10, 10]


@pytest.mark.parametrize("kind", ["mlp", "gb", "rf", "linear"])
def test_surrogates_fit_predict_intervals_and_round_trip(kind, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, (300, 8)).astype(float)
    w = rng.random(8)
    y = 1.0 + X @ w
    model = make_surrogate(kind, **({"epochs": 100} if kind == "mlp" else {}))
    assert model.fit(X[:200], y[:200]) is model
    pred = model.predict(X[200:])
    assert metrics.accuracy(y[200:], pred) > 0.9
    lo, hi = model.predict_interval(X[200:])
    assert np.all(lo <= pred + 1e-9) and np.all(pred <= hi + 1e-9)
    meta = save_surrogate(model, tmp_path)
    again = load_surrogate(tmp_path, meta, X.shape[1])
    np.testing.assert_allclose(again.predict(X[200:]), pred, rtol=1e-6)
    assert model.get_params() == again.get_params()


def test_corrupt_surrogate_file_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((50, 3))
    model = make_surrogate("gb").fit(X, 1 + X.sum(axis=1))
    meta = save_surrogate(model, tmp_path)
    path = tmp_path / meta["file"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HwAwareError, match="corrupt or truncated"):
        load_surrogate(tmp_path, meta, X.shape[1])
