"""Supernets of the spaces (nni_hwaware.nas.oneshot.supernet): a frozen sample is build_module's network, the
labels are HwModelSpace's, and NNI's one-shot strategies mutate and run them unchanged.

The property test freezes sampled architectures of convnet, mobilenetv3 and resnet and compares with
build_module layer by layer (every leaf module's repr: type, channels, kernel, stride, padding, groups), by
parameter count, and by function (the supernet path's weights copied in order give the same outputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.oneshot.supernet import HwSupernet, choice_name
from nni_hwaware.spaces import build_module, sample_architectures
from nni_hwaware.spaces.builders import convnet_spatial_sizes
from nni_hwaware.spaces.nni_space import nas_choices

TINY_SPACE = """\
name: tiny_mbv3
description: two small units of the mobilenetv3 family, for fast supernet tests
family: mobilenetv3
defaults: {input_size: 32, width_mult: 1.0, num_classes: 10, in_channels: 3}
options: {stem_channels: 16, max_expand: 6, head_expand: 6, last_channels: 1280}
global_choices: {}
unit_choices: {}
block_choices:
  kernel_size: [3, 5]
  expand_ratio: [0.5, 1.0]
units:
  - {name: unit1, min_depth: 1, max_depth: 2, width: 16, stride: 2, activation: relu, se: false}
  - {name: unit2, min_depth: 1, max_depth: 2, width: 32, stride: 2, activation: hswish, se: true}
"""
SETTINGS = {"convnet": (12, 0.0625), "mobilenetv3": (32, 0.25), "resnet": (32, 0.125)}


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "tiny_mbv3.yaml"
    path.write_text(TINY_SPACE)
    return str(path)


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def supernet(request) -> HwSupernet:
    size, width = SETTINGS[request.param]
    return HwSupernet(request.param, input_size=size, width_mult=width, num_classes=10)


def _leaves(model: torch.nn.Module) -> list[str]:
    return [repr(m) for m in model.modules() if not list(m.children())]


def _copy_in_order(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy parameters and buffers position by position (the two networks name them differently)."""
    with torch.no_grad():
        for a, b in zip([*source.parameters(), *source.buffers()], [*target.parameters(), *target.buffers()],
                        strict=True):
            assert a.shape == b.shape
            b.copy_(a)


def test_frozen_samples_are_build_module_networks(supernet):
    space, size, width = supernet.space, supernet.input_size, supernet.width_mult
    archs = [a for a in sample_architectures(space, 8, seed=11)
             if space.family != "convnet" or min(convnet_spatial_sizes(a, size)) >= 1][:4]
    archs.append(space.default_architecture())
    x = torch.randn(2, 3, size, size)
    for arch in archs:
        frozen = supernet.freeze(supernet.arch_to_sample(arch)).eval()
        built = build_module(space, arch, input_size=size, width_mult=width, num_classes=10).eval()
        assert frozen.architecture == space.validate(arch)
        assert _leaves(frozen) == _leaves(built)
        assert sum(p.numel() for p in frozen.parameters()) == sum(p.numel() for p in built.parameters())
        _copy_in_order(frozen, built)
        with torch.no_grad():
            assert torch.allclose(frozen(x), built(x), atol=1e-5)


def test_labels_are_hw_model_space_labels(supernet):
    space = supernet.space
    labels = set(supernet.simplify())
    assert labels == set(nas_choices(space))
    for label, mutable in supernet.simplify().items():
        expected = [choice_name(v) if label in supernet.string_labels else v for v in nas_choices(space)[label]]
        assert list(mutable.values) == expected, label
    for arch in sample_architectures(space, 5, seed=2):
        assert supernet.sample_to_arch(supernet.arch_to_sample(arch)) == space.validate(arch)


def test_supernet_shares_weights_between_architectures(tiny_space):
    """Two architectures that choose the same candidate at a position use the same weights."""
    supernet = HwSupernet(tiny_space, input_size=16, width_mult=0.5, num_classes=10)
    space = supernet.space
    first, second = sample_architectures(space, 2, seed=0)
    first["units"][0]["blocks"][0] = second["units"][0]["blocks"][0] = {"kernel_size": 5, "expand_ratio": 1.0}
    a = supernet.freeze(supernet.arch_to_sample(first))
    b = supernet.freeze(supernet.arch_to_sample(second))
    assert a.net[0][3][0].body[0].weight is b.net[0][3][0].body[0].weight  # unit1, block 1, its first conv


def test_strategies_mutate_and_train_the_supernet(tiny_space):
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot

    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for strategy in (RandomOneShot(), DARTS(), GumbelDARTS(), Proxyless()):
        supernet = HwSupernet(tiny_space, input_size=16, width_mult=0.5, num_classes=10)
        strategy.mutate_model(supernet)
        memo: dict = {}
        for module in supernet.modules():
            if isinstance(module, BaseSuperNetModule):
                memo.update(module.resample(memo))
        loss = torch.nn.functional.cross_entropy(supernet(x), y)
        loss.backward()
        assert torch.isfinite(loss)
        trained = [p for p in supernet.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert trained, type(strategy).__name__


def test_differentiable_strategies_are_refused_on_convnet():
    from nni.nas.strategy import DARTS, Proxyless, RandomOneShot

    for strategy in (DARTS(), Proxyless()):
        supernet = HwSupernet("convnet", input_size=12, width_mult=0.0625, num_classes=10)
        with pytest.raises(HwAwareError, match="RandomOneShot") as info:
            strategy.mutate_model(supernet)
        assert "\n" not in str(info.value)
    RandomOneShot().mutate_model(HwSupernet("convnet", input_size=12, width_mult=0.0625, num_classes=10))


def test_a_mutated_convnet_path_is_its_frozen_network_and_starts_he_scaled():
    """In NNI's SPOS supernet every convnet path computes what its frozen network computes (the per-slice scale
    is part of both), and each convolution of a path starts with He's variance for its own fan-in, whatever
    filter count and kernel the path takes (a slice of one shared weight otherwise keeps the largest's)."""
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    from nni.nas.strategy import RandomOneShot

    torch.manual_seed(0)
    supernet = RandomOneShot().mutate_model(HwSupernet("convnet", input_size=12, width_mult=0.25, num_classes=10))
    modules = [m for m in supernet.modules() if isinstance(m, BaseSuperNetModule)]
    x = torch.rand(4, 3, 12, 12)
    archs = [a for a in sample_architectures(supernet.space, 12, seed=3)
             if min(convnet_spatial_sizes(a, 12)) >= 1][:4]
    for arch in archs:
        sample = supernet.arch_to_sample(arch)
        memo = dict(sample)
        for module in modules:
            memo.update(module.resample(memo=memo))
        frozen = supernet.freeze(sample)
        with torch.no_grad():
            assert torch.allclose(supernet(x), frozen(x), atol=1e-5), arch
        for conv in (m for m in frozen.modules() if isinstance(m, torch.nn.Conv2d)):
            fan_in = conv.weight[0].numel()
            assert conv.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.5), (arch, fan_in)


def test_bad_spaces_and_samples_are_one_line_errors(supernet):
    with pytest.raises(HwAwareError, match="no supernet"):
        HwSupernet("densenet")
    sample = supernet.arch_to_sample(supernet.space.default_architecture())
    label = next(iter(supernet.string_labels))
    with pytest.raises(HwAwareError, match=label):
        supernet.sample_to_arch({**sample, label: "nine"})


def test_package_is_listed():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"nni_hwaware.nas.oneshot"' in text
