"""nn-Meter builder backends that profile kernels on this machine with our measurement protocol.

nn-Meter's builder (``nn_meter.builder``) profiles its test cases and kernels through a *backend*: a
:class:`~nn_meter.builder.backends.BaseBackend` with a profiler (runs a model file, returns raw output) and a
parser (turns that output into ``ProfiledResults``). The backends here run the ONNX files nn-Meter's torch
implementation produces with our :class:`~nni_hwaware.measure.runner.Measurer` (onnxruntime on CPU, or TensorRT
on NVIDIA GPUs), so nn-Meter's kernels are timed with exactly the protocol our architectures are timed with.

They are registered through nn-Meter's own mechanism (``nn-meter register --backend META``, which writes
``~/.nn_meter/config/registry.yaml``); :func:`register_backends` writes the meta files and calls it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nn_meter.builder.backend_meta.utils import Latency, ProfiledResults
from nn_meter.builder.backends import BaseBackend, BaseParser, BaseProfiler

from nni_hwaware.errors import HwAwareError

#: The nn-Meter backend names we register, and the measurement backend behind each.
BACKEND_NAMES = {"hwaware_onnxruntime": "onnxruntime", "hwaware_tensorrt": "tensorrt"}

#: Defaults of the backend config (nn-Meter keeps it in ``<workspace>/configs/backend_config.yaml``).
DEFAULT_CONFIG: dict[str, Any] = {"THREADS": 1, "RUNS": 30, "WARMUP": 5, "PRECISION": "fp32", "DEVICE": None}


class MeasurerProfiler(BaseProfiler):
    """Times one ONNX file with our protocol and returns the result as a JSON line (nn-Meter's "stdout").

    Parameters
    ----------
    backend
        Measurement backend: ``onnxruntime`` or ``tensorrt``.
    threads, runs, warmup, precision, device
        Settings of :func:`~nni_hwaware.measure.backends.get_backend` and
        :class:`~nni_hwaware.measure.protocol.Protocol`. Kernels are small and many, so fewer runs than the
        150 of whole architectures.
    """

    def __init__(self, backend: str = "onnxruntime", threads: int = 1, runs: int = 30, warmup: int = 5,
                 precision: str = "fp32", device: str | None = None) -> None:
        from nni_hwaware.measure.backends import get_backend
        from nni_hwaware.measure.protocol import Protocol
        from nni_hwaware.measure.runner import Measurer

        self.measurer = Measurer(get_backend(backend, threads=threads, device=device, precision=precision),
                                 Protocol(runs=runs, warmup=warmup))

    def profile(self, model_path: str, **_kwargs: Any) -> str:  # type: ignore[override]
        from nni_hwaware.measure.backends import ModelToMeasure

        path = Path(model_path)
        if not path.is_file():
            raise HwAwareError(f"nn-Meter asked to profile {path}, which does not exist")
        result = self.measurer.measure(ModelToMeasure(path.name, None, onnx=path.read_bytes()))
        return json.dumps({"latency_ms": result.timing.mean_ms, "std_ms": result.timing.std_ms,
                           "runs": result.timing.runs})


class MeasurerParser(BaseParser):
    """Parses the JSON line of :class:`MeasurerProfiler` into nn-Meter's ``ProfiledResults``."""

    def __init__(self) -> None:
        self.latency = Latency()

    def parse(self, content: str) -> MeasurerParser:  # type: ignore[override]
        data = json.loads(content)
        self.latency = Latency(float(data["latency_ms"]), float(data["std_ms"]))
        return self

    @property
    def results(self) -> ProfiledResults:
        return ProfiledResults({"latency": self.latency})


class _MeasurerBackend(BaseBackend):
    """Common part: ONNX in, no conversion, our profiler and parser."""

    profiler_class = MeasurerProfiler
    parser_class = MeasurerParser
    measurement_backend = "onnxruntime"

    def update_configs(self) -> None:
        config = {**DEFAULT_CONFIG, **(self.configs or {})}
        self.parser_kwargs = {}
        self.profiler_kwargs = {
            "backend": self.measurement_backend, "threads": int(config["THREADS"]), "runs": int(config["RUNS"]),
            "warmup": int(config["WARMUP"]), "precision": str(config["PRECISION"]), "device": config["DEVICE"],
        }

    def convert_model(self, model_path: str, save_path: str, input_shape: Any = None) -> str:
        # nn-Meter's torch implementation already writes ONNX, which both runtimes take as is.
        return model_path

    def profile(self, converted_model: str, metrics: list[str] | None = None, input_shape: Any = None,
                **kwargs: Any) -> dict[str, Any]:
        return self.parser.parse(self.profiler.profile(converted_model, **kwargs)).results.get(metrics or ["latency"])

    def test_connection(self) -> None:
        description = self.profiler.measurer.backend.describe()
        print(f"{type(self).__name__}: {json.dumps(description, default=str)}")


class OnnxRuntimeCPUBackend(_MeasurerBackend):
    """nn-Meter backend timing kernels with onnxruntime on this machine's CPU."""

    measurement_backend = "onnxruntime"


class TensorRTBackend(_MeasurerBackend):
    """nn-Meter backend timing kernels with TensorRT on an NVIDIA GPU or Jetson board (needs ``[tensorrt]``)."""

    measurement_backend = "tensorrt"


def backend_for(name: str, config: dict[str, Any] | None = None) -> BaseBackend:
    """An instance of one of our nn-Meter backends (what nn-Meter's ``connect_backend`` returns once registered)."""
    classes = {"onnxruntime": OnnxRuntimeCPUBackend, "tensorrt": TensorRTBackend}
    key = BACKEND_NAMES.get(name, name)
    if key not in classes:
        raise HwAwareError(f"unknown nn-Meter backend {name!r}; use onnxruntime or tensorrt")
    return classes[key](config or {})


def register_backends(folder: str | Path) -> list[str]:
    """Register our backends with nn-Meter (``~/.nn_meter/config/registry.yaml``), as ``nn-meter register`` does.

    Writes one meta file per backend into ``folder`` and passes it to nn-Meter's own ``register_module``.
    Afterwards ``nn-meter connect --backend hwaware_onnxruntime`` and nn-Meter's ``connect_backend`` find them.
    """
    import os

    import yaml
    from nn_meter.utils.nn_meter_cli.registry import __user_config_folder__, register_module

    import nni_hwaware

    os.makedirs(__user_config_folder__, exist_ok=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    package_location = str(Path(nni_hwaware.__file__).resolve().parent.parent)
    names = []
    for name, cls in (("hwaware_onnxruntime", OnnxRuntimeCPUBackend), ("hwaware_tensorrt", TensorRTBackend)):
        meta = folder / f"{name}.yaml"
        meta.write_text(yaml.safe_dump({
            "builtin_name": name, "package_location": package_location, "class_module": __name__,
            "class_name": cls.__name__, "defaultConfigFile": None,
        }))
        register_module("backends", str(meta))
        names.append(name)
    return names
