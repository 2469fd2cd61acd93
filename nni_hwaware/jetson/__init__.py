"""Jetson Nano latency and energy prediction for any CNN, trained on the public Jetson Nano dataset.

Modules, in the order of the data flow:

``dataset``
    read the published stage CSVs, rebuild each model as a convnet-space architecture, check MACs/params;
``graph``
    per-layer description (MACs, parameters, memory traffic, kernel, op kind) of any ONNX graph or torch module;
``features``
    whole-network features and the per-layer roofline design matrix built from those layers;
``models``
    the per-layer roofline model, the GPU power and energy models, the gradient-boosting baseline and the
    out-of-distribution scorer;
``prior``
    the roofline averaged over a physical prior of the constants the dataset cannot identify, and its test on
    published real-world measurements;
``predictor``
    the shipped artifact: load it and predict latency/energy with intervals for a module or an ONNX file;
``train``
    fit, evaluate on held-out splits and write the artifact with its model card;
``zoo``
    plain-torch definitions of real-world CNNs (VGG, ResNet50, MobileNetV2, ...) for the benchmark.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JetsonNanoPredictor", "default_predictor_dir"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import nni_hwaware.jetson.dataset`` does not pull in the predictor (and onnx).
    if name in __all__:
        from nni_hwaware.jetson import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
