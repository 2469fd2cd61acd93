"""Closed-form size counts of architectures, without building a network.

The counts follow torchinfo's convention, which the public Jetson Nano dataset's ``Total MACs`` column uses:
a bias counts one multiply-accumulate per output element. :func:`count_weight_macs` counts the weights'
multiply-accumulates only, from a built module, for any space; :func:`architecture_weight_macs` does so for
architectures with a forward pass on PyTorch's ``meta`` device (no weights are allocated, so counting a 224x224
ResNet takes milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from nni_hwaware.spaces.builders import build_module, skip_batch_norm
from nni_hwaware.spaces.schema import Architecture, SearchSpace


def convnet_macs_params(arch: dict[str, Any], input_size: int, in_channels: int = 3,
                        num_classes: int = 10) -> tuple[int, int]:
    """torchinfo-style MACs (bias = one MAC per output element) and parameter count of a ``convnet`` architecture.

    Examples
    --------
    >>> arch = {"global": {"layer_type": "conv", "filters": 8},
    ...         "units": [{"depth": 1, "blocks": [{"kernel_size": 3, "padding": 1}]}]}
    >>> convnet_macs_params(arch, 16)   # conv: (3*8*9 + 8) * 16*16; linear: 8*16*16*10 + 10
    (77834, 20714)
    """
    filters = int(arch["global"]["filters"])
    dws = arch["global"]["layer_type"] == "dws"
    macs = params = 0
    ch, w = in_channels, input_size
    for block in arch["units"][0]["blocks"]:
        k, pad = int(block["kernel_size"]), int(block["padding"])
        w = w - k + 2 * pad + 1
        if dws:
            p_dw, p_pw = ch * k * k + ch, ch * filters + filters
            macs += (p_dw + p_pw) * w * w
            params += p_dw + p_pw
        else:
            p = ch * filters * k * k + filters
            macs += p * w * w
            params += p
        ch = filters
    p_fc = ch * w * w * num_classes + num_classes
    return macs + p_fc, params + p_fc


def meta_model(space: SearchSpace, arch: Architecture, input_size: int, width_mult: float | None) -> nn.Module:
    """The network of ``arch`` on PyTorch's ``meta`` device (no weights), batch norm skipped, for shape passes."""
    with torch.device("meta"):
        model = build_module(space, arch, input_size=input_size, width_mult=width_mult)
    return skip_batch_norm(model)


def restore_forward(model: nn.Module) -> nn.Module:
    """Undo :func:`~nni_hwaware.spaces.builders.skip_batch_norm` (before the module is given real weights)."""
    for module in model.modules():
        module.__dict__.pop("forward", None)
    return model


def meta_input(space: SearchSpace, input_size: int) -> torch.Tensor:
    """A ``meta`` input of one image at ``input_size`` for a shape pass."""
    return torch.empty(1, int(space.defaults["in_channels"]), input_size, input_size, device="meta")


def count_weight_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the weights of convolutions and linear layers for one forward pass of ``example``
    (biases not counted; :func:`convnet_macs_params` counts torchinfo's way)."""
    total = 0

    def hook(mod: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += output.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += output.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return int(total)


def architecture_weight_macs(
    space: SearchSpace, archs: Iterable[Architecture], input_size: int, width_mult: float | None = None
) -> np.ndarray:
    """Weight MACs (:func:`count_weight_macs`) of each architecture at ``input_size``, as a float array."""
    return np.array(
        [count_weight_macs(meta_model(space, a, input_size, width_mult), meta_input(space, input_size)) for a in archs],
        dtype=float,
    )
