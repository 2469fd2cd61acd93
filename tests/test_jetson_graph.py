"""Graph extractor: torch and ONNX give identical features, external weights are never needed."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from nni_hwaware.jetson.graph import convnet_onnx, extract_layers, layers_from_module, module_to_onnx
from nni_hwaware.spaces import build_module, load_space


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 32, 1), nn.Hardswish(),
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def test_torch_and_onnx_paths_agree_and_external_data_may_be_missing(tmp_path):
    model = _small_cnn()
    from_module = layers_from_module(model, (1, 3, 32, 32))
    proto = onnx.load_from_string(module_to_onnx(model, (1, 3, 32, 32)))
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()
    from_file = extract_layers(path)
    assert [(a.kind, a.macs, a.params) for a in from_module.layers] == [(b.kind, b.macs, b.params)
                                                                        for b in from_file.layers]
    kinds = {layer.kind for layer in from_file.layers}
    assert {"conv", "dwconv", "pool", "linear", "fused"} <= kinds
    # folded batch-norm: the first conv gets a bias, 16*16*16*(27+1) MACs
    assert from_file.layers[0].macs == 16 * 16 * 16 * 28


def test_convnet_helper_graph_matches_torch_export():
    space = load_space("convnet")
    arch = {"global": {"layer_type": "dws", "filters": 64},
            "units": [{"depth": 2, "blocks": [{"kernel_size": 3, "padding": 1}, {"kernel_size": 5, "padding": 2}]}]}
    a = extract_layers(convnet_onnx(arch, 16))
    b = layers_from_module(build_module(space, arch, input_size=16), (1, 3, 16, 16))
    assert [x.as_dict() | {"name": ""} for x in a.layers] == [x.as_dict() | {"name": ""} for x in b.layers]


def test_residual_add_is_fused_and_conv_transpose_sized():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c1(x))
            return self.up(torch.relu(self.c2(y) + y))

    g = layers_from_module(Net().eval(), (1, 3, 8, 8))
    add = [layer for layer in g.layers if layer.op == "Add"][0]
    assert add.kind == "fused" and not add.launches
    deconv = [layer for layer in g.layers if layer.kind == "deconv"][0]
    assert deconv.out_shape == [1, 4, 16, 16] and deconv.macs == 8 * 8 * 8 * 4 * 4 + 4 * 16 * 16


def test_tensorrt_fusion_rules_for_pointwise_ops():
    """ReLU fuses into the conv; SiLU (x * sigmoid(x)) is one separate PointWise kernel; a ReLU whose input
    is also read elsewhere cannot fuse."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3 = (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1),
                                         nn.Conv2d(8, 8, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c1(x))                # fused into c1
            z = nn.functional.silu(self.c2(y))        # Sigmoid + Mul: one PointWise kernel after c2
            w = self.c3(z)
            return torch.relu(w) + w                  # w is read twice: the ReLU is a kernel of its own

    g = layers_from_module(Net().eval(), (1, 3, 8, 8))
    by_op = {}
    for layer in g.layers:
        by_op.setdefault(layer.op, []).append(layer)
    relu_fused, relu_alone = by_op["Relu"]
    assert relu_fused.kind == "fused" and not relu_fused.launches
    assert relu_alone.kind == "eltwise" and relu_alone.launches
    sigmoid, mul = by_op["Sigmoid"][0], by_op["Mul"][0]
    assert sigmoid.kind == "eltwise" and sigmoid.launches and sigmoid.in_elems == 8 * 8 * 8
    assert mul.kind == "fused" and not mul.launches  # chained into the Sigmoid's kernel, no extra traffic
    launches = [layer.op for layer in g.layers if layer.launches]
    assert launches.count("Conv") == 3 and len(launches) == 5
