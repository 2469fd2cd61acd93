"""Whole-network features and the per-layer roofline design matrix, both built from :class:`graph.Layer` lists.

Roofline design matrix (one row per network, sums over the layers that launch a kernel):

* MACs per compute class: dense conv by kernel size (``conv_k1`` .. ``conv_k7``, larger kernels count as 7,
  grouped and transposed convs count as dense), depthwise conv by kernel size (``dw_k1`` .. ``dw_k7``);
* ``act_gb``: activation bytes read and written (FP32), the memory-bound part of every layer;
* ``weight_gb``: weight bytes of conv layers;
* ``linear_gb``: weight bytes of linear layers (batch-1 GEMV: pure weight streaming);
* ``linear_gb_n10``: the same bytes times 10 / N for a layer of N outputs. A batch-1 GEMV runs one reduction per
  output, so with few outputs (the dataset's N = 10) it cannot fill the GPU and streams weights far below
  DRAM bandwidth; with many outputs (VGG's 4096) it is bandwidth-bound. The roofline model takes the larger
  of the two costs (see :class:`~nni_hwaware.jetson.models.RooflineModel`);
* ``launches``: number of kernels; ``one``: fixed per-inference cost (host copies, synchronisation).

Network features (for the gradient-boosting model and the out-of-distribution score) are logs of totals and
shares, so that they mean the same for a 5-layer stack and a 200-layer ResNet.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nni_hwaware.jetson.graph import (
    CONV,
    DECONV,
    DWCONV,
    GCONV,
    LINEAR,
    MATMUL,
    MEMORY_KINDS,
    GraphLayers,
    Layer,
)

BYTES_PER_ELEMENT = 4  # FP32 tensors; the fitted coefficients absorb the engine's real precision
MAX_KERNEL = 7
COMPUTE_CLASSES = [f"conv_k{k}" for k in range(1, MAX_KERNEL + 1)] + [f"dw_k{k}" for k in range(1, MAX_KERNEL + 1)]
ROOFLINE_COLUMNS = [*COMPUTE_CLASSES, "act_gb", "weight_gb", "linear_gb", "linear_gb_n10", "launches", "one"]
# The dataset's linear layers all have 10 outputs; ``linear_gb_n10`` scales each layer's bytes by 10 / N.
DATASET_LINEAR_OUTPUTS = 10
# Layer structures the training data contains; anything else makes a network out of distribution.
TRAINED_KINDS = {CONV, DWCONV, LINEAR}
NETWORK_FEATURES = [
    "log_macs", "log_params", "log_act_gb", "log_weight_gb", "log_launches", "log_input_pixels",
    "log_mean_channels", "share_linear_gb",
    *[f"share_{c}" for c in COMPUTE_CLASSES],
]


def compute_class(layer: Layer) -> str | None:
    """Roofline compute class of a layer (``None`` for memory-only and free layers)."""
    k = min(max(layer.kernel, 1), MAX_KERNEL)
    if layer.kind in (CONV, GCONV, DECONV):
        return f"conv_k{k}"
    if layer.kind == DWCONV:
        return f"dw_k{k}"
    return None


def linear_outputs(layer: Layer) -> int:
    """Output features of a linear layer (its parallelism at batch 1)."""
    return int(layer.out_shape[-1]) if layer.out_shape else 1


def roofline_rows(graphs: list[GraphLayers]) -> np.ndarray:
    """Roofline design matrix, one row per graph; ``linear_gb`` holds raw linear weight bytes."""
    rows = np.zeros((len(graphs), len(ROOFLINE_COLUMNS)))
    index = {c: i for i, c in enumerate(ROOFLINE_COLUMNS)}
    for r, graph in enumerate(graphs):
        row = rows[r]
        for layer in graph.layers:
            cls = compute_class(layer)
            if cls is not None:
                row[index[cls]] += layer.macs / 1e9
            if layer.kind in (LINEAR, MATMUL):
                gb = layer.weight_elems * BYTES_PER_ELEMENT / 1e9
                row[index["linear_gb"]] += gb
                row[index["linear_gb_n10"]] += gb * DATASET_LINEAR_OUTPUTS / max(1, linear_outputs(layer))
                row[index["act_gb"]] += (layer.in_elems + layer.out_elems) * BYTES_PER_ELEMENT / 1e9
                if layer.kind == MATMUL:  # activation x activation: compute like a 1x1 conv
                    row[index["conv_k1"]] += layer.macs / 1e9
            elif layer.launches or layer.kind == "fused":  # fused layers carry only their extra reads
                row[index["act_gb"]] += (layer.in_elems + layer.out_elems) * BYTES_PER_ELEMENT / 1e9
                row[index["weight_gb"]] += layer.weight_elems * BYTES_PER_ELEMENT / 1e9
            row[index["launches"]] += 1 if layer.launches else 0
        row[index["one"]] = 1.0
    return rows


def network_features(graph: GraphLayers) -> dict[str, float]:
    """Whole-network features of one graph (also reported by ``predict``)."""
    row = roofline_rows([graph])[0]
    col = dict(zip(ROOFLINE_COLUMNS, row))
    macs = graph.macs
    compute_macs = sum(col[c] for c in COMPUTE_CLASSES) * 1e9
    convs = [layer for layer in graph.layers if layer.kind in (CONV, GCONV, DWCONV, DECONV)]
    channels = [layer.out_shape[1] for layer in convs if len(layer.out_shape) > 1]
    pixels = math.prod(graph.input_shape[2:]) if len(graph.input_shape) > 2 else 1
    feats = {
        "log_macs": math.log10(max(macs, 1.0)),
        "log_params": math.log10(max(graph.params, 1.0)),
        "log_act_gb": math.log10(max(col["act_gb"], 1e-9)),
        "log_weight_gb": math.log10(max(col["weight_gb"] + col["linear_gb"], 1e-9)),
        "log_launches": math.log10(max(col["launches"], 1.0)),
        "log_input_pixels": math.log10(max(pixels, 1)),
        "log_mean_channels": math.log10(max(float(np.mean(channels)) if channels else 1.0, 1.0)),
        "share_linear_gb": col["linear_gb"] / max(col["linear_gb"] + col["weight_gb"] + col["act_gb"], 1e-12),
    }
    for c in COMPUTE_CLASSES:
        feats[f"share_{c}"] = col[c] * 1e9 / compute_macs if compute_macs > 0 else 0.0
    return feats


def feature_matrix(graphs: list[GraphLayers]) -> np.ndarray:
    """Network features of many graphs as a matrix with columns :data:`NETWORK_FEATURES`."""
    return np.array([[network_features(g)[c] for c in NETWORK_FEATURES] for g in graphs])


def structure_summary(graph: GraphLayers) -> dict[str, Any]:
    """Counts and MACs per op family (dense/depthwise/pointwise conv, linear, pooling, elementwise, ...)."""
    summary: dict[str, Any] = {"layers": 0, "counts": {}, "macs": {}, "kernel_mac_share": {},
                               "strided_convs": 0, "untrained_structures": []}
    untrained: set[str] = set()
    total = max(graph.macs, 1.0)
    for layer in graph.layers:
        if layer.kind in ("free", "fused"):
            if layer.op == "Add" and layer.kind == "fused":
                untrained.add("residual add")
            if layer.op == "BatchNormalization":
                untrained.add("batch-norm (folded)")
            continue
        family = {CONV: "pointwise_conv" if layer.kernel == 1 else "dense_conv", GCONV: "grouped_conv",
                  DWCONV: "depthwise_conv", DECONV: "transposed_conv", LINEAR: "linear",
                  MATMUL: "matmul"}.get(layer.kind, layer.kind)
        summary["layers"] += 1
        summary["counts"][family] = summary["counts"].get(family, 0) + 1
        summary["macs"][family] = summary["macs"].get(family, 0.0) + layer.macs
        cls = compute_class(layer)
        if cls is not None:
            summary["kernel_mac_share"][cls] = summary["kernel_mac_share"].get(cls, 0.0) + layer.macs / total
            if layer.stride > 1:
                summary["strided_convs"] += 1
        if layer.kind not in TRAINED_KINDS:
            untrained.add({GCONV: "grouped conv", DECONV: "transposed conv", MATMUL: "activation matmul"}.get(
                layer.kind, layer.kind))
        if cls is not None and layer.stride > 1:
            untrained.add("strided conv")
        if layer.kind in MEMORY_KINDS:
            untrained.add(layer.kind)
    summary["untrained_structures"] = sorted(untrained)
    return summary
