"""Per-layer description of any CNN, read from its ONNX graph alone (weights are never needed).

The extractor has three parts, one module each, applied in this order by :func:`extract_layers`:

(a) **graph import** (this module): an ONNX file (loaded with ``load_external_data=False``, so models whose
    weights live in a missing external file work), ONNX bytes, or a ``torch.nn.Module`` exported to ONNX in
    memory becomes a list of :class:`~nni_hwaware.jetson.costing.Node` with every tensor's shape resolved.
    Shapes come from ``onnx.shape_inference`` and the graph's ``value_info``/initializer dims, with a fallback
    propagation for the common ops so that one unknown op does not blind the rest of the graph; nodes whose
    output is known when the engine is built (weights, shapes and arithmetic on them) are marked ``static``.
(b) **fusion** (:mod:`nni_hwaware.jetson.fusion`): TensorRT's fusion rules as a table -- batch-norm folded into
    the preceding conv/linear, ReLU/ReLU6 and a following residual add fused into the conv epilogue, every
    other pointwise op (SiLU's ``x * sigmoid(x)``, HardSwish, the squeeze-excite scale, ...) in a PointWise
    kernel of its own that chains its neighbours, reshapes and concatenations free.
(c) **costing** (:mod:`nni_hwaware.jetson.costing`): the MACs, parameters, activation and weight elements,
    kernel and op kind of each node as a :class:`Layer`. MACs follow torchinfo: a conv or linear bias counts
    one MAC per output element.

The ``launches`` field of a layer says whether it is its own kernel launch. The layer kinds and
:class:`Layer` are defined in :mod:`.costing` and re-exported here.

Examples
--------
>>> arch = {"global": {"layer_type": "dws", "filters": 8},
...         "units": [{"depth": 1, "blocks": [{"kernel_size": 3, "padding": 1}]}]}
>>> [(node.op, node.out_shape) for node in import_graph(convnet_onnx(arch, 8)).nodes]
[('Conv', [1, 3, 8, 8]), ('Conv', [1, 8, 8, 8]), ('Relu', [1, 8, 8, 8]), ('Flatten', [1, 512]), ('Gemm', [1, 10])]
>>> [(layer.kind, layer.launches) for layer in extract_layers(convnet_onnx(arch, 8)).layers]
[('dwconv', True), ('conv', True), ('fused', False), ('free', False), ('linear', True)]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.jetson.costing import (
    BINARY,
    COMPUTE_KINDS,
    CONV,
    DECONV,
    DWCONV,
    ELTWISE,
    FREE,
    FUSED,
    GCONV,
    KNOWN_OPS,
    LINEAR,
    MATMUL,
    MEMORY_KINDS,
    POOL,
    REDUCE,
    RESIZE,
    RESIZES,
    SHUFFLE,
    UNKNOWN,
    Layer,
    Node,
    conv_out_shape,
    cost_node,
    numel,
    unmodelled_ops,
)
from nni_hwaware.jetson.fusion import KernelMap

__all__ = [
    "COMPUTE_KINDS", "CONV", "DECONV", "DWCONV", "ELTWISE", "FREE", "FUSED", "GCONV", "KNOWN_OPS", "LINEAR",
    "MATMUL", "MEMORY_KINDS", "POOL", "REDUCE", "RESIZE", "SHUFFLE", "UNKNOWN", "GraphLayers", "ImportedGraph",
    "Layer", "Node", "convnet_onnx", "extract_layers", "import_graph", "layers_from_module", "load_onnx",
    "module_to_onnx",
]


@dataclass
class GraphLayers:
    """All layers of a graph plus what the extractor could not handle."""

    layers: list[Layer]
    input_shape: list[int]
    unknown_ops: list[str]
    warnings: list[str]

    @property
    def macs(self) -> float:
        """Total multiply-accumulates."""
        return float(sum(layer.macs for layer in self.layers))

    @property
    def params(self) -> float:
        """Total trainable parameters (batch-norm's scale and shift included)."""
        return float(sum(layer.params for layer in self.layers))


# ----------------------------------------------------------------------------------------------- loading
def load_onnx(source: str | Path | bytes) -> Any:
    """Load an ONNX model without its weights' external data; clear error on a missing or corrupt file.

    Examples
    --------
    >>> load_onnx("missing.onnx")
    Traceback (most recent call last):
    ...
    nni_hwaware.errors.HwAwareError: ONNX file missing.onnx not found; pass an existing .onnx file
    >>> load_onnx(b"not onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nni_hwaware.errors.HwAwareError: cannot read ONNX bytes as an ONNX model (...); is the file complete ...
    """
    import onnx

    try:
        if isinstance(source, bytes | bytearray):
            return onnx.load_from_string(bytes(source))
        path = Path(source)
        if not path.is_file():
            raise HwAwareError(f"ONNX file {path} not found; pass an existing .onnx file")
        return onnx.load(str(path), load_external_data=False)
    except HwAwareError:
        raise
    except Exception as exc:  # protobuf raises DecodeError and friends
        where = "ONNX bytes" if isinstance(source, bytes | bytearray) else str(source)
        raise HwAwareError(f"cannot read {where} as an ONNX model ({type(exc).__name__}); is the file complete "
                           "and really ONNX?") from None


def _dims(type_proto: Any) -> list[int | str] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _fix_input_shapes(model: Any, input_shape: Sequence[int] | None) -> list[int]:
    """Give the graph's (first) data input a concrete shape: the override, else its own with batch 1."""
    inits = {t.name for t in model.graph.initializer}
    data_inputs = [i for i in model.graph.input if i.name not in inits]
    if not data_inputs:
        raise HwAwareError("the ONNX graph has no data input; cannot size its layers")
    first = data_inputs[0]
    dims = _dims(first.type)
    if input_shape is not None:
        shape = [int(x) for x in input_shape]
        if dims is not None and len(dims) != len(shape):
            raise ParameterError(f"input_shape has {len(shape)} dims but the model input {first.name!r} has "
                                 f"{len(dims)}; give e.g. 1,3,224,224", parameter="input_shape")
    else:
        if dims is None:
            raise HwAwareError(f"the model input {first.name!r} has no shape; pass the input shape "
                               "(input_shape 1,3,224,224)", mentions=("input_shape",))
        shape = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(1)  # batch 1, as measured
            else:
                raise HwAwareError(f"the model input {first.name!r} has a symbolic dimension {d!r} at axis {i}; "
                                   "pass the input shape (input_shape 1,3,224,224)", mentions=("input_shape",))
    tensor_shape = first.type.tensor_type.shape
    del tensor_shape.dim[:]
    for d in shape:
        tensor_shape.dim.add().dim_value = d
    for other in data_inputs[1:]:
        odims = _dims(other.type) or []
        if any(not isinstance(d, int) for d in odims[1:]):
            raise HwAwareError(f"the model has a second input {other.name!r} with symbolic shape; only "
                               "single-input models with a fixed shape are supported")
        if odims and not isinstance(odims[0], int):
            other.type.tensor_type.shape.dim[0].dim_value = 1
    return shape


# ---------------------------------------------------------------------------------------- graph import
@dataclass
class ImportedGraph:
    """An ONNX graph as a typed list of nodes with shapes, in graph (topological) order.

    Parameters
    ----------
    nodes
        One :class:`Node` per ONNX node, shapes resolved, ``static`` nodes marked.
    input_shape
        The concrete shape given to the (first) data input.
    warnings
        What went wrong while importing (e.g. ONNX shape inference failed).
    """

    nodes: list[Node]
    input_shape: list[int]
    warnings: list[str]


class _Tensors:
    """Shapes, constants and producers/readers of the tensors of one graph, filled in while it is imported."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.shapes: dict[str, list[int]] = {}
        self.initializers: set[str] = set()
        self.constants: dict[str, np.ndarray] = {}
        for t in g.initializer:
            self.initializers.add(t.name)
            self.shapes[t.name] = [int(d) for d in t.dims]
            external = t.data_location == 1  # TensorProto.EXTERNAL: data not loaded, never needed
            if not external and int(np.prod(t.dims or [1])) <= 64:
                with contextlib.suppress(Exception):  # a malformed small tensor: only shape hints are lost
                    self.constants[t.name] = numpy_helper.to_array(t)
        for vi in [*g.input, *g.value_info, *g.output]:
            dims = _dims(vi.type)
            if dims is not None and all(isinstance(d, int) and d >= 0 for d in dims):
                self.shapes.setdefault(vi.name, [int(d) for d in dims])  # type: ignore[misc]
        self.readers: dict[str, int] = {}
        self.producer: dict[str, tuple[str, str]] = {}  # tensor -> (op, first input) of the node making it
        for node in g.node:
            for i in node.input:
                self.readers[i] = self.readers.get(i, 0) + 1
            for o in node.output:
                self.producer[o] = (node.op_type, node.input[0] if node.input else "")
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.initializers.add(node.output[0])
                        arr = numpy_helper.to_array(a.t)
                        self.shapes[node.output[0]] = list(arr.shape)
                        if arr.size <= 64:
                            self.constants[node.output[0]] = arr
        self.graph_outputs = {o.name for o in g.output}
        # Tensors known when the engine is built (weights, constants, shapes and arithmetic on them): TensorRT
        # folds the nodes that compute them, so they cost nothing at inference.
        self.static: set[str] = set(self.initializers)

    def shape(self, name: str) -> list[int] | None:
        return self.shapes.get(name) if name else None

    def is_weight(self, name: str) -> bool:
        """An initializer or a constant (possibly behind a Cast/DequantizeLinear/Identity)."""
        seen = 0
        while name and seen < 4:
            if name in self.initializers:
                return True
            op, first = self.producer.get(name, ("", ""))
            if op not in ("Cast", "DequantizeLinear", "Identity", "Transpose", "Reshape", "Unsqueeze"):
                return False
            name, seen = first, seen + 1
        return False

    def node(self, index: int, proto: Any) -> Node:
        """The typed node of ``proto`` (the ``index``-th of the graph); records the shape of its output."""
        from onnx import helper

        op, inputs, outputs = proto.op_type, tuple(proto.input), tuple(proto.output)
        static = op == "Shape" or (bool(inputs) and all((not i) or i in self.static for i in inputs))
        attrs = {a.name: helper.get_attribute_value(a) for a in reversed(proto.attribute)}  # first one wins
        if static:
            self.static.update(o for o in outputs if o)
        elif outputs and outputs[0] and outputs[0] not in self.shapes:
            s = _fallback_shape(op, attrs, inputs, [self.shape(i) for i in inputs], self.constants)
            if s is not None and all(isinstance(v, int) and v >= 0 for v in s):
                self.shapes[outputs[0]] = s
        return Node(name=proto.name or f"{op}_{index}", op=op, inputs=inputs, outputs=outputs, attrs=attrs,
                    in_shapes=[self.shape(i) for i in inputs],
                    out_shape=self.shape(outputs[0]) if outputs else None,
                    act_inputs=tuple(i for i in inputs if i and not self.is_weight(i)), domain=proto.domain,
                    static=static, readers={i: self.readers.get(i, 0) for i in inputs},
                    graph_outputs=frozenset(i for i in inputs if i in self.graph_outputs))


def import_graph(model_or_source: Any, input_shape: Sequence[int] | None = None) -> ImportedGraph:
    """Read an ONNX model (a ModelProto, a path or bytes) as a list of nodes with shapes.

    Parameters
    ----------
    model_or_source
        ``onnx.ModelProto``, path to an ``.onnx`` file (external weights need not exist) or ONNX bytes.
    input_shape
        Shape of the (first) input, e.g. ``(1, 3, 224, 224)``; needed only when the graph's is symbolic.

    Returns
    -------
    ImportedGraph
        The nodes in graph order, the input shape used, and import warnings.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Flatten())
    >>> nodes = import_graph(module_to_onnx(net, (1, 3, 9, 9))).nodes
    >>> [(n.op, len(n.act_inputs), n.in_shapes, n.out_shape) for n in nodes]
    [('Conv', 1, [[1, 3, 9, 9], [8, 3, 3, 3], [8]], [1, 8, 4, 4]), ('Flatten', 1, [[1, 8, 4, 4]], [1, 128])]
    """
    import onnx

    model = model_or_source if isinstance(model_or_source, onnx.ModelProto) else load_onnx(model_or_source)
    if len(model.graph.node) == 0:
        raise HwAwareError("the ONNX graph has no nodes; nothing to predict")
    shape = _fix_input_shapes(model, input_shape)
    warnings: list[str] = []
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # custom domains or malformed attributes: fall back to our own propagation
        warnings.append(f"ONNX shape inference failed ({type(exc).__name__}); used the extractor's own shapes")
    tensors = _Tensors(model)
    nodes = [tensors.node(index, proto) for index, proto in enumerate(model.graph.node)]
    return ImportedGraph(nodes=nodes, input_shape=shape, warnings=warnings)


def _broadcast(shapes: list[list[int]]) -> list[int]:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        out.append(max(dims))
    return out


def _fallback_shape(op: str, attrs: Mapping[str, Any], inputs: Sequence[str], ins: list[list[int] | None],
                    constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """Output shape of the first output when shape inference left it unknown (common ops only)."""
    x = ins[0] if ins else None
    if x is None:
        return None
    if op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1]:
        return conv_out_shape(attrs, x, ins[1], op == "ConvTranspose")
    if op in ("MaxPool", "AveragePool", "LpPool"):
        k = list(attrs.get("kernel_shape", [1, 1]))
        out = conv_out_shape(attrs, x, [x[1], 1, *k], False)
        if out is not None:
            out[1] = x[1]
        return out
    if op.startswith("Global"):
        return [*x[:2], *([1] * (len(x) - 2))]
    if op == "Flatten":
        axis = int(attrs.get("axis", 1))
        return [int(math.prod(x[:axis])), int(math.prod(x[axis:]))]
    if op in ("Gemm",) and len(ins) > 1 and ins[1]:
        return [x[0], ins[1][0] if int(attrs.get("transB", 0)) else ins[1][1]]
    if op == "MatMul" and len(ins) > 1 and ins[1]:
        return [*x[:-1], ins[1][-1]]
    if op in BINARY and all(s is not None for s in ins):
        return _broadcast([s for s in ins if s is not None])
    if op == "Concat" and all(s is not None for s in ins):
        axis = int(attrs.get("axis", 1)) % len(x)
        out = list(x)
        out[axis] = sum(s[axis] for s in ins if s is not None)
        return out
    if op == "Reshape" and len(inputs) > 1 and inputs[1] in constants:
        target = [int(v) for v in constants[inputs[1]].ravel()]
        target = [x[i] if v == 0 and i < len(x) else v for i, v in enumerate(target)]
        if target.count(-1) == 1:
            known = math.prod(v for v in target if v != -1)
            target[target.index(-1)] = int(numel(x) // max(1, known))
        return target
    if op in RESIZES:
        for inp in inputs[1:][::-1]:
            arr = constants.get(inp)
            if arr is not None and arr.size == len(x):
                if arr.dtype.kind == "f":
                    return [int(math.floor(d * s)) for d, s in zip(x, arr.ravel())]
                return [int(v) for v in arr.ravel()]
        return None
    if op == "Transpose":
        perm = list(attrs.get("perm", list(range(len(x)))[::-1]))
        return [x[p] for p in perm]
    # Activations, normalisations, unknown ops: assume the output has the input's shape.
    return list(x)


# ------------------------------------------------------------------------------------------- extraction
def extract_layers(model_or_source: Any, input_shape: Sequence[int] | None = None) -> GraphLayers:
    """Describe every layer of an ONNX model (a ModelProto, a path or bytes) as TensorRT runs it.

    Imports the graph (:func:`import_graph`), costs each node (:func:`~nni_hwaware.jetson.costing.cost_node`)
    and fuses it into its neighbours' kernels (:class:`~nni_hwaware.jetson.fusion.KernelMap`).

    Parameters
    ----------
    model_or_source
        ``onnx.ModelProto``, path to an ``.onnx`` file (external weights need not exist) or ONNX bytes.
    input_shape
        Shape of the (first) input, e.g. ``(1, 3, 224, 224)``; needed only when the graph's is symbolic.

    Returns
    -------
    GraphLayers
        One :class:`Layer` per node, the input shape, the ops not modelled and the warnings.

    Raises
    ------
    HwAwareError
        When the model cannot be read, has no nodes, or no conv/linear/matmul layer could be sized.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> graph = extract_layers(module_to_onnx(net, (1, 3, 16, 16)))
    >>> int(graph.macs), [(layer.op, layer.kind) for layer in graph.layers]  # 16*16*8*(27+1)
    (57344, [('Conv', 'conv'), ('Relu', 'fused')])
    """
    graph = import_graph(model_or_source, input_shape)
    kernels = KernelMap()
    layers: list[Layer] = []
    unknown: set[str] = set()
    warnings = list(graph.warnings)
    for index, node in enumerate(graph.nodes):
        layer = cost_node(node)
        if not node.static:
            unknown.update(unmodelled_ops(node, layer))
        kernels.place(index, node, layer)
        if layer.kind in COMPUTE_KINDS and (not layer.out_shape or layer.macs == 0):
            warnings.append(f"could not size {node.op} node {layer.name!r} (shape unknown); its cost is missing")
        layers.append(layer)
    unknown_sorted = sorted(unknown)
    if unknown_sorted:
        warnings.append(f"ops the extractor does not model: {', '.join(unknown_sorted)}; they were costed as "
                        "memory-bound copies of their tensors, so the prediction is less certain")
    if not any(layer.kind in COMPUTE_KINDS and layer.macs > 0 for layer in layers):
        raise HwAwareError("found no conv, linear or matmul layer whose size could be worked out; nothing to "
                           "predict (give input_shape if the input is symbolic)", mentions=("input_shape",))
    return GraphLayers(layers=layers, input_shape=graph.input_shape, unknown_ops=unknown_sorted, warnings=warnings)


def module_to_onnx(model: Any, input_shape: Sequence[int]) -> bytes:
    """Export a torch module to ONNX bytes with a random input of ``input_shape`` (batch included).

    Examples
    --------
    >>> import torch
    >>> [n.op_type for n in load_onnx(module_to_onnx(torch.nn.Conv2d(3, 4, 1), (1, 3, 8, 8))).graph.node]
    ['Conv']
    """
    import torch

    from nni_hwaware.spaces.export import module_to_onnx_bytes

    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise HwAwareError(f"input shape {shape} is not valid; give e.g. (1, 3, 224, 224)")
    try:
        return module_to_onnx_bytes(model, torch.randn(*shape))
    except HwAwareError:
        raise
    except Exception as exc:
        raise HwAwareError(f"exporting the module to ONNX failed ({type(exc).__name__}: {str(exc)[:200]}); "
                           "export it yourself and pass the ONNX file") from None


def layers_from_module(model: Any, input_shape: Sequence[int]) -> GraphLayers:
    """:func:`extract_layers` for a ``torch.nn.Module`` (exported to ONNX in memory, so features are identical).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> int(layers_from_module(net, (1, 3, 16, 16)).macs)  # 16*16*8*(27+1)
    57344
    """
    return extract_layers(module_to_onnx(model, input_shape), input_shape)


def convnet_onnx(arch: dict[str, Any], input_size: int, in_channels: int = 3, num_classes: int = 10) -> Any:
    """The ONNX graph of a convnet-space architecture without weight data (initializers carry dims only).

    Built directly with ``onnx.helper`` so that training on 12,500 dataset models needs no torch export of
    multi-hundred-MB linear layers; the weights are marked external, as in a real model whose data is absent.
    The graph is the one the torch export of the same architecture gives, layer for layer (a property test).

    Examples
    --------
    >>> arch = {"global": {"layer_type": "plain", "filters": 64},
    ...         "units": [{"depth": 1, "blocks": [{"kernel_size": 3, "padding": 1}]}]}
    >>> [n.op_type for n in convnet_onnx(arch, 50).graph.node]
    ['Conv', 'Relu', 'Flatten', 'Gemm']
    """
    from onnx import TensorProto, helper

    filters = int(arch["global"]["filters"])
    dws = arch["global"]["layer_type"] == "dws"
    nodes, inits = [], []
    counter = [0]

    def weight(dims: list[int]) -> str:
        counter[0] += 1
        name = f"w{counter[0]}"
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", "absent.data"
        inits.append(t)
        return name

    x, ch, w = "input", in_channels, input_size
    for i, block in enumerate(arch["units"][0]["blocks"]):
        k, pad = int(block["kernel_size"]), int(block["padding"])
        w = w - k + 2 * pad + 1
        convs = [(ch, ch, k, pad), (ch, filters, 1, 0)] if dws else [(ch, filters, k, pad)]
        for j, (cin, cout, kk, pp) in enumerate(convs):
            groups = cin if (dws and j == 0) else 1
            out = f"c{i}_{j}"
            nodes.append(helper.make_node(
                "Conv", [x, weight([cout, cin // groups, kk, kk]), weight([cout])], [out], name=f"conv{i}_{j}",
                kernel_shape=[kk, kk], pads=[pp] * 4, strides=[1, 1], group=groups))
            x = out
        nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
        x, ch = f"r{i}", filters
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", weight([num_classes, ch * w * w]), weight([num_classes])],
                                  ["output"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, in_channels,
                                                                                        input_size, input_size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, num_classes])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
