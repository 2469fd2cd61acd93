"""An ESM predictor built from Python (``run_esm``, then ``ESMResult.save``) is a whole folder: it loads through
the predictor registry, has its card, plots and build data, and refits (the fallback's path, ``save_refit``)
into a folder that refits again.

The latencies are real: the public Jetson Nano dataset's ``convnet`` models at one input size, drawn by the ESM
loop as a measured pool.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm import ESMConfig, EsmHardwarePredictor, MeasuredPool, read_build_data, run_esm
from nni_hwaware.hardware import load_predictor
from nni_hwaware.spaces import load_space

INPUT_SIZE = 50
FILES = ("predictor.json", "surrogate.skops", "data.jsonl", "MODEL_CARD.md", "scatter.png", "bin_accuracy.png",
         "convergence.png")


@pytest.fixture(scope="module")
def built(shared_dir, tmp_path_factory):
    from nni_hwaware.jetson.dataset import load_dataset

    models, _ = load_dataset(shared_dir / "data" / "jetson_nano", stages=["dws", "misc_conv_models"])
    at_size = [m for m in models if m.input_size == INPUT_SIZE]
    space = load_space("convnet")
    pool = MeasuredPool(space, [m.arch for m in at_size], [m.latency_ms for m in at_size])
    config = ESMConfig(initial=60, step=20, max_samples=80, test_size=40, bins=3, acc_th=0.999, surrogate="rf")
    result = run_esm(space, config, pool.measure, input_size=INPUT_SIZE, source=pool)
    folder = result.save(tmp_path_factory.mktemp("esm_py") / "predictor", extra={"source": "jetson nano dataset"})
    return space, pool, result, folder


def test_a_saved_build_holds_everything(built):
    space, _pool, result, folder = built
    for name in FILES:
        assert (folder / name).is_file(), name
    info = json.loads((folder / "predictor.json").read_text())
    assert info["kind"] == "esm" and info["source"] == "jetson nano dataset"
    assert [h["train_size"] for h in info["history"]] == [60, 80]  # one extension, then the budget
    assert 0 <= info["metrics"]["interval_coverage"] <= 1 and info["intervals"]["calibration_size"] == 80
    data = read_build_data(folder, space)
    assert [space.arch_hash(a) for a in data["train"][0]] == [space.arch_hash(a) for a in result.train_archs]
    np.testing.assert_allclose(data["test"][1], result.test_latency)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "held-out coverage" in card and "cross-validation conformal on the training set" in card


def test_it_loads_through_the_registry_and_estimates_as_built(built):
    _space, _pool, result, folder = built
    predictor = load_predictor(folder)
    assert isinstance(predictor, EsmHardwarePredictor) and predictor.input_size == INPUT_SIZE
    estimates = predictor.estimate_many(result.test_archs[:5])
    expected = result.predictor.predict(result.test_archs[:5])
    np.testing.assert_allclose([e.latency_ms for e in estimates], expected["latency_ms"], rtol=1e-6)


def test_it_refits_into_a_folder_that_refits_again(built, tmp_path):
    space, pool, result, folder = built
    used = {space.arch_hash(a) for a in [*result.train_archs, *result.test_archs]}
    fresh = [a for a in pool.architectures if space.arch_hash(a) not in used][:30]
    first, second = fresh[:20], fresh[20:]
    predictor = load_predictor(folder)
    record = predictor.save_refit(tmp_path / "r1", first, pool.measure(first), {"store": "test"})
    assert record["added"] == 20 and record["train_size"] == 100 and 0 <= record["interval_coverage"] <= 1
    assert (folder / "data.jsonl").read_text().count("\n") == 120  # the base is left as it was
    again = load_predictor(tmp_path / "r1")
    assert len(read_build_data(tmp_path / "r1", space)["train"][0]) == 100
    assert "Refit of" in (tmp_path / "r1" / "MODEL_CARD.md").read_text()
    assert json.loads((tmp_path / "r1" / "refit.json").read_text())["store"] == "test"
    record = again.save_refit(tmp_path / "r2", second, pool.measure(second), {"store": "test"})
    assert record["train_size"] == 110 and len(json.loads((tmp_path / "r2" / "predictor.json").read_text())["refits"]) == 2


def test_save_refuses_a_folder_of_other_files(built, tmp_path):
    _space, _pool, result, _folder = built
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HwAwareError, match="holds other files"):
        result.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
