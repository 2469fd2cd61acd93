"""Space sizes, sampling strategies, the NNI tuners on our nnictl search space, and the CLI's errors."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces import load_space, sample_architectures
from nni_hwaware.spaces.nni_space import arch_to_hpo_params, hpo_params_to_arch, hpo_search_space
from nni_hwaware.spaces.schema import parse_space


def test_space_sizes_match_the_esm_paper():
    # Table I: 8.38e26 for ResNet and MobileNetV3, 1e10 for DenseNet
    assert f"{float(load_space('resnet').num_architectures):.3g}" == "8.38e+26"
    assert f"{float(load_space('mobilenetv3').num_architectures):.3g}" == "8.38e+26"
    assert load_space("densenet").num_architectures == 10**10
    # exact: (sum_{d=1..7} 9^d)^4
    assert load_space("resnet").num_architectures == sum(9**d for d in range(1, 8)) ** 4


def test_same_arguments_same_architectures():
    space = load_space("mobilenetv3")
    a = sample_architectures(space, 20, seed=5, strategy="balanced", bins=4)
    b = sample_architectures(space, 20, seed=5, strategy="balanced", bins=4)
    c = sample_architectures(space, 20, seed=6, strategy="balanced", bins=4)
    assert a == b
    assert a != c


def test_balanced_sampling_fills_every_bin_equally_random_does_not():
    space = load_space("resnet")
    bins = 6
    balanced = sample_architectures(space, 600, seed=1, strategy="balanced", bins=bins)
    counts = Counter(space.depth_bin(space.total_depth(a), bins) for a in balanced)
    assert sorted(counts) == list(range(bins))
    assert all(count == 100 for count in counts.values())
    random = sample_architectures(space, 600, seed=1, strategy="random")
    random_counts = Counter(space.depth_bin(space.total_depth(a), bins) for a in random)
    # the central limit theorem leaves the extreme bins nearly empty under random sampling
    assert random_counts[0] + random_counts[bins - 1] < 60


def test_balanced_with_remainder_returns_exactly_n():
    space = load_space("densenet")
    archs = sample_architectures(space, 13, seed=2, strategy="balanced", bins=5)
    assert len(archs) == 13


@pytest.mark.parametrize("tuner_name", ["TPE", "Random", "Anneal", "Evolution"])
def test_nni_builtin_tuners_emit_parameters_that_are_architectures(tuner_name):
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
    from nni.algorithms.hpo.hyperopt_tuner import HyperoptTuner
    from nni.algorithms.hpo.random_tuner import RandomTuner
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    factories = {
        "TPE": lambda: TpeTuner(seed=1),
        "Random": lambda: RandomTuner(seed=1),
        "Anneal": lambda: HyperoptTuner("anneal"),
        "Evolution": lambda: EvolutionTuner(population_size=4),
    }
    for name in ("resnet", "densenet", "convnet"):
        space = load_space(name)
        tuner = factories[tuner_name]()
        tuner.update_search_space(hpo_search_space(space))
        for i in range(6):
            params = tuner.generate_parameters(i)
            arch = hpo_params_to_arch(space, params)
            assert arch_to_hpo_params(space, arch) == params
            tuner.receive_trial_result(i, params, float(i))


@pytest.mark.parametrize(
    "arch, message",
    [
        ({"units": [{"depth": 9, "blocks": []}] * 4}, "units[0].depth: depth 9 is outside the space's range 1..7"),
        ({"units": [{"depth": 1, "blocks": [{"kernel_size": 4, "expand_ratio": 1.0}]}] * 4},
         "units[0].blocks[0].kernel_size: 4 is not one of"),
        ({"units": [{"depth": 1, "blocks": [{"kernel_size": 3, "expand_ratio": 1.0}]}] * 3}, "has 3 unit(s)"),
        ({"units": [{"depth": 2, "blocks": [{"kernel_size": 3, "expand_ratio": 1.0}]}] * 4}, "units[0].blocks: the unit has depth 2 but 1 'blocks'"),
        ({"units": [{"depth": 1, "blocks": [{"kernel_size": 3}]}] * 4}, "units[0].blocks[0]: missing 'expand_ratio'"),
        ({"unitz": []}, "architecture: unknown key(s) 'unitz'"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_invalid_architectures_are_rejected_with_a_clear_message(arch, message):
    with pytest.raises(HwAwareError, match=None) as info:
        load_space("resnet").validate(arch)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ("just a string", "must be a YAML mapping"),
        ({"name": "x", "family": "transformer", "units": []}, "family: family 'transformer' is not one of"),
        ({"name": "x", "family": "resnet", "units": [{"name": "u", "min_depth": 3, "max_depth": 2}]},
         "units[0]: missing required key(s) width, stride"),
        ({"name": "x", "family": "densenet", "units": [{"name": "u", "min_depth": 3, "max_depth": 2}]},
         "units[0].max_depth: must be at least min_depth (3), got 2"),
        ({"name": "x", "family": "densenet", "units": [{"name": "u", "min_depth": 1, "max_depth": 2}]},
         "options: missing required key(s) stem_channels"),
    ],
)
def test_malformed_space_definitions_are_rejected(data, message):
    with pytest.raises(HwAwareError) as info:
        parse_space(data)
    assert message in str(info.value)


@pytest.mark.slow
def test_cli_list_show_sample_export(cli, tmp_path):
    result = cli("spaces", "list")
    assert result.returncode == 0
    for name in ("resnet", "mobilenetv3", "densenet", "convnet"):
        assert name in result.stdout
    info = json.loads(cli("spaces", "show", "densenet", "--json").stdout)
    assert info["num_architectures"] == 10**10
    assert {"name", "num_architectures", "units", "choices"} <= set(info)
    first = cli("spaces", "sample", "resnet", "--n", "5", "--seed", "3", "--strategy", "balanced", "--bins", "5")
    second = cli("spaces", "sample", "resnet", "--n", "5", "--seed", "3", "--strategy", "balanced", "--bins", "5")
    assert first.returncode == 0 and first.stdout == second.stdout
    lines = first.stdout.splitlines()
    assert len(lines) == 5
    space = load_space("resnet")
    assert all(space.validate(line) == json.loads(line) for line in lines)
    exported = cli("spaces", "export", "convnet", "--format", "nni-hpo", "--out", str(tmp_path / "ss.json"))
    assert exported.returncode == 0
    assert json.loads((tmp_path / "ss.json").read_text()) == hpo_search_space(load_space("convnet"))


def test_cli_build_writes_onnx_that_runs(cli, tmp_path):
    import numpy as np
    import onnxruntime as ort

    arch = cli("spaces", "sample", "mobilenetv3", "--n", "1", "--seed", "1").stdout.strip()
    out = tmp_path / "m.onnx"
    result = cli("spaces", "build", "mobilenetv3", "--arch", arch, "--onnx", str(out), "--input-size", "32")
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    (y,) = session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 1000)


@pytest.mark.parametrize(
    "args, message",
    [
        (["spaces", "show", "nosuchspace"], "unknown space 'nosuchspace'"),
        (["spaces", "build", "resnet", "--arch", '{"units": [{"depth": 9}]}', "--onnx", "x.onnx"], "has 1 unit(s)"),
        (["spaces", "build", "resnet", "--arch",
          json.dumps({"units": [{"depth": 9, "blocks": []}] * 4}), "--onnx", "x.onnx"], "outside the space's range"),
        (["spaces", "build", "convnet", "--arch",
          json.dumps({"global": {"layer_type": "plain", "filters": 64},
                      "units": [{"depth": 1, "blocks": [{"kernel_size": 9, "padding": 1}]}]}),
          "--onnx", "x.onnx"], "not one of the space's choices"),
        (["spaces", "build", "convnet", "--arch",
          json.dumps({"global": {"layer_type": "plain", "filters": 64},
                      "units": [{"depth": 1, "blocks": [{"kernel_size": 7, "padding": 1}]}]}),
          "--onnx", "x.onnx", "--input-size", "3"], "below 1x1"),
        (["spaces", "sample", "resnet", "--n", "-1"], "n must be a non-negative integer"),
        (["spaces", "build", "resnet", "--arch", "@/nonexistent/arch.json", "--onnx", "x.onnx"],
         "cannot read architecture file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_malformed_space_file_and_unwritable_output(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfamily: resnet\nunits: [unclosed\n")
    result = cli("spaces", "show", str(bad))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr

    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, 0o555)
    arch = json.dumps(load_space("convnet").default_architecture())
    try:
        result = cli("spaces", "build", "convnet", "--arch", arch, "--onnx", str(readonly / "m.onnx"))
        if os.geteuid() == 0:  # root ignores folder permissions; /proc refuses new files even to root
            result = cli("spaces", "build", "convnet", "--arch", arch, "--onnx", "/proc/m.onnx")
        assert result.returncode == 2
        assert "cannot write" in result.stderr and "Traceback" not in result.stderr
    finally:
        os.chmod(readonly, 0o755)
