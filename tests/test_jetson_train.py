"""Training on a small subset writes a loadable predictor through the real CLI."""

from __future__ import annotations

import json

import pytest

from nni_hwaware.jetson.predictor import JetsonNanoPredictor
from nni_hwaware.jetson.zoo import REFERENCE, ZOO, build, param_count


@pytest.mark.slow
def test_train_small_subset(tmp_path, shared_dir, cli):
    out = tmp_path / "pred"
    proc = cli("jetson-nano", "train", "--data", str(shared_dir / "data" / "jetson_nano"), "--out", str(out),
               "--limit-per-stage", "12", "--gbm-iters", "20", "--no-eval")
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["report"]["macs_match_rate"] == 1.0
    predictor = JetsonNanoPredictor.load(out)
    assert predictor.meta["kind"] == "jetson_nano"
    # The real-world networks are predicted as a test, with the prior's sensitivity beside it.
    check = card["method"]["real_world_check"]
    assert sorted(r["model"] for r in check["energy_mj"]["rows"]) == sorted(REFERENCE)
    assert check["latency_prior_sensitivity"][0]["prior"] == "full" and len(check["latency_prior_sensitivity"]) > 5
    assert "Real-world test" in (out / "README.md").read_text()


def test_train_bad_data_folder(tmp_path, cli):
    proc = cli("jetson-nano", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    last = proc.stderr.strip().splitlines()[-1]  # progress lines come first
    assert proc.returncode == 2 and last.startswith("error: ") and "not found" in last
    assert "Traceback" not in proc.stderr


def test_zoo_parameter_counts_match_reference():
    import torch

    for name in ("MobileNetV2", "ShuffleNetV2", "ResNet50"):
        assert name in ZOO and param_count(build(name)) == REFERENCE[name][3]
    # every published network, the ones built from the search spaces' blocks (VGG, ResNet50, MobileNetV2)
    # included; on the meta device, which allocates nothing
    with torch.device("meta"):
        counts = {name: param_count(ZOO[name]()) for name in REFERENCE}
    assert counts == {name: row[3] for name, row in REFERENCE.items()}


def test_family_splits_keep_families_whole_and_depths_apart(shared_dir):
    import numpy as np

    from nni_hwaware.jetson.dataset import load_dataset
    from nni_hwaware.jetson.train import FAMILY_FOLDS, splits

    models, _ = load_dataset(shared_dir / "data" / "jetson_nano", limit_per_stage=60)
    assert models[0].architecture_family == models[0].name.replace(f"_L{models[0].layers}", "").replace(
        f"_W{models[0].input_size}", "")
    family = np.array([m.architecture_family for m in models])
    depth = np.array([m.layers for m in models])
    folds = splits(models)
    tested = []
    for _, train, test in folds["architecture_family_5fold"]:
        assert not set(family[train]) & set(family[test])
        tested.extend(test)
    assert len(folds["architecture_family_5fold"]) == FAMILY_FOLDS and sorted(tested) == list(range(len(models)))
    for _, train, test in folds["architecture_family_x_depth"]:
        assert not set(family[train]) & set(family[test])
        assert depth[train].max() <= 7 < 8 <= depth[test].min()
