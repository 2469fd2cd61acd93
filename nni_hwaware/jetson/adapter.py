"""The Jetson Nano predictor behind the one hardware-predictor interface (kind ``jetson_nano``).

It reads any CNN's graph, so it estimates ONNX files as well as the architectures of any space: an
architecture is turned into its graph (ONNX without weights for the ``convnet`` family, a torch module
otherwise) and predicted from graph features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor, PredictorTarget, register_predictor
from nni_hwaware.jetson.predictor import JetsonNanoPredictor
from nni_hwaware.spaces.schema import Architecture, SearchSpace

#: How the public dataset's numbers were measured (see ../shared/data/jetson_nano/README.md).
DATASET_PROTOCOL = ("TensorRT, batch 1: mean of timed host-side inference calls including host-device copies; "
                    "energy: tegrastats GPU rail (POM_5V_GPU) over the timed window per inference")
#: The device the public dataset was measured on, in fingerprint fields: the board as its
#: ``/proc/device-tree/model`` names it, TensorRT, and the dataset's protocol. The dataset's README states
#: neither the precision, the JetPack release nor the power mode, so they are not stated (not checked).
DATASET_FINGERPRINT = {"board": "NVIDIA Jetson Nano Developer Kit", "backend": "tensorrt",
                       "protocol": "jetson_dataset"}
#: What the details of an estimate keep from the full prediction.
DETAIL_KEYS = ("ood_score", "ood_threshold", "is_cnn", "certain", "macs", "params", "input_shape", "layers",
               "compute_layers", "op_counts", "kernel_mac_share", "unknown_ops", "warnings", "method",
               "latency_ms_roofline", "energy_mj_roofline")


def estimate_from_result(result: dict[str, Any], arch_hash: str) -> HardwareEstimate:
    """A :class:`HardwareEstimate` from :meth:`JetsonNanoPredictor.predict_layers`'s dict."""
    return HardwareEstimate(
        arch_hash, float(result["latency_ms"]), tuple(map(float, result["latency_interval"])),
        float(result["energy_mj"]), tuple(map(float, result["energy_interval"])), bool(result["in_distribution"]),
        energy_source="surrogate", predictor="jetson_nano", notes=list(result["ood_reasons"]),
        details={k: result[k] for k in DETAIL_KEYS if k in result})


@register_predictor("jetson_nano")
class JetsonNanoHardwarePredictor(HardwarePredictor):
    """Latency (ms) and GPU energy (mJ) on a Jetson Nano of any CNN, with 90 % intervals and an OOD flag.

    Parameters
    ----------
    folder
        The predictor folder (the shipped ``predictors/jetson_nano`` or one retrained from the dataset).
    space, input_size
        The space whose architectures are estimated and their resolution (default: the space's); without a
        space only :meth:`estimate_onnx` is available.

    Examples
    --------
    >>> from nni_hwaware.hardware import load_predictor
    >>> predictor = load_predictor("jetson_nano", "convnet", 32)
    >>> predictor.estimate(predictor.space.default_architecture()).latency_ms > 0
    True
    """

    def __init__(self, folder: Path, space: str | SearchSpace | None, input_size: int | None = None) -> None:
        super().__init__(folder, space, input_size)
        self.model = JetsonNanoPredictor.load(self.folder)

    @property
    def target(self) -> PredictorTarget:
        return PredictorTarget(device=str(self.model.meta.get("device", "NVIDIA Jetson Nano")),
                               protocol=DATASET_PROTOCOL, metrics=("latency_ms", "energy_mj"),
                               fingerprint=dict(DATASET_FINGERPRINT))

    def _mismatch_text(self) -> str:
        return "predicts TensorRT measurements on a Jetson Nano with the dataset's protocol; the measuring device differs"

    def _mismatch_advice(self) -> str:
        return ("measure with the tensorrt backend on the board through the device agent (ssh://USER@JETSON), "
                "or use an ESM predictor of this machine")

    def _graph(self, arch: Architecture) -> tuple[Any, float | None]:
        """The layers of an architecture at the predictor's input size, and its parameter count where known."""
        space = self.space
        shape = (1, int(space.defaults["in_channels"]), self.input_size, self.input_size)
        if space.family == "convnet":
            from nni_hwaware.jetson.graph import convnet_onnx, extract_layers

            graph = convnet_onnx(arch, self.input_size, shape[1], int(space.defaults["num_classes"]))
            return extract_layers(graph, shape), None
        from nni_hwaware.jetson.graph import layers_from_module
        from nni_hwaware.spaces import build_module

        model = build_module(space, arch, input_size=self.input_size)
        return layers_from_module(model, shape), float(sum(p.numel() for p in model.parameters()))

    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        graphs, params = zip(*(self._graph(a) for a in archs)) if archs else ((), ())
        results = self.model.predict_layers_many(graphs, params)
        return [estimate_from_result(r, h) for r, h in zip(results, hashes)]

    def estimate_onnx(self, onnx: str | Path | bytes, input_shape: Sequence[int] | None = None) -> HardwareEstimate:
        """The estimate of an ONNX model (its weights may be external and absent)."""
        result = self.model.predict_onnx(onnx, input_shape)
        name = onnx if isinstance(onnx, bytes) else str(Path(onnx).resolve()).encode()
        return estimate_from_result(result, hashlib.sha256(name).hexdigest()[:16])
