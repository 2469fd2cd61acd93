"""Per-layer description of any CNN, read from its ONNX graph alone (weights are never needed).

One extractor serves every input: an ONNX file (loaded with ``load_external_data=False``, so models whose
weights live in a missing external file work), ONNX bytes, or a ``torch.nn.Module`` exported to ONNX in memory.
Shapes come from ``onnx.shape_inference`` and the graph's ``value_info``/initializer dims, with a fallback
propagation for the common ops so that one unknown op does not blind the rest of the graph.

Each compute node becomes a :class:`Layer` (MACs, parameters, activation and weight elements, kernel, op kind)
and the graph is rewritten the way TensorRT executes it at inference: batch-norm folded into the preceding
conv/linear, ReLU/ReLU6 and a following residual add fused into the conv epilogue, every other pointwise op
(SiLU's ``x * sigmoid(x)``, HardSwish, the squeeze-excite scale, ...) in a PointWise kernel of its own that
chains its neighbours, reshapes and concatenations free. The ``launches`` field says whether a layer is its
own kernel launch. MACs follow torchinfo: a conv or linear bias counts one MAC per output element.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError

# Layer kinds. Compute kinds have MACs; memory kinds move data; free kinds cost nothing at inference.
CONV, DWCONV, GCONV, DECONV, LINEAR, MATMUL = "conv", "dwconv", "gconv", "deconv", "linear", "matmul"
POOL, ELTWISE, RESIZE, SHUFFLE, REDUCE, UNKNOWN = "pool", "eltwise", "resize", "shuffle", "reduce", "unknown"
FUSED, FREE = "fused", "free"
COMPUTE_KINDS = (CONV, DWCONV, GCONV, DECONV, LINEAR, MATMUL)
MEMORY_KINDS = (POOL, ELTWISE, RESIZE, SHUFFLE, REDUCE, UNKNOWN)

_ACTIVATIONS = {
    "Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus",
    "PRelu", "Celu", "Gelu", "Mish", "ThresholdedRelu", "Softsign", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Cast", "Not",
}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater",
           "And", "Or", "Mod"}
_POOLS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxUnpool",
          "MaxRoiPool", "RoiAlign"}
_FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Constant", "Size",
         "ConstantOfShape", "Gather", "Range", "Concat", "Expand", "NonZero", "Cast", "CastLike",
         "QuantizeLinear", "DequantizeLinear"}
_SHUFFLES = {"Transpose", "Slice", "Split", "Pad", "Tile", "DepthToSpace", "SpaceToDepth", "GatherElements",
             "ScatterND", "ScatterElements"}
_REDUCES = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ReduceL1",
            "ReduceLogSumExp", "ReduceSumSquare", "Softmax", "LogSoftmax", "LayerNormalization",
            "InstanceNormalization", "GroupNormalization", "LRN", "ArgMax", "ArgMin", "TopK",
            "MeanVarianceNormalization", "Hardmax", "CumSum"}
_RESIZES = {"Resize", "Upsample"}
# Activations TensorRT fuses into the epilogue of the conv/linear kernel that produces their input.
_EPILOGUE_ACTIVATIONS = {"Relu", "Clip"}
KNOWN_OPS = ({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Einsum"} | _ACTIVATIONS
             | _BINARY | _POOLS | _FREE | _SHUFFLES | _REDUCES | _RESIZES)


@dataclass
class Layer:
    """One node of the graph as TensorRT would run it.

    Parameters
    ----------
    name, op
        Node name and ONNX op type.
    kind
        One of the ``*_KINDS`` above, ``fused`` (absorbed into a neighbour's kernel) or ``free``.
    kernel, stride, groups
        Conv geometry (``kernel`` is the larger side; 0 for non-conv layers).
    macs, params
        Multiply-accumulates (torchinfo convention) and trainable parameters.
    in_elems, out_elems, weight_elems
        Elements read from activations, written, and read from weights.
    launches
        Whether the layer is its own GPU kernel (fused and free layers are not).
    out_shape, in_shape
        Output shape and the shape of the first activation input (empty when unknown).
    """

    name: str
    op: str
    kind: str
    kernel: int = 0
    stride: int = 1
    groups: int = 1
    macs: float = 0.0
    params: float = 0.0
    in_elems: float = 0.0
    out_elems: float = 0.0
    weight_elems: float = 0.0
    launches: bool = True
    out_shape: list[int] = field(default_factory=list)
    in_shape: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraphLayers:
    """All layers of a graph plus what the extractor could not handle."""

    layers: list[Layer]
    input_shape: list[int]
    unknown_ops: list[str]
    warnings: list[str]

    @property
    def macs(self) -> float:
        return float(sum(layer.macs for layer in self.layers))

    @property
    def params(self) -> float:
        return float(sum(layer.params for layer in self.layers))


# ----------------------------------------------------------------------------------------------- loading
def load_onnx(source: str | Path | bytes) -> Any:
    """Load an ONNX model without its weights' external data; clear error on a missing or corrupt file."""
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
            raise HwAwareError(f"--input-shape has {len(shape)} dims but the model input {first.name!r} has "
                               f"{len(dims)}; give e.g. 1,3,224,224")
    else:
        if dims is None:
            raise HwAwareError(f"the model input {first.name!r} has no shape; pass the input shape "
                               "(--input-shape 1,3,224,224)")
        shape = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(1)  # batch 1, as measured
            else:
                raise HwAwareError(f"the model input {first.name!r} has a symbolic dimension {d!r} at axis {i}; "
                                   "pass the input shape (--input-shape 1,3,224,224)")
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


# ---------------------------------------------------------------------------------------------- extract
class _Graph:
    """Shapes, constants and producers/consumers of one graph."""

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
        self.consumers: dict[str, list[Any]] = {}
        self.producer: dict[str, Any] = {}
        for node in g.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
            for o in node.output:
                self.producer[o] = node
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.initializers.add(node.output[0])
                        arr = numpy_helper.to_array(a.t)
                        self.shapes[node.output[0]] = list(arr.shape)
                        if arr.size <= 64:
                            self.constants[node.output[0]] = arr
        self.graph_outputs = {o.name for o in g.output}

    def shape(self, name: str) -> list[int] | None:
        return self.shapes.get(name) if name else None

    def sole_reader(self, name: str) -> bool:
        """Whether one node alone reads this tensor (and it is no graph output): only then can TensorRT fold
        the reader into the producing kernel."""
        return len(self.consumers.get(name, [])) == 1 and name not in self.graph_outputs

    def is_weight(self, name: str) -> bool:
        """An initializer or a constant (possibly behind a Cast/DequantizeLinear/Identity)."""
        seen = 0
        while name and seen < 4:
            if name in self.initializers:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Cast", "DequantizeLinear", "Identity", "Transpose",
                                                    "Reshape", "Unsqueeze"):
                return False
            name, seen = node.input[0], seen + 1
        return False


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _numel(shape: Sequence[int] | None) -> float:
    return float(math.prod(shape)) if shape else 0.0


def _conv_out_shape(node: Any, x: list[int], w: list[int], transpose: bool) -> list[int] | None:
    if len(x) < 3 or len(w) < 3:
        return None
    spatial = len(x) - 2
    kernel = list(_attr(node, "kernel_shape", w[2:]))
    strides = list(_attr(node, "strides", [1] * spatial))
    dil = list(_attr(node, "dilations", [1] * spatial))
    pads = list(_attr(node, "pads", [0] * (2 * spatial)))
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    groups = int(_attr(node, "group", 1))
    out = [x[0], w[1] * groups if transpose else w[0]]
    for i in range(spatial):
        k_eff = (kernel[i] - 1) * dil[i] + 1
        if transpose:
            out_pad = list(_attr(node, "output_padding", [0] * spatial))
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out.append(x[2 + i] * strides[i])
            else:
                out.append((x[2 + i] - 1) * strides[i] + k_eff - pads[i] - pads[i + spatial] + out_pad[i])
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-x[2 + i] // strides[i]))
        elif auto_pad == "VALID":
            out.append((x[2 + i] - k_eff) // strides[i] + 1)
        else:
            out.append((x[2 + i] + pads[i] + pads[i + spatial] - k_eff) // strides[i] + 1)
    return out


def _broadcast(shapes: list[list[int]]) -> list[int]:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        out.append(max(dims))
    return out


def _fallback_shape(node: Any, g: _Graph) -> list[int] | None:
    """Output shape of the first output when shape inference left it unknown (common ops only)."""
    op = node.op_type
    ins = [g.shape(i) for i in node.input]
    x = ins[0] if ins else None
    if x is None:
        return None
    if op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1]:
        return _conv_out_shape(node, x, ins[1], op == "ConvTranspose")
    if op in ("MaxPool", "AveragePool", "LpPool"):
        k = list(_attr(node, "kernel_shape", [1, 1]))
        fake_w = [x[1], 1, *k]
        out = _conv_out_shape(node, x, fake_w, False)
        if out is not None:
            out[1] = x[1]
        return out
    if op.startswith("Global"):
        return [*x[:2], *([1] * (len(x) - 2))]
    if op == "Flatten":
        axis = int(_attr(node, "axis", 1))
        return [int(math.prod(x[:axis])), int(math.prod(x[axis:]))]
    if op in ("Gemm",) and len(ins) > 1 and ins[1]:
        trans_b = int(_attr(node, "transB", 0))
        return [x[0], ins[1][0] if trans_b else ins[1][1]]
    if op == "MatMul" and len(ins) > 1 and ins[1]:
        return [*x[:-1], ins[1][-1]]
    if op in _BINARY and all(s is not None for s in ins):
        return _broadcast([s for s in ins if s is not None])
    if op == "Concat" and all(s is not None for s in ins):
        axis = int(_attr(node, "axis", 1)) % len(x)
        out = list(x)
        out[axis] = sum(s[axis] for s in ins if s is not None)
        return out
    if op == "Reshape" and len(node.input) > 1 and node.input[1] in g.constants:
        target = [int(v) for v in g.constants[node.input[1]].ravel()]
        target = [x[i] if v == 0 and i < len(x) else v for i, v in enumerate(target)]
        if target.count(-1) == 1:
            known = math.prod(v for v in target if v != -1)
            target[target.index(-1)] = int(_numel(x) // max(1, known))
        return target
    if op in _RESIZES:
        for inp in node.input[1:][::-1]:
            arr = g.constants.get(inp)
            if arr is not None and arr.size == len(x):
                if arr.dtype.kind == "f":
                    return [int(math.floor(d * s)) for d, s in zip(x, arr.ravel())]
                return [int(v) for v in arr.ravel()]
        return None
    if op == "Transpose":
        perm = list(_attr(node, "perm", list(range(len(x)))[::-1]))
        return [x[p] for p in perm]
    # Activations, normalisations, unknown ops: assume the output has the input's shape.
    return list(x)


def _pointwise_owner(node: Any, g: _Graph, owner_of: dict[str, int], layers: list[Layer],
                     group_inputs: dict[int, set[str]]) -> int | None:
    """Index of the kernel that absorbs this pointwise node, if any.

    TensorRT (8.x, as on the Jetson Nano) fuses only ReLU and Clip (ReLU6) into a conv/linear epilogue, and
    only when nothing else reads the conv output. Every other pointwise op (Sigmoid, the ``x * sigmoid(x)`` of
    SiLU/Swish, HardSwish, LeakyReLU, ...) runs in a separate *PointWise* kernel, and TensorRT chains adjacent
    pointwise ops into one such kernel as long as each op reads only the chain's own tensors or its inputs.
    """
    act_inputs = [i for i in node.input if i and not g.is_weight(i)]
    if not act_inputs:
        return None
    owners = {owner_of.get(i) for i in act_inputs}
    owner = owners.pop() if len(owners) == 1 else None
    if owner is not None:
        if layers[owner].kind in COMPUTE_KINDS:
            fusable = node.op_type in _EPILOGUE_ACTIVATIONS and all(g.sole_reader(i) for i in act_inputs)
            return owner if fusable else None
        if layers[owner].kind == ELTWISE:
            return owner
        return None
    for group in {owner_of[i] for i in act_inputs if i in owner_of and layers[owner_of[i]].kind == ELTWISE}:
        if all(owner_of.get(i) == group or i in group_inputs.get(group, ()) for i in act_inputs):
            return group
    return None


def extract_layers(model_or_source: Any, input_shape: Sequence[int] | None = None) -> GraphLayers:
    """Describe every layer of an ONNX model (a ModelProto, a path or bytes) as TensorRT runs it.

    Parameters
    ----------
    model_or_source
        ``onnx.ModelProto``, path to an ``.onnx`` file (external weights need not exist) or ONNX bytes.
    input_shape
        Shape of the (first) input, e.g. ``(1, 3, 224, 224)``; needed only when the graph's is symbolic.

    Examples
    --------
    >>> import torch
    >>> from nni_hwaware.jetson.graph import layers_from_module
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> int(layers_from_module(net, (1, 3, 16, 16)).macs)  # 16*16*8*(27+1)
    57344
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
    g = _Graph(model)
    layers: list[Layer] = []
    unknown: list[str] = []
    owner_of: dict[str, int] = {}  # tensor -> index of the layer whose kernel produced it (fusion target)
    fused_add: set[int] = set()
    group_inputs: dict[int, set[str]] = {}  # pointwise kernel -> the tensors it reads
    # Tensors known when the engine is built (weights, constants, shapes and arithmetic on them): TensorRT
    # folds the nodes that compute them, so they cost nothing at inference.
    static: set[str] = set(g.initializers)
    for node in model.graph.node:
        op = node.op_type
        if op == "Shape" or (node.input and all((not i) or i in static for i in node.input)):
            static.update(o for o in node.output if o)
            layers.append(Layer(name=node.name or f"{op}_{len(layers)}", op=op, kind=FREE, launches=False))
            continue
        if node.domain not in ("", "ai.onnx") or op not in KNOWN_OPS:
            unknown.append(op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}")
        for out in node.output[:1]:
            if out and out not in g.shapes:
                s = _fallback_shape(node, g)
                if s is not None and all(isinstance(v, int) and v >= 0 for v in s):
                    g.shapes[out] = s
        out_shape = g.shape(node.output[0]) if node.output else None
        ins = [g.shape(i) for i in node.input]
        act_in = [i for i in node.input if i and not g.is_weight(i)]
        in_elems = float(sum(_numel(g.shape(i)) for i in act_in))
        out_elems = _numel(out_shape)
        layer = Layer(name=node.name or f"{op}_{len(layers)}", op=op, kind=UNKNOWN, in_elems=in_elems,
                      out_elems=out_elems, out_shape=list(out_shape or []),
                      in_shape=list(g.shape(act_in[0]) or []) if act_in else [])
        if op in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1] and ins[0]:
            w = ins[1]
            groups = int(_attr(node, "group", 1))
            kernel = [int(v) for v in _attr(node, "kernel_shape", w[2:])] or [1]
            strides = [int(v) for v in _attr(node, "strides", [1] * len(kernel))]
            transpose = op == "ConvTranspose"
            in_ch = ins[0][1]
            out_ch = w[1] * groups if transpose else w[0]
            weight = _numel(w)
            bias = len(node.input) > 2 and bool(node.input[2])
            if out_shape is None:
                out_shape = _conv_out_shape(node, ins[0], w, transpose)
                out_elems = _numel(out_shape)
            if transpose:
                macs = _numel(ins[0]) * out_ch / groups * math.prod(kernel)
            else:
                macs = out_elems * (in_ch / groups) * math.prod(kernel)
            kind = DECONV if transpose else (DWCONV if groups == in_ch and groups > 1 else
                                             GCONV if groups > 1 else CONV)
            layer.kind, layer.kernel, layer.stride, layer.groups = kind, max(kernel), max(strides), groups
            layer.macs = macs + (out_elems if bias else 0.0)
            layer.params = weight + (out_ch if bias else 0)
            layer.weight_elems = weight + (out_ch if bias else 0)
            layer.out_elems, layer.out_shape = out_elems, list(out_shape or [])
        elif op in ("Gemm", "MatMul", "Einsum") and ins and ins[0] is not None:
            weights = [i for i in node.input if i and g.is_weight(i)]
            a = ins[0]
            b = ins[1] if len(ins) > 1 else None
            if op == "Gemm" and b:
                k = a[0] if int(_attr(node, "transA", 0)) else a[-1]
                n = b[0] if int(_attr(node, "transB", 0)) else b[1]
                rows = _numel(a) / max(1, k)
                macs = rows * k * n
            elif op == "MatMul" and b:
                k = a[-1]
                macs = out_elems * k
            else:
                macs = 0.0
                unknown.append(op) if op == "Einsum" and op not in unknown else None
            w_elems = float(sum(_numel(g.shape(i)) for i in weights))
            bias_elems = out_elems if op == "Gemm" and len(node.input) > 2 and node.input[2] else 0.0
            layer.kind = LINEAR if weights else MATMUL
            layer.macs = macs + bias_elems
            layer.params = layer.weight_elems = w_elems
        elif op == "BatchNormalization":
            src = node.input[0]
            owner = owner_of.get(src)
            scale_shift = 2.0 * (ins[1][0] if len(ins) > 1 and ins[1] else 0)
            layer.params = scale_shift
            if owner is not None and layers[owner].kind in COMPUTE_KINDS and len(g.consumers.get(src, [])) == 1:
                # folded into the conv's weights when the engine is built: no kernel, no traffic of its own
                layer.kind, layer.launches, layer.in_elems, layer.out_elems = FUSED, False, 0.0, 0.0
                owner_of[node.output[0]] = owner
            else:
                layer.kind, layer.weight_elems = ELTWISE, scale_shift
                group_inputs[len(layers)] = {src}
                owner_of[node.output[0]] = len(layers)
        elif op in _ACTIVATIONS or op in _BINARY:
            owner = _pointwise_owner(node, g, owner_of, layers, group_inputs)
            if owner is not None:
                layer.kind, layer.launches = FUSED, False
                layer.in_elems = layer.out_elems = 0.0  # operands already sit in the owning kernel's registers
                owner_of[node.output[0]] = owner
            else:
                # a residual add right after a conv/linear that nothing else reads: fused into its epilogue,
                # reads one extra tensor
                compute_owner = [owner_of[i] for i in act_in if i in owner_of
                                 and layers[owner_of[i]].kind in COMPUTE_KINDS and owner_of[i] not in fused_add
                                 and g.sole_reader(i)]
                if op in ("Add", "Sum", "Max", "Min") and len(act_in) == 2 and compute_owner:
                    p = compute_owner[-1]
                    fused_add.add(p)
                    other = act_in[0] if owner_of.get(act_in[1]) == p else act_in[1]
                    layer.kind, layer.launches = FUSED, False
                    layer.in_elems = _numel(g.shape(other))
                    layer.out_elems = 0.0
                    owner_of[node.output[0]] = p
                else:
                    layer.kind = ELTWISE  # a PointWise kernel of its own
                    group_inputs[len(layers)] = set(act_in)
                    owner_of[node.output[0]] = len(layers)
        elif op in _FREE:
            layer.kind, layer.launches, layer.in_elems, layer.out_elems = FREE, False, 0.0, 0.0
            if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast") and \
                    node.input and node.input[0] in owner_of:
                owner_of[node.output[0]] = owner_of[node.input[0]]
        elif op in _POOLS:
            layer.kind = POOL
            k = _attr(node, "kernel_shape", [])
            layer.kernel = int(max(k)) if k else 0
            layer.stride = int(max(_attr(node, "strides", [1])))
        elif op in _RESIZES:
            layer.kind = RESIZE
        elif op in _SHUFFLES:
            layer.kind = SHUFFLE
        elif op in _REDUCES:
            layer.kind = REDUCE
        else:
            layer.kind = UNKNOWN  # memory-bound guess on its tensors; the result is flagged as less certain
        if not layer.out_shape and out_shape:
            layer.out_shape = list(out_shape)
        if layer.kind in COMPUTE_KINDS:
            owner_of[node.output[0]] = len(layers)
        if layer.kind in COMPUTE_KINDS and (out_shape is None or layer.macs == 0):
            warnings.append(f"could not size {op} node {layer.name!r} (shape unknown); its cost is missing")
        layers.append(layer)
    unknown_sorted = sorted(set(unknown))
    if unknown_sorted:
        warnings.append(f"ops the extractor does not model: {', '.join(unknown_sorted)}; they were costed as "
                        "memory-bound copies of their tensors, so the prediction is less certain")
    if not any(layer.kind in COMPUTE_KINDS and layer.macs > 0 for layer in layers):
        raise HwAwareError("found no conv, linear or matmul layer whose size could be worked out; nothing to "
                           "predict (give --input-shape if the input is symbolic)")
    return GraphLayers(layers=layers, input_shape=shape, unknown_ops=unknown_sorted, warnings=warnings)


def module_to_onnx(model: Any, input_shape: Sequence[int]) -> bytes:
    """Export a torch module to ONNX bytes with a random input of ``input_shape`` (batch included)."""
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
    """:func:`extract_layers` for a ``torch.nn.Module`` (exported to ONNX in memory, so features are identical)."""
    return extract_layers(module_to_onnx(model, input_shape), input_shape)


def convnet_onnx(arch: dict[str, Any], input_size: int, in_channels: int = 3, num_classes: int = 10) -> Any:
    """The ONNX graph of a convnet-space architecture without weight data (initializers carry dims only).

    Built directly with ``onnx.helper`` so that training on 12,500 dataset models needs no torch export of
    multi-hundred-MB linear layers; the weights are marked external, as in a real model whose data is absent.
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
