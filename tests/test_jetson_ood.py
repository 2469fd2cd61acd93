"""The Jetson Nano predictor's out-of-distribution flag tells the dataset's kind of network from others.

Defect this guards: a feature that never varies in the dataset (the share of 7x7 depthwise convs) was
divided by 1e-6, so every convnet trial of the main job had a distance of about 10^5 and was "in-dist: no".
Both sides are tested: networks like the dataset's (its own architectures at input sizes it never measured)
are in distribution, the nine published real-world CNNs are not.
"""

from __future__ import annotations

import numpy as np
import pytest

from nni_hwaware.jetson.graph import convnet_onnx
from nni_hwaware.jetson.predictor import JetsonNanoPredictor
from nni_hwaware.spaces import load_space, sample_architectures


@pytest.fixture(scope="module")
def predictor() -> JetsonNanoPredictor:
    return JetsonNanoPredictor.load()


def _score(predictor: JetsonNanoPredictor, arch: dict, size: int) -> dict:
    return predictor.predict_onnx(convnet_onnx(arch, size, 3, 10), (1, 3, size, size))


def test_dataset_architectures_at_unmeasured_sizes_are_in_distribution(predictor, shared_dir):
    from nni_hwaware.jetson.dataset import load_dataset

    models, _ = load_dataset(shared_dir / "data" / "jetson_nano", limit_per_stage=6)
    rng = np.random.default_rng(0)
    picked = [models[i] for i in rng.choice(len(models), size=min(40, len(models)), replace=False)]
    # the dataset measured W in steps of 5 (10..100): W + 2 is a network it never saw, of its own kind
    results = [_score(predictor, m.arch, m.input_size + 2) for m in picked]
    share = np.mean([r["in_distribution"] for r in results])
    assert share >= 0.8, [round(r["ood_score"], 2) for r in results]


@pytest.mark.slow
def test_the_published_real_world_cnns_are_out_of_distribution(predictor):
    from nni_hwaware.jetson.zoo import reference_graphs

    names, graphs, _, _ = reference_graphs()
    flags = {name: predictor.predict_layers(graph)["in_distribution"] for name, graph in zip(names, graphs)}
    assert len(flags) == 9 and not any(flags.values()), flags


def test_search_space_scores_are_distances_not_overflow(predictor):
    """Every random convnet architecture gets a finite, moderate score; some are in distribution."""
    space = load_space("convnet")
    results = [_score(predictor, arch, 50) for arch in sample_architectures(space, 30, seed=3)]
    scores = np.array([r["ood_score"] for r in results])
    assert np.all(np.isfinite(scores)) and scores.max() < 100, scores.max()
    assert any(r["in_distribution"] for r in results)
    example = {"global": {"layer_type": "dws", "filters": 224},
               "units": [{"depth": 1, "blocks": [{"kernel_size": 7, "padding": 1}]}]}
    assert _score(predictor, space.validate(example), 50)["ood_score"] < 100


def test_many_graphs_in_one_call_give_each_graph_s_own_prediction(predictor):
    """``predict_layers_many`` (one call of each model for all graphs: what ``estimate_many`` uses) says of each
    graph, in and out of distribution, exactly what ``predict_layers`` says of it alone."""
    from nni_hwaware.jetson.graph import extract_layers

    archs = sample_architectures(load_space("convnet"), 24, seed=5)
    graphs = [extract_layers(convnet_onnx(a, 50, 3, 10), (1, 3, 50, 50)) for a in archs]
    together = predictor.predict_layers_many(graphs)
    alone = [predictor.predict_layers(g) for g in graphs]
    assert {r["in_distribution"] for r in alone} == {True, False}
    for a, b in zip(together, alone):
        assert list(a) == list(b)
        for key, value in b.items():
            if isinstance(value, float) or key.endswith("_interval"):
                assert a[key] == pytest.approx(value, rel=1e-12), key
            else:
                assert a[key] == value, key
    assert predictor.predict_layers_many([]) == []
