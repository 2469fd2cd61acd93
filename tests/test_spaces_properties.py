"""Property-based tests over sampled architectures of every shipped space.

Each sampled architecture validates, builds, runs a forward pass, exports to ONNX that onnxruntime runs with
the same output, and round-trips through the NNI NAS sample (freezing the model space) and the nnictl
parameter dict.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nni_hwaware.spaces import (
    build_module,
    example_input,
    export_onnx,
    list_spaces,
    load_space,
    sample_architectures,
)
from nni_hwaware.spaces.export import module_to_onnx_bytes
from nni_hwaware.spaces.nni_space import (
    HwModelSpace,
    arch_to_hpo_params,
    arch_to_sample,
    hpo_params_to_arch,
    sample_to_arch,
)

# Small inputs and narrow widths keep a forward pass and an ONNX export well under a second per model.
SMALL = {
    "resnet": {"input_size": 32, "width_mult": 0.125},
    "mobilenetv3": {"input_size": 32, "width_mult": 0.25},
    "densenet": {"input_size": 32, "width_mult": 0.25},
    "convnet": {"input_size": 48, "width_mult": 0.0625},
}
SPACES = list_spaces()


def test_all_expected_spaces_ship():
    assert set(SPACES) >= {"resnet", "mobilenetv3", "densenet", "convnet"}


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), strategy=st.sampled_from(["random", "balanced"]))
def test_sampled_architecture_builds_runs_exports(name, seed, strategy):
    space = load_space(name)
    (arch,) = sample_architectures(space, 1, seed=seed, strategy=strategy)
    assert space.validate(arch) == arch
    assert space.validate(json.loads(space.canonical_json(arch))) == arch
    opts = SMALL[name]
    model = build_module(space, arch, num_classes=7, **opts)
    x = example_input(space, opts["input_size"])
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 7)
    assert torch.isfinite(y).all()
    # the exported graph computes what the module computes
    session = ort.InferenceSession(module_to_onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    (y_onnx,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(y_onnx, y.numpy(), rtol=1e-3, atol=1e-4)
    # and the one-call export builds the same graph shape
    exported = ort.InferenceSession(export_onnx(space, arch, None, num_classes=7, **opts))
    assert exported.get_outputs()[0].shape == [1, 7]


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), strategy=st.sampled_from(["random", "balanced"]))
def test_nni_sample_and_hpo_params_round_trip(name, seed, strategy):
    space = load_space(name)
    (arch,) = sample_architectures(space, 1, seed=seed, strategy=strategy)
    sample = arch_to_sample(space, arch)
    assert sample_to_arch(space, sample) == arch
    params = arch_to_hpo_params(space, arch)
    assert hpo_params_to_arch(space, params) == arch
    # JSON round trip, as nnictl sends parameters to trials
    assert hpo_params_to_arch(space, json.loads(json.dumps(params))) == arch


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_model_space_freeze_builds_the_named_architecture(name, seed):
    space = load_space(name)
    model_space = HwModelSpace(name, input_size=SMALL[name]["input_size"], width_mult=SMALL[name]["width_mult"])
    assert set(model_space.simplify()) == set(arch_to_sample(space, space.default_architecture()))
    (arch,) = sample_architectures(space, 1, seed=seed)
    frozen = model_space.freeze(arch_to_sample(space, arch))
    assert frozen.architecture == arch
    reference = build_module(space, arch, **SMALL[name])
    assert sum(p.numel() for p in frozen.parameters()) == sum(p.numel() for p in reference.parameters())


def test_distinct_samples_differ_and_hash_is_stable():
    space = load_space("resnet")
    archs = sample_architectures(space, 50, seed=0)
    hashes = {space.arch_hash(a) for a in archs}
    assert len(hashes) == 50
    # hash depends only on the canonical form: key order and 0.667 vs 0.6667 do not matter
    arch = archs[0]
    shuffled = json.loads(json.dumps(arch, sort_keys=False))
    shuffled["units"][0]["blocks"][0] = dict(reversed(list(shuffled["units"][0]["blocks"][0].items())))
    for unit in shuffled["units"]:
        for block in unit["blocks"]:
            if block["expand_ratio"] == 0.6667:
                block["expand_ratio"] = 0.667
    assert space.arch_hash(shuffled) == space.arch_hash(arch)
