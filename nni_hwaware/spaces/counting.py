"""Closed-form size counts of architectures, without building a network.

The counts follow torchinfo's convention, which the public Jetson Nano dataset's ``Total MACs`` column uses:
a bias counts one multiply-accumulate per output element. (:func:`nni_hwaware.proxies.count_weight_macs`
counts the weights' multiply-accumulates only, from a built module, for any space.)
"""

from __future__ import annotations

from typing import Any


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
