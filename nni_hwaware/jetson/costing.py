"""Per-op costing: what one ONNX node costs on its own, before TensorRT fuses anything.

Part (c) of the graph extractor (:mod:`nni_hwaware.jetson.graph` imports the graph, :mod:`.fusion` applies the
TensorRT fusion rules). This module holds the vocabulary both of them share:

* the op sets (which ONNX ops are convolutions, pointwise, pools, free views, ...) and the *kind* each op
  maps to (:data:`OP_KINDS`);
* :class:`Node`, one ONNX node with its tensors' shapes resolved (what graph import produces);
* :class:`Layer`, the per-layer record the features and the predictor read;
* :func:`cost_node`: the MACs, parameters and bytes (elements read and written) of one node.

MACs follow torchinfo: a conv or linear bias counts one MAC per output element. A node costed here as
``eltwise`` (batch-norm, activations, binary ops) is what runs when TensorRT gives it a kernel of its own;
:mod:`.fusion` turns it into ``fused`` when it folds into a neighbour's kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Layer kinds. Compute kinds have MACs; memory kinds move data; free kinds cost nothing at inference.
CONV, DWCONV, GCONV, DECONV, LINEAR, MATMUL = "conv", "dwconv", "gconv", "deconv", "linear", "matmul"
POOL, ELTWISE, RESIZE, SHUFFLE, REDUCE, UNKNOWN = "pool", "eltwise", "resize", "shuffle", "reduce", "unknown"
FUSED, FREE = "fused", "free"
COMPUTE_KINDS = (CONV, DWCONV, GCONV, DECONV, LINEAR, MATMUL)
MEMORY_KINDS = (POOL, ELTWISE, RESIZE, SHUFFLE, REDUCE, UNKNOWN)

ACTIVATIONS = frozenset({
    "Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus",
    "PRelu", "Celu", "Gelu", "Mish", "ThresholdedRelu", "Softsign", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Cast", "Not",
})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                    "Greater", "And", "Or", "Mod"})
POINTWISE = ACTIVATIONS | BINARY
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
                   "MaxUnpool", "MaxRoiPool", "RoiAlign"})
FREE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Constant",
                      "Size", "ConstantOfShape", "Gather", "Range", "Concat", "Expand", "NonZero", "Cast",
                      "CastLike", "QuantizeLinear", "DequantizeLinear"})
SHUFFLES = frozenset({"Transpose", "Slice", "Split", "Pad", "Tile", "DepthToSpace", "SpaceToDepth",
                      "GatherElements", "ScatterND", "ScatterElements"})
REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ReduceL1",
                     "ReduceLogSumExp", "ReduceSumSquare", "Softmax", "LogSoftmax", "LayerNormalization",
                     "InstanceNormalization", "GroupNormalization", "LRN", "ArgMax", "ArgMin", "TopK",
                     "MeanVarianceNormalization", "Hardmax", "CumSum"})
RESIZES = frozenset({"Resize", "Upsample"})
CONVS = frozenset({"Conv", "ConvTranspose"})
MATMULS = frozenset({"Gemm", "MatMul", "Einsum"})
BATCH_NORM = "BatchNormalization"
KNOWN_OPS = CONVS | MATMULS | {BATCH_NORM} | POINTWISE | POOLS | FREE_OPS | SHUFFLES | REDUCES | RESIZES
STANDARD_DOMAINS = ("", "ai.onnx")

# The kind of a node that runs as a kernel of its own, by op. Later rows win: ``Cast`` is both pointwise and
# free, and is costed as pointwise. Convolutions and matmuls are missing on purpose: their kind depends on
# their shapes (see :func:`cost_node`), and one whose shapes are unknown is ``unknown``.
_KIND_ROWS: tuple[tuple[frozenset[str], str], ...] = (
    (REDUCES, REDUCE),
    (SHUFFLES, SHUFFLE),
    (RESIZES, RESIZE),
    (POOLS, POOL),
    (FREE_OPS, FREE),
    (POINTWISE | {BATCH_NORM}, ELTWISE),
)
OP_KINDS: Mapping[str, str] = {op: kind for ops, kind in _KIND_ROWS for op in ops}


@dataclass
class Node:
    """One ONNX node with the shapes of its tensors resolved: what graph import hands to costing and fusion.

    Parameters
    ----------
    name, op, domain
        Layer name (the node's, else ``"<op>_<index>"``), ONNX op type and domain.
    inputs, outputs
        Tensor names (an optional input left out is ``""``).
    attrs
        Attribute values, decoded (``kernel_shape`` -> list of ints, ``auto_pad`` -> bytes, ...).
    in_shapes, out_shape
        Shape of each input (``None`` where unknown) and of the first output.
    act_inputs
        The inputs that are activations, not weights or constants.
    static
        Whether the output is known when the engine is built (weights, shapes and arithmetic on them).
    readers
        For each input tensor: how many node inputs of the whole graph read it.
    graph_outputs
        Those inputs that are also outputs of the graph.

    Examples
    --------
    >>> x = Node("relu", "Relu", ("c",), ("r",), in_shapes=[[1, 8, 4, 4]], out_shape=[1, 8, 4, 4],
    ...          act_inputs=("c",), readers={"c": 1})
    >>> x.sole_reader("c"), x.shape_of("c")
    (True, [1, 8, 4, 4])
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    in_shapes: list[list[int] | None] = field(default_factory=list)
    out_shape: list[int] | None = None
    act_inputs: tuple[str, ...] = ()
    domain: str = ""
    static: bool = False
    readers: dict[str, int] = field(default_factory=dict)
    graph_outputs: frozenset[str] = frozenset()

    def shape_of(self, tensor: str) -> list[int] | None:
        """Shape of one of this node's inputs (``None`` when unknown or not an input)."""
        index = self.inputs.index(tensor) if tensor in self.inputs else len(self.in_shapes)
        return self.in_shapes[index] if index < len(self.in_shapes) else None

    def sole_reader(self, tensor: str) -> bool:
        """Whether this node alone reads ``tensor`` and it is no graph output: only then can TensorRT fold this
        node into the kernel that produces the tensor."""
        return self.readers.get(tensor, 0) == 1 and tensor not in self.graph_outputs


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

    Examples
    --------
    >>> Layer("fc", "Gemm", LINEAR, macs=330.0).as_dict()["macs"]
    330.0
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
        """All fields as a plain dict."""
        return asdict(self)


def numel(shape: Sequence[int] | None) -> float:
    """Number of elements of a shape; 0 when the shape is unknown or a scalar's.

    Examples
    --------
    >>> numel([1, 8, 4, 4]), numel(None), numel([])
    (128.0, 0.0, 0.0)
    """
    return float(math.prod(shape)) if shape else 0.0


def conv_out_shape(attrs: Mapping[str, Any], x: list[int], w: list[int], transpose: bool) -> list[int] | None:
    """Output shape of a (transposed) convolution, or ``None`` when ``x`` or ``w`` has no spatial dims.

    Examples
    --------
    >>> conv_out_shape({"pads": [1, 1, 1, 1], "strides": [2, 2]}, [1, 3, 32, 32], [16, 3, 3, 3], False)
    [1, 16, 16, 16]
    >>> conv_out_shape({"strides": [2, 2]}, [1, 8, 8, 8], [8, 4, 2, 2], True)
    [1, 4, 16, 16]
    """
    if len(x) < 3 or len(w) < 3:
        return None
    spatial = len(x) - 2
    kernel = list(attrs.get("kernel_shape", w[2:]))
    strides = list(attrs.get("strides", [1] * spatial))
    dil = list(attrs.get("dilations", [1] * spatial))
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    groups = int(attrs.get("group", 1))
    out = [x[0], w[1] * groups if transpose else w[0]]
    for i in range(spatial):
        k_eff = (kernel[i] - 1) * dil[i] + 1
        if transpose:
            out_pad = list(attrs.get("output_padding", [0] * spatial))
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


# ------------------------------------------------------------------------------------------- per-op costs
def _cost_conv(node: Node, layer: Layer) -> bool:
    """Conv / ConvTranspose: MACs over the output (input for transposed), weights plus bias."""
    ins = node.in_shapes
    if not (len(ins) > 1 and ins[1] and ins[0]):
        return False
    x, w = ins[0], ins[1]
    groups = int(node.attrs.get("group", 1))
    kernel = [int(v) for v in node.attrs.get("kernel_shape", w[2:])] or [1]
    strides = [int(v) for v in node.attrs.get("strides", [1] * len(kernel))]
    transpose = node.op == "ConvTranspose"
    in_ch = x[1]
    out_ch = w[1] * groups if transpose else w[0]
    weight = numel(w)
    bias = len(node.inputs) > 2 and bool(node.inputs[2])
    out_shape = node.out_shape if node.out_shape is not None else conv_out_shape(node.attrs, x, w, transpose)
    out_elems = numel(out_shape)
    if transpose:
        macs = numel(x) * out_ch / groups * math.prod(kernel)
    else:
        macs = out_elems * (in_ch / groups) * math.prod(kernel)
    kind = DECONV if transpose else (DWCONV if groups == in_ch and groups > 1 else GCONV if groups > 1 else CONV)
    layer.kind, layer.kernel, layer.stride, layer.groups = kind, max(kernel), max(strides), groups
    layer.macs = macs + (out_elems if bias else 0.0)
    layer.params = layer.weight_elems = weight + (out_ch if bias else 0)
    layer.out_elems, layer.out_shape = out_elems, list(out_shape or [])
    return True


def _cost_matmul(node: Node, layer: Layer) -> bool:
    """Gemm / MatMul / Einsum: ``linear`` when an operand is a weight, else ``matmul`` (Einsum: no MACs)."""
    ins = node.in_shapes
    if not ins or ins[0] is None:
        return False
    a, b = ins[0], ins[1] if len(ins) > 1 else None
    if node.op == "Gemm" and b:
        k = a[0] if int(node.attrs.get("transA", 0)) else a[-1]
        n = b[0] if int(node.attrs.get("transB", 0)) else b[1]
        macs = numel(a) / max(1, k) * k * n
    elif node.op == "MatMul" and b:
        macs = layer.out_elems * a[-1]
    else:
        macs = 0.0
    act = set(node.act_inputs)
    weights = [s for i, s in zip(node.inputs, ins) if i and i not in act]
    bias_elems = layer.out_elems if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] else 0.0
    layer.kind = LINEAR if weights else MATMUL
    layer.macs = macs + bias_elems
    layer.params = layer.weight_elems = float(sum(numel(s) for s in weights))
    return True


def _cost_batch_norm(node: Node, layer: Layer) -> bool:
    """BatchNormalization: a scale and a shift per channel; read as weights when it runs on its own."""
    scale = node.in_shapes[1] if len(node.in_shapes) > 1 else None
    layer.kind = ELTWISE
    layer.params = layer.weight_elems = 2.0 * (scale[0] if scale else 0)
    return True


def _cost_pool(node: Node, layer: Layer) -> bool:
    """Pools: memory-bound, with the kernel and stride the features bucket by."""
    k = node.attrs.get("kernel_shape", [])
    layer.kind = POOL
    layer.kernel = int(max(k)) if k else 0
    layer.stride = int(max(node.attrs.get("strides", [1])))
    return True


def _cost_free(node: Node, layer: Layer) -> bool:
    """Reshapes, concatenations, quantize markers...: no kernel, no traffic of their own."""
    layer.kind, layer.launches, layer.in_elems, layer.out_elems = FREE, False, 0.0, 0.0
    return True


# Op -> costing function, by the kind the op maps to. A function returns False when the node's shapes are
# unknown; the layer then stays ``unknown`` (a memory-bound guess on its tensors).
_COSTERS_BY_OP: Mapping[str, Callable[[Node, Layer], bool]] = {
    **dict.fromkeys(CONVS, _cost_conv), **dict.fromkeys(MATMULS, _cost_matmul), BATCH_NORM: _cost_batch_norm}
_COSTERS_BY_KIND: Mapping[str, Callable[[Node, Layer], bool]] = {POOL: _cost_pool, FREE: _cost_free}


def cost_node(node: Node) -> Layer:
    """The layer one node makes when it runs alone: kind, MACs, parameters and elements moved.

    A ``static`` node (computed when the engine is built) is free and carries nothing else.

    Examples
    --------
    >>> conv = Node("c", "Conv", ("x", "w", "b"), ("y",), attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    ...             in_shapes=[[1, 3, 16, 16], [8, 3, 3, 3], [8]], out_shape=[1, 8, 16, 16], act_inputs=("x",))
    >>> layer = cost_node(conv)
    >>> layer.kind, int(layer.macs), layer.params, layer.in_elems, layer.out_elems   # 16*16*8*(27+1)
    ('conv', 57344, 224.0, 768.0, 2048.0)
    >>> cost_node(Node("r", "Reshape", ("y", "s"), ("z",), act_inputs=("y",))).kind
    'free'
    """
    if node.static:
        return Layer(name=node.name, op=node.op, kind=FREE, launches=False)
    acts = node.act_inputs
    layer = Layer(name=node.name, op=node.op, kind=UNKNOWN, out_shape=list(node.out_shape or []),
                  in_elems=float(sum(numel(node.shape_of(i)) for i in acts)), out_elems=numel(node.out_shape),
                  in_shape=list(node.shape_of(acts[0]) or []) if acts else [])
    kind = OP_KINDS.get(node.op, UNKNOWN)
    coster = _COSTERS_BY_OP.get(node.op) or _COSTERS_BY_KIND.get(kind)
    if coster is None or not coster(node, layer):
        layer.kind = UNKNOWN if node.op in _COSTERS_BY_OP else kind
    return layer


def unmodelled_ops(node: Node, layer: Layer) -> list[str]:
    """Names of what the costing does not model in this node (for the warning and ``unknown_ops``).

    Examples
    --------
    >>> unmodelled_ops(Node("n", "NonMaxSuppression", ("b",), ("o",)), Layer("n", "NonMaxSuppression", UNKNOWN))
    ['NonMaxSuppression']
    >>> unmodelled_ops(Node("n", "Foo", (), ("o",), domain="com.x"), Layer("n", "Foo", UNKNOWN))
    ['com.x.Foo']
    """
    names = []
    if node.domain not in STANDARD_DOMAINS or node.op not in KNOWN_OPS:
        names.append(node.op if node.domain in STANDARD_DOMAINS else f"{node.domain}.{node.op}")
    if node.op == "Einsum" and layer.kind in (LINEAR, MATMUL):  # sized as a matmul but its MACs are not modelled
        names.append(node.op)
    return names
