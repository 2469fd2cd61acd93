"""nn-Meter builder backends that profile kernels on this machine with our measurement protocol.

nn-Meter's builder (``nn_meter.builder``) profiles its test cases and kernels through a *backend*: a
:class:`~nn_meter.builder.backends.BaseBackend` with a profiler (runs a model file, returns raw output) and a
parser (turns that output into ``ProfiledResults``). The backends here run the ONNX files nn-Meter's torch
implementation produces with our :class:`~nni_hwaware.measure.runner.Measurer` (onnxruntime on CPU, or TensorRT
on NVIDIA GPUs), so nn-Meter's kernels are timed with exactly the protocol our architectures are timed with.

They are registered the way nn-Meter's own ``nn-meter register --backend META`` does it (an entry in
``~/.nn_meter/config/registry.yaml``); :func:`register_backends` checks everything first, then writes the meta
files and the registry, each atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nn_meter.builder.backend_meta.utils import Latency, ProfiledResults
from nn_meter.builder.backends import BaseBackend, BaseParser, BaseProfiler

from nni_hwaware.errors import HwAwareError, ParameterError

logger = logging.getLogger(__name__)

#: The nn-Meter backend names we register, and the measurement backend behind each.
BACKEND_NAMES = {"hwaware_onnxruntime": "onnxruntime", "hwaware_tensorrt": "tensorrt"}

#: Defaults of the backend config (nn-Meter keeps it in ``<workspace>/configs/backend_config.yaml``).
#: ``MEASURER``: a ready :class:`~nni_hwaware.measure.runner.Measurer` (a remote device's, say) used instead of
#: one built from the other settings.
DEFAULT_CONFIG: dict[str, Any] = {"THREADS": 1, "RUNS": 30, "WARMUP": 5, "PRECISION": "fp32", "DEVICE": None,
                                  "MEASURER": None}


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
    measurer
        A ready measurer (e.g. a remote device's, :func:`~nni_hwaware.measure.runner.make_measurer` with
        ``device="ssh://..."``); the settings above are then its own.
    """

    def __init__(self, backend: str = "onnxruntime", threads: int = 1, runs: int = 30, warmup: int = 5,
                 precision: str = "fp32", device: str | None = None, measurer: Any = None) -> None:
        from nni_hwaware.measure.backends import get_backend
        from nni_hwaware.measure.protocol import Protocol
        from nni_hwaware.measure.runner import Measurer

        self.measurer = measurer if measurer is not None else Measurer(
            get_backend(backend, threads=threads, device=device, precision=precision),
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
            "measurer": config["MEASURER"],
        }

    def convert_model(self, model_path: str, save_path: str, input_shape: Any = None) -> str:
        # nn-Meter's torch implementation already writes ONNX, which both runtimes take as is.
        return model_path

    def profile(self, converted_model: str, metrics: list[str] | None = None, input_shape: Any = None,
                **kwargs: Any) -> dict[str, Any]:
        return self.parser.parse(self.profiler.profile(converted_model, **kwargs)).results.get(metrics or ["latency"])

    def test_connection(self) -> None:
        description = self.profiler.measurer.backend.describe()
        logger.info("%s: %s", type(self).__name__, json.dumps(description, default=str))


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


def default_meta_dir() -> Path:
    """Where ``nn-meter register`` writes the backend meta files by default."""
    return Path.home() / ".nn_meter" / "hwaware"


def register_backends(folder: str | Path | None = None) -> list[str]:
    """Register our backends with nn-Meter (``~/.nn_meter/config/registry.yaml``), as ``nn-meter register`` does.

    Writes one meta file per backend into ``folder`` (default :func:`default_meta_dir`, created with its
    parents; a folder given must exist or have an existing parent) and records both backends in nn-Meter's
    registry the way nn-Meter's ``register_module`` does. Everything is checked first: a bad folder or an
    unreadable registry raises a one-line error with nothing written, and each file is written atomically, the
    registry once. Afterwards ``nn-meter connect --backend hwaware_onnxruntime`` and ``connect_backend`` find
    them.
    """
    import yaml
    from nn_meter.utils.nn_meter_cli import registry as nn_meter_registry

    import nni_hwaware
    from nni_hwaware.artifacts import write_atomically

    meta_dir = default_meta_dir() if folder is None else Path(folder)
    config_dir = Path(nn_meter_registry.__user_config_folder__)  # read now: tests point it elsewhere
    registry_file = config_dir / nn_meter_registry.__registry_cfg_filename__
    _check_meta_dir(meta_dir, must_have_parent=folder is not None)
    registry = _read_registry(config_dir, registry_file)
    package_location = str(Path(nni_hwaware.__file__).resolve().parent.parent)
    metas = {name: {"builtin_name": name, "package_location": package_location, "class_module": __name__,
                    "class_name": cls.__name__, "defaultConfigFile": None}
             for name, cls in (("hwaware_onnxruntime", OnnxRuntimeCPUBackend), ("hwaware_tensorrt", TensorRTBackend))}
    try:
        meta_dir.mkdir(parents=True, exist_ok=True)
        config_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HwAwareError(f"cannot create {exc.filename}: {exc.strerror}; choose a writable folder",
                           parameter="folder") from None
    for name, meta in metas.items():
        write_atomically(meta_dir / f"{name}.yaml", yaml.safe_dump(meta).encode())
        # what nn-Meter's register_module records: the meta data without its name, under the name
        registry.setdefault("backends", {})[name] = {k: v for k, v in meta.items() if k != "builtin_name"}
    write_atomically(registry_file, yaml.dump(registry).encode())
    return list(metas)


def _check_meta_dir(meta_dir: Path, *, must_have_parent: bool) -> None:
    if meta_dir.exists() and not meta_dir.is_dir():
        raise ParameterError(f"folder {meta_dir} is a file; give a folder for the meta files", parameter="folder")
    if must_have_parent and not meta_dir.exists() and not meta_dir.parent.is_dir():
        raise ParameterError(f"folder {meta_dir}: its parent {meta_dir.parent} does not exist; create it or give "
                             "another folder", parameter="folder")


def _read_registry(config_dir: Path, registry_file: Path) -> dict[str, Any]:
    """nn-Meter's registry as a mapping (empty if there is none yet), or a one-line error if it is unusable."""
    import yaml

    if config_dir.exists() and not config_dir.is_dir():
        raise HwAwareError(f"nn-Meter's configuration folder {config_dir} is a file; move it away")
    if not registry_file.exists():
        return {}
    try:
        data = yaml.safe_load(registry_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise HwAwareError(f"nn-Meter's registry {registry_file} is unreadable or not valid YAML; fix or remove "
                           "it") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise HwAwareError(f"nn-Meter's registry {registry_file} is not a mapping of module types; fix or remove it")
    return data
