"""Graph extractor: torch and ONNX give identical features, external weights are never needed; the fusion table
and the per-op costing; the torch-exported and hand-built convnet graphs agree (a property test)."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nni_hwaware.jetson.costing import Node, cost_node, unmodelled_ops
from nni_hwaware.jetson.fusion import TENSORRT_RULES, KernelMap
from nni_hwaware.jetson.graph import (
    GraphLayers,
    convnet_onnx,
    extract_layers,
    import_graph,
    layers_from_module,
    module_to_onnx,
)
from nni_hwaware.spaces import build_module, export_onnx, load_space


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


# ------------------------------------------------------------------------ fusion table, costing, property
def _placed_rules(proto: onnx.ModelProto, rules: tuple = TENSORRT_RULES) -> tuple[dict[str, list], list]:
    """Run the three parts by hand: which fusion rule absorbed each node (by op), and the layers."""
    graph = import_graph(proto)
    kernels, fired, layers = KernelMap(rules), {}, []
    for index, node in enumerate(graph.nodes):
        layers.append(cost_node(node))
        fired.setdefault(node.op, []).append(kernels.place(index, node, layers[-1]))
    return fired, layers


def _conv_bn_relu_add_silu() -> onnx.ModelProto:
    """conv-bn-relu, conv + residual add, relu, conv, SiLU; batch-norm kept (torch would fold it on export)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             [("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)), ("w3", (8, 8, 1, 1)), ("g", (8,)), ("b", (8,)),
              ("m", (8,)), ("v", (8,))]]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], **conv),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["y"]),
             helper.make_node("Conv", ["y", "w2"], ["c2"], **conv),
             helper.make_node("Add", ["c2", "y"], ["s"]),
             helper.make_node("Relu", ["s"], ["z"]),
             helper.make_node("Conv", ["z", "w3"], ["c3"], kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c3"], ["sig"]),
             helper.make_node("Mul", ["c3", "sig"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_row_of_the_fusion_table_fires_and_the_table_drives_the_fusion():
    fired, layers = _placed_rules(_conv_bn_relu_add_silu())
    assert fired["BatchNormalization"] == ["conv+batchnorm"]
    assert fired["Relu"] == ["conv+relu", "conv+relu"]  # the second one after the fused add, same epilogue
    assert fired["Add"] == ["conv+add"]
    assert fired["Sigmoid"] == [None] and fired["Mul"] == ["pointwise+pointwise"]
    assert {rule.name for rule in TENSORRT_RULES} == {r for rules in fired.values() for r in rules if r}
    add = layers[4]
    assert add.kind == "fused" and add.in_elems == 8 * 8 * 8 and add.out_elems == 0  # reads the other operand
    assert [layer.op for layer in layers if layer.launches] == ["Conv", "Conv", "Conv", "Sigmoid"]
    assert extract_layers(_conv_bn_relu_add_silu()).layers == layers
    # The table is data: without the epilogue-activation row, every ReLU is a PointWise kernel of its own.
    fired, layers = _placed_rules(_conv_bn_relu_add_silu(),
                                  tuple(rule for rule in TENSORRT_RULES if rule.name != "conv+relu"))
    assert {(layer.kind, layer.launches) for layer in layers if layer.op == "Relu"} == {("eltwise", True)}


def test_costing_of_linear_matmul_and_unknown_ops():
    fc = Node("fc", "Gemm", ("x", "w", "b"), ("y",), attrs={"transB": 1}, in_shapes=[[1, 32], [10, 32], [10]],
              out_shape=[1, 10], act_inputs=("x",))
    layer = cost_node(fc)
    assert (layer.kind, layer.macs, layer.params, layer.weight_elems) == ("linear", 330.0, 330.0, 330.0)
    mm = Node("mm", "MatMul", ("a", "b"), ("y",), in_shapes=[[1, 4, 8], [1, 8, 5]], out_shape=[1, 4, 5],
              act_inputs=("a", "b"))
    assert (cost_node(mm).kind, cost_node(mm).macs, cost_node(mm).in_elems) == ("matmul", 160.0, 72.0)
    blind = Node("c", "Conv", ("x", "w"), ("y",), act_inputs=("x",))  # shapes unknown: a memory-bound guess
    assert cost_node(blind).kind == "unknown"
    nms = Node("n", "NonMaxSuppression", ("b",), ("o",), act_inputs=("b",))
    assert unmodelled_ops(nms, cost_node(nms)) == ["NonMaxSuppression"]


CONVNET = load_space("convnet")


@st.composite
def _convnet_archs(draw: st.DrawFn) -> tuple[dict, int]:
    """A convnet architecture and an input size it fits. Kernels, paddings and layer types range over the
    whole space; filters and depth stay at the small end, so that the torch export (with real weights) is
    quick: the hand-built graph carries no weights, and the structure is the same at every width."""
    depth = draw(st.integers(1, 4))
    blocks = [{"kernel_size": draw(st.sampled_from(CONVNET.block_choices["kernel_size"])),
               "padding": draw(st.sampled_from(CONVNET.block_choices["padding"]))} for _ in range(depth)]
    arch = {"global": {"layer_type": draw(st.sampled_from(CONVNET.global_choices["layer_type"])),
                       "filters": draw(st.sampled_from(CONVNET.global_choices["filters"][:3]))},
            "units": [{"depth": depth, "blocks": blocks}]}
    return CONVNET.validate(arch), draw(st.integers(4 * depth + 1, 40))


@settings(max_examples=25, deadline=None)
@given(arch_and_size=_convnet_archs())
def test_onnx_export_and_hand_built_convnet_graph_give_the_same_layers(arch_and_size):
    arch, size = arch_and_size
    exported = extract_layers(export_onnx(CONVNET, arch, None, input_size=size))
    hand_built = extract_layers(convnet_onnx(arch, size))

    def unnamed(graph: GraphLayers) -> list[dict]:
        return [layer.as_dict() | {"name": ""} for layer in graph.layers]

    assert unnamed(exported) == unnamed(hand_built)
    assert exported.input_shape == hand_built.input_shape == [1, 3, size, size]
    assert exported.unknown_ops == hand_built.unknown_ops == [] and exported.warnings == hand_built.warnings
    assert exported.macs == hand_built.macs and exported.params == hand_built.params
