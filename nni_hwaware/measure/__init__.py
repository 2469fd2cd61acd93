"""Real measurement on devices: backends, energy meters, the ESM timing protocol and quality control.

The measuring half of the pipeline: latency (and energy where the hardware reports it) of architectures of a
space or of any ONNX model, on onnxruntime (CPU), PyTorch eager (CPU/GPU) or TensorRT (NVIDIA GPUs, Jetson),
stored in a :class:`~nni_hwaware.measure.store.MeasurementStore`. The ESM builder calls
:func:`measure_architectures`::

    from nni_hwaware.measure import measure_architectures
    from nni_hwaware.measure.store import MeasurementStore

    measurements = measure_architectures("resnet", archs, "onnxruntime", MeasurementStore("m.db"),
                                         input_size=32, runs=150)
"""

from nni_hwaware.measure.backends import BACKENDS, Backend, ModelToMeasure, Session, get_backend
from nni_hwaware.measure.campaign import Campaign, CampaignReport, reference_architectures
from nni_hwaware.measure.energy import EnergyMeter, create_meter, parse_tegrastats
from nni_hwaware.measure.protocol import Protocol, TimingResult, run_protocol, trimmed_stats
from nni_hwaware.measure.runner import Measurer, make_measurer, measure_architectures, measure_onnx_file
from nni_hwaware.measure.store import Measurement, MeasurementStore

__all__ = [
    "BACKENDS",
    "Backend",
    "Campaign",
    "CampaignReport",
    "EnergyMeter",
    "Measurement",
    "MeasurementStore",
    "Measurer",
    "ModelToMeasure",
    "Protocol",
    "Session",
    "TimingResult",
    "create_meter",
    "get_backend",
    "make_measurer",
    "measure_architectures",
    "measure_onnx_file",
    "parse_tegrastats",
    "reference_architectures",
    "run_protocol",
    "trimmed_stats",
]
