"""Jetson Nano dataset loader: names rebuild convnet architectures whose MACs/params match the CSV."""

from __future__ import annotations

import pytest

from nni_hwaware.jetson.dataset import load_dataset, mixed_blocks, parse_model_name
from nni_hwaware.spaces import load_space
from nni_hwaware.spaces.counting import convnet_macs_params


def test_mixed_kernel_padding_rule():
    blocks = mixed_blocks(5, 2, 3, 5, 2)
    assert [b["kernel_size"] for b in blocks] == [2, 5, 2, 5, 2]
    assert [b["padding"] for b in blocks] == [2, 1, 1, 1, 1]  # 2 until the first odd kernel, then 1


def test_parse_names_are_valid_convnet_architectures():
    space = load_space("convnet")
    arch, w = parse_model_name("convnet_L5_F128_K2x2_W30_DWS")
    assert w == 30 and arch["global"]["layer_type"] == "dws"
    assert all(b["padding"] == 2 for b in arch["units"][0]["blocks"])
    space.validate(arch)
    arch, _ = parse_model_name("convnet_L2_F512_K3x3_W70")
    assert convnet_macs_params(arch, 70) == (11658393610, 27462154)  # first row of conv_layers_1_5


def test_loader_subset_matches_csv(shared_dir):
    models, report = load_dataset(shared_dir / "data" / "jetson_nano", limit_per_stage=20)
    assert report.models == len(models) >= 150
    assert report.macs_match == report.params_match == report.models
    assert all(m.latency_ms > 0 and m.energy_mj > 0 for m in models)


def test_loader_bad_folder(tmp_path):
    from nni_hwaware.errors import HwAwareError

    with pytest.raises(HwAwareError, match="stage folder"):
        load_dataset(tmp_path)
