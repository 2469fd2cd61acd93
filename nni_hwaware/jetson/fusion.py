"""TensorRT's layer fusion, as a table of rules: which nodes fold into which neighbour's kernel.

Part (b) of the graph extractor (:mod:`nni_hwaware.jetson.graph` imports the graph, :mod:`.costing` costs each
node alone). As in nn-Meter's kernel detector, the fusions are data (:data:`TENSORRT_RULES`, one
:class:`FusionRule` a row) and one small interpreter (:class:`KernelMap`) applies them to the nodes in graph
order. The rules are those of TensorRT 8.x as on the Jetson Nano:

* batch-norm is folded into the weights of the conv/linear before it, when nothing else reads the conv;
* only ReLU and Clip (ReLU6) fuse into a conv/linear epilogue, and only when nothing else reads the conv output;
* every other pointwise op (SiLU's ``x * sigmoid(x)``, HardSwish, the squeeze-excite scale, ...) runs in a
  *PointWise* kernel, which chains the pointwise ops after it as long as each reads only the chain's own
  tensors or its inputs;
* a residual add (or max/min) right after a conv/linear that nothing else reads fuses into its epilogue, once
  per conv, and reads the other operand.

A batch-norm or pointwise node no rule absorbs is a PointWise kernel of its own; reshapes and other views are
free and pass the kernel of their input on (so a ReLU after a Flatten still fuses into the Gemm).

To model another engine, pass another table to :class:`KernelMap`.

Examples
--------
>>> [rule.name for rule in TENSORRT_RULES]   # first match wins
['conv+batchnorm', 'conv+relu', 'pointwise+pointwise', 'conv+add']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from nni_hwaware.jetson.costing import (
    BATCH_NORM,
    COMPUTE_KINDS,
    ELTWISE,
    FREE,
    FUSED,
    POINTWISE,
    Layer,
    Node,
    numel,
)

# Where the producing kernel is looked for:
#   "first":  the kernel that produced the node's first input;
#   "shared": the one kernel that produced every activation input;
#   "chain":  a kernel that produced or reads every activation input;
#   "pair":   exactly two activation inputs; the last that a kernel of ``into`` produced.
Operands = Literal["first", "shared", "chain", "pair"]
# Who else may read the tensor the node takes from that kernel: "one" (no other node), "sole" (no other node
# and it is no graph output), "any".
Readers = Literal["one", "sole", "any"]


@dataclass(frozen=True)
class FusionRule:
    """One row of the fusion table: a node of ``ops`` folds into a kernel of kind ``into``.

    Parameters
    ----------
    name
        Short name, ``<kernel>+<node>``.
    ops
        ONNX ops the rule absorbs.
    into
        Kinds of the kernel that absorbs them.
    operands
        How the absorbing kernel is found from the node's inputs (see ``Operands``).
    readers
        Who else may read the tensor taken from that kernel (see ``Readers``).
    reads_other
        The fused node still reads its other operand (a residual add); otherwise it moves nothing.
    once_per_kernel
        A kernel absorbs at most one node by this rule.
    """

    name: str
    ops: frozenset[str]
    into: frozenset[str]
    operands: Operands
    readers: Readers
    reads_other: bool = False
    once_per_kernel: bool = False


TENSORRT_RULES: tuple[FusionRule, ...] = (
    FusionRule("conv+batchnorm", frozenset({BATCH_NORM}), frozenset(COMPUTE_KINDS), "first", "one"),
    FusionRule("conv+relu", frozenset({"Relu", "Clip"}), frozenset(COMPUTE_KINDS), "shared", "sole"),
    FusionRule("pointwise+pointwise", POINTWISE, frozenset({ELTWISE}), "chain", "any"),
    FusionRule("conv+add", frozenset({"Add", "Sum", "Max", "Min"}), frozenset(COMPUTE_KINDS), "pair", "sole",
               reads_other=True, once_per_kernel=True),
)

# Free ops that are views of their first input: the value stays in the kernel that produced it.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


class KernelMap:
    """Applies fusion rules to the layers of one graph, in graph order, and tracks which kernel holds each tensor.

    Parameters
    ----------
    rules
        The fusion table, first match wins (default: TensorRT 8.x).

    Examples
    --------
    >>> from nni_hwaware.jetson.costing import cost_node
    >>> conv = Node("c", "Conv", ("x", "w"), ("y",), in_shapes=[[1, 3, 8, 8], [8, 3, 1, 1]],
    ...             out_shape=[1, 8, 8, 8], act_inputs=("x",))
    >>> relu = Node("r", "Relu", ("y",), ("z",), in_shapes=[[1, 8, 8, 8]], out_shape=[1, 8, 8, 8],
    ...             act_inputs=("y",), readers={"y": 1})
    >>> kernels = KernelMap()
    >>> layers = [cost_node(conv), cost_node(relu)]
    >>> [kernels.place(i, n, layer) for i, (n, layer) in enumerate(zip([conv, relu], layers))]
    [None, 'conv+relu']
    >>> layers[1].kind, layers[1].launches, kernels.kernel_of["z"]
    ('fused', False, 0)
    """

    def __init__(self, rules: tuple[FusionRule, ...] = TENSORRT_RULES) -> None:
        self.rules = rules
        self.kernel_of: dict[str, int] = {}  # tensor -> index of the layer whose kernel produces it
        self.kernels: dict[int, str] = {}  # index of a layer that is a kernel -> its kind
        self.reads: dict[int, set[str]] = {}  # PointWise kernel -> the tensors it reads
        self.used: dict[str, set[int]] = {}  # rule name -> kernels that absorbed a node by a once-only rule

    def place(self, index: int, node: Node, layer: Layer) -> str | None:
        """Fuse ``layer`` (the costed ``node``, number ``index``) into a kernel or make it one; the rule's name.

        Rewrites ``layer`` in place: a fused layer launches nothing and moves nothing of its own (a residual
        add still reads its other operand).
        """
        out = node.outputs[0] if node.outputs else ""
        if layer.kind in COMPUTE_KINDS:
            self._new_kernel(index, out, layer.kind, set())
        elif layer.kind == FREE:
            if not node.static and node.op in VIEW_OPS and node.inputs and node.inputs[0] in self.kernel_of:
                self.kernel_of[out] = self.kernel_of[node.inputs[0]]
        elif layer.kind == ELTWISE:
            for rule in self.rules:
                found = _MATCHERS[rule.operands](self, rule, node) if node.op in rule.ops else None
                if found is not None:
                    self._absorb(rule, node, layer, out, *found)
                    return rule.name
            reads = {node.inputs[0]} if node.op == BATCH_NORM else set(node.act_inputs)
            self._new_kernel(index, out, ELTWISE, reads)  # a PointWise kernel of its own
        return None

    def _new_kernel(self, index: int, out: str, kind: str, reads: set[str]) -> None:
        self.kernel_of[out], self.kernels[index] = index, kind
        if kind == ELTWISE:
            self.reads[index] = reads

    def _absorb(self, rule: FusionRule, node: Node, layer: Layer, out: str, owner: int, other: str | None) -> None:
        layer.kind, layer.launches = FUSED, False
        layer.in_elems = numel(node.shape_of(other)) if rule.reads_other and other is not None else 0.0
        layer.out_elems = layer.weight_elems = 0.0  # operands already sit in the owning kernel's registers
        self.kernel_of[out] = owner
        if rule.once_per_kernel:
            self.used.setdefault(rule.name, set()).add(owner)

    def eligible(self, rule: FusionRule, node: Node, tensor: str) -> int | None:
        """The kernel holding ``tensor`` if the rule may absorb ``node`` into it (kind, readers, once-only)."""
        owner = self.kernel_of.get(tensor)
        if owner is None or self.kernels[owner] not in rule.into:
            return None
        if rule.once_per_kernel and owner in self.used.get(rule.name, ()):
            return None
        if rule.readers == "one" and node.readers.get(tensor, 0) != 1:
            return None
        if rule.readers == "sole" and not node.sole_reader(tensor):
            return None
        return owner


def _first(kernels: KernelMap, rule: FusionRule, node: Node) -> tuple[int, None] | None:
    owner = kernels.eligible(rule, node, node.inputs[0]) if node.inputs else None
    return None if owner is None else (owner, None)


def _shared(kernels: KernelMap, rule: FusionRule, node: Node) -> tuple[int, None] | None:
    acts = node.act_inputs
    if not acts or len({kernels.kernel_of.get(i) for i in acts}) != 1:
        return None
    owners = [kernels.eligible(rule, node, i) for i in acts]
    return None if owners[0] is None or None in owners else (owners[0], None)


def _chain(kernels: KernelMap, rule: FusionRule, node: Node) -> tuple[int, None] | None:
    acts, owner_of = node.act_inputs, kernels.kernel_of
    for group in {owner_of[i] for i in acts if i in owner_of and kernels.kernels[owner_of[i]] in rule.into}:
        if all(owner_of.get(i) == group or i in kernels.reads.get(group, ()) for i in acts):
            return group, None
    return None


def _pair(kernels: KernelMap, rule: FusionRule, node: Node) -> tuple[int, str] | None:
    acts = node.act_inputs
    if len(acts) != 2:
        return None
    owners = [owner for owner in (kernels.eligible(rule, node, i) for i in acts) if owner is not None]
    if not owners:
        return None
    owner = owners[-1]
    return owner, acts[0] if kernels.kernel_of.get(acts[1]) == owner else acts[1]


_MATCHERS: Mapping[str, Callable[[KernelMap, FusionRule, Node], tuple[int, str | None] | None]] = {
    "first": _first, "shared": _shared, "chain": _chain, "pair": _pair}
