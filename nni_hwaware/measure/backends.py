"""Inference backends behind one interface: onnxruntime (CPU), PyTorch eager (CPU/GPU) and TensorRT.

A :class:`Backend` turns a :class:`ModelToMeasure` (ONNX bytes and/or a PyTorch module factory, plus the input
shape) into a :class:`Session` whose :meth:`Session.run_once` runs one inference and returns its duration in
milliseconds. How a run is timed belongs to the backend: ``perf_counter`` around a synchronous call on CPUs,
CUDA events on NVIDIA GPUs. Optional libraries (tensorrt, pycuda / cuda-python) are imported only when their
backend is created, so the package imports fine without them.
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure import agent as _agent

BACKENDS = ("onnxruntime", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16")


@dataclass
class ModelToMeasure:
    """What a backend needs to run one model.

    Parameters
    ----------
    name
        Label used in messages (architecture hash or file name).
    input_shape
        Shape of the (single) input of an architecture, e.g. ``(1, 3, 32, 32)``; ``None`` for an ONNX file,
        whose inputs are read from the file.
    onnx
        The ONNX model as bytes (onnxruntime and TensorRT need it).
    module_factory
        Builds the PyTorch module (the ``torch`` backend needs it).
    """

    name: str
    input_shape: tuple[int, ...] | None = None
    onnx: bytes | None = field(default=None, repr=False)
    module_factory: Callable[[], Any] | None = field(default=None, repr=False)


class Session(ABC):
    """One loaded model, ready to be timed."""

    #: seconds spent preparing the model (session creation, TensorRT engine build), apart from inference
    build_time_s: float = 0.0

    @abstractmethod
    def run_once(self) -> float:
        """Run one inference and return its duration in milliseconds."""

    def run_untimed(self, count: int) -> None:
        """Run ``count`` inferences back to back (energy windows); timing is not needed."""
        for _ in range(count):
            self.run_once()

    def close(self) -> None:  # noqa: B027 - most sessions have nothing to free
        """Free the model's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """An inference engine on one device, with a fixed configuration that is recorded with every result.

    Parameters
    ----------
    threads
        CPU threads used for inference (fixed and recorded; default 1).
    device
        ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (torch, tensorrt).
    precision
        ``"fp32"`` or ``"fp16"`` (fp16: torch on GPU and tensorrt only).
    """

    name: str = ""
    accelerator: str = "cpu"

    def __init__(self, threads: int = 1, device: str = "cpu", precision: str = "fp32") -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError(f"threads must be a positive integer, got {threads!r}", parameter="threads")
        if precision not in PRECISIONS:
            raise HwAwareError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.threads = threads
        self.device = device
        self.precision = precision

    @property
    @abstractmethod
    def version(self) -> str:
        """Version of the inference library."""

    def describe(self) -> dict[str, Any]:
        """The backend's part of the device description (what makes two results comparable)."""
        return {"backend": self.name, "backend_version": self.version, "threads": self.threads,
                "accelerator": self.accelerator}

    @abstractmethod
    def open(self, model: ModelToMeasure) -> Session:
        """Load a model; raises :class:`HwAwareError` if the backend cannot."""


# ------------------------------------------------------------------------------------------ onnxruntime
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxRuntimeBackend(Backend):
    """onnxruntime on the CPU: ``intra_op_num_threads`` fixed, ``inter_op_num_threads`` 1, all graph optimisations,
    no spin-waiting of idle threads (``session.intra_op.allow_spinning`` 0), as the device agent runs it.

    Examples
    --------
    >>> backend = OnnxRuntimeBackend(threads=1)
    >>> backend.describe()["provider"]
    'CPUExecutionProvider'
    """

    name = "onnxruntime"
    provider = "CPUExecutionProvider"

    def __init__(self, threads: int = 1, device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(threads, device, precision)
        if device != "cpu":
            raise ParameterError("onnxruntime measures on the CPU; for GPUs use backend tensorrt or torch",
                                 parameter="backend", mentions=("backend",))
        if precision != "fp32":
            raise HwAwareError("the onnxruntime CPU backend measures fp32 only; use tensorrt for fp16")
        self._ort = _import_or_fail("onnxruntime", "onnxruntime", "pip install onnxruntime")

    @property
    def version(self) -> str:
        return str(self._ort.__version__)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "provider": self.provider, "graph_optimization": "all",
                "inter_op_threads": 1}

    def open(self, model: ModelToMeasure) -> Session:
        if model.onnx is None:
            raise HwAwareError(f"{model.name}: the onnxruntime backend needs an ONNX model")
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the device agent: no spin
        start = time.perf_counter()
        try:
            session = ort.InferenceSession(model.onnx, options, providers=[self.provider])
        except Exception as exc:  # onnxruntime raises several unrelated exception types for bad models
            raise HwAwareError(
                f"onnxruntime cannot load {model.name}: {_first_line(exc)}; check that it is a valid ONNX model"
            ) from None
        feeds = {}
        for inp in session.get_inputs():
            shape = _concrete_shape(inp.shape, model.input_shape, inp.name, model.name)
            dtype = _ORT_TYPES.get(inp.type)
            if dtype is None:
                raise HwAwareError(f"{model.name}: input {inp.name!r} has unsupported type {inp.type}")
            feeds[inp.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        return _OrtSession(session, feeds, time.perf_counter() - start)


class _OrtSession(Session):
    def __init__(self, session: Any, feeds: dict[str, np.ndarray], build_time_s: float) -> None:
        self._session = session
        self._feeds = feeds
        self.build_time_s = build_time_s
        self._run = session.run
        try:
            self._run(None, feeds)  # fail here, at load time, rather than in the middle of the timing
        except Exception as exc:
            raise HwAwareError(f"onnxruntime cannot run the model: {_first_line(exc)}") from None

    def run_once(self) -> float:
        start = time.perf_counter()
        self._run(None, self._feeds)
        return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        self._session = None
        self._run = None  # type: ignore[assignment]


def _concrete_shape(shape: list, arch_shape: tuple[int, ...] | None, input_name: str, model_name: str
                    ) -> tuple[int, ...]:
    """Replace symbolic dimensions: the batch by 1, the others by the architecture's shape if known."""
    out = []
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif i == 0:
            out.append(1)
        elif arch_shape is not None and i < len(arch_shape):
            out.append(int(arch_shape[i]))
        else:
            raise HwAwareError(
                f"{model_name}: input {input_name!r} has a symbolic dimension {dim!r} at position {i}; "
                "export the model with a fixed input size"
            )
    return tuple(out)


# ---------------------------------------------------------------------------------------------- torch
class TorchBackend(Backend):
    """PyTorch eager mode on the CPU (``torch.set_num_threads(threads)``) or an NVIDIA GPU (CUDA events)."""

    name = "torch"

    def __init__(self, threads: int = 1, device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(threads, device, precision)
        self._torch = _import_or_fail("torch", "torch", "install PyTorch")
        if device.startswith("cuda"):
            if not self._torch.cuda.is_available():
                raise ParameterError(f"device {device}: PyTorch sees no CUDA GPU here; use device cpu",
                                     parameter="device", mentions=("device",))
            self.accelerator = f"cuda:{self._torch.cuda.get_device_name(self._torch.device(device))}"
        elif device != "cpu":
            raise ParameterError(f"device {device!r} is unknown; use cpu or cuda[:N]", parameter="device")
        elif precision == "fp16":
            raise ParameterError("precision fp16 with torch needs device cuda[:N]", parameter="precision",
                                 mentions=("device",))

    @property
    def version(self) -> str:
        return str(self._torch.__version__)

    def open(self, model: ModelToMeasure) -> Session:
        if model.module_factory is None or model.input_shape is None:
            raise HwAwareError(
                f"{model.name}: torch measures architectures of a space; for ONNX files use "
                "backend onnxruntime or tensorrt", mentions=("backend",)
            )
        torch = self._torch
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        device = torch.device(self.device)
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        module = model.module_factory().eval().to(device=device, dtype=dtype)
        example = torch.randn(*model.input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        return _TorchSession(torch, module, example, device, time.perf_counter() - start)


class _TorchSession(Session):
    def __init__(self, torch: Any, module: Any, example: Any, device: Any, build_time_s: float) -> None:
        self._torch, self._module, self._x, self._device = torch, module, example, device
        self.build_time_s = build_time_s
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def run_once(self) -> float:
        torch = self._torch
        with torch.inference_mode():
            if self._cuda:
                self._start.record()
                self._module(self._x)
                self._end.record()
                self._end.synchronize()
                return float(self._start.elapsed_time(self._end))
            start = time.perf_counter()
            self._module(self._x)
            return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        self._module = None
        if self._cuda:
            self._torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- tensorrt
#: the CUDA calls TensorRT timing needs (pycuda or cuda-python): the device agent's, so that there is one
#: TensorRT/CUDA implementation for local and remote measurement
_CudaApi = _agent.CudaApi


class TensorRTBackend(Backend):
    """TensorRT on an NVIDIA GPU or Jetson board: ONNX -> engine (fp32/fp16), timed with CUDA events.

    The engine build and the timing are the device agent's (:func:`nni_hwaware.measure.agent.build_trt_engine`,
    :class:`nni_hwaware.measure.agent.TrtRunner`): TensorRT 8.2 (JetPack 4.6, binding API) through 11
    (named-tensor API; fp16 there needs an fp16 ONNX model, as weak typing is gone). The engine build time is
    recorded apart from inference (:attr:`Session.build_time_s`). CUDA is driven through pycuda if installed,
    else cuda-python; each session holds the device's primary context and releases it on close (open and close
    a session on the same thread).

    Parameters
    ----------
    workspace_mb
        Builder workspace memory limit.
    """

    name = "tensorrt"
    accelerator = "cuda"

    def __init__(self, threads: int = 1, device: str = "cuda", precision: str = "fp32",
                 workspace_mb: int = 1024) -> None:
        if not device.startswith("cuda"):
            raise ParameterError(f"tensorrt runs on an NVIDIA GPU; use device cuda[:N], not {device!r}",
                                 parameter="device", mentions=("device",))
        super().__init__(threads, device, precision)
        self._trt = _import_or_fail("tensorrt", "tensorrt", "pip install 'nni-hwaware[tensorrt]' on a machine "
                                    "with an NVIDIA GPU (JetPack ships it on Jetson boards)")
        self.gpu_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        cuda = self._load_cuda()
        try:
            self.accelerator = f"cuda:{cuda.device_name}"
            self._cuda_kind = cuda.kind
        finally:
            cuda.close()
        self.workspace_mb = workspace_mb
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)

    def _load_cuda(self) -> _agent.CudaApi:
        try:
            return _CudaApi.load(self.gpu_index)
        except _agent.AgentError as exc:
            raise HwAwareError(f"tensorrt: {exc}") from None

    @property
    def version(self) -> str:
        return str(self._trt.__version__)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cuda_api": self._cuda_kind}

    def build_engine(self, onnx: bytes, name: str, input_shape: tuple[int, ...] | None = None) -> bytes:
        """Build a serialized engine from ONNX bytes."""
        cuda = self._load_cuda()
        try:
            engine, _dynamic = _agent.build_trt_engine(self._trt, onnx, self.precision, self.workspace_mb,
                                                       input_shape, self._logger)
        except _agent.AgentError as exc:
            raise HwAwareError(f"{name}: {exc}") from None
        finally:
            cuda.close()
        return engine

    def open(self, model: ModelToMeasure) -> Session:
        if model.onnx is None:
            raise HwAwareError(f"{model.name}: the tensorrt backend needs an ONNX model")
        cuda = self._load_cuda()
        start = time.perf_counter()
        try:
            engine, _dynamic = _agent.build_trt_engine(self._trt, model.onnx, self.precision, self.workspace_mb,
                                                       model.input_shape, self._logger)
            runner = _agent.TrtRunner(self._trt, cuda, engine, model.input_shape, self._logger)
        except _agent.AgentError as exc:
            cuda.close()
            raise HwAwareError(f"{model.name}: {exc}") from None
        except Exception as exc:  # TensorRT raises RuntimeError/TypeError for what it cannot do
            cuda.close()
            raise HwAwareError(f"{model.name}: TensorRT failed: {_first_line(exc)}") from None
        return _TrtSession(runner, cuda, time.perf_counter() - start)


class _TrtSession(Session):
    """A TensorRT engine with its CUDA context; :meth:`close` frees the engine, then pops the context."""

    def __init__(self, runner: _agent.TrtRunner, cuda: _agent.CudaApi, build_time_s: float) -> None:
        self._runner, self._cuda = runner, cuda
        self.build_time_s = build_time_s

    def run_once(self) -> float:
        return self._runner.time_compute()

    def run_untimed(self, count: int) -> None:
        self._runner.run_untimed(count)

    def close(self) -> None:
        try:
            self._runner.close()
        finally:
            self._cuda.close()


# ------------------------------------------------------------------------------------------- helpers
def _import_or_fail(module: str, what: str, how: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HwAwareError(f"backend {what} is not installed here ({module} cannot be imported); {how}") from None
    except OSError as exc:  # e.g. a tensorrt wheel without its CUDA libraries
        raise HwAwareError(f"backend {what} cannot be loaded: {exc}; {how}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def get_backend(name: str, *, threads: int = 1, device: str | None = None, precision: str = "fp32") -> Backend:
    """Create a backend by name (``onnxruntime``, ``torch`` or ``tensorrt``).

    Raises :class:`HwAwareError` with what to install when its library is missing.

    Examples
    --------
    >>> get_backend("onnxruntime", threads=1).name
    'onnxruntime'
    """
    if name == "onnxruntime":
        return OnnxRuntimeBackend(threads, device or "cpu", precision)
    if name == "torch":
        return TorchBackend(threads, device or "cpu", precision)
    if name == "tensorrt":
        return TensorRTBackend(threads, device or "cuda", precision)
    raise HwAwareError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


# ----------------------------------------------------------------------------------- device description
def host_description() -> dict[str, Any]:
    """Host name, CPU model and core count, OS and Jetson model if any (stable across runs)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc: dict[str, Any] = {
        "host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count() or 1,
        "machine": platform.machine(), "os": platform.system(),
    }
    try:
        with open("/proc/device-tree/model", encoding="utf-8", errors="replace") as fh:
            desc["board"] = fh.read().strip("\x00 \n")
    except OSError:
        pass
    return desc
