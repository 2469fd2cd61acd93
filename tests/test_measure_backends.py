"""Backends behind one interface: onnxruntime (CPU), PyTorch eager, TensorRT (GPU machines only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.backends import ModelToMeasure, get_backend
from nni_hwaware.measure.protocol import Protocol
from nni_hwaware.measure.runner import Measurer, architecture_model
from nni_hwaware.spaces import load_space, sample_architectures


def _dynamic_batch_onnx() -> bytes:
    """A one-node ONNX model with a symbolic batch dimension, as exported by many tools."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_onnxruntime_records_threads_version_provider_and_times_runs():
    backend = get_backend("onnxruntime", threads=2)
    description = backend.describe()
    assert description["threads"] == 2 and description["provider"] == "CPUExecutionProvider"
    assert description["backend_version"] == __import__("onnxruntime").__version__
    space = load_space("convnet")
    arch = sample_architectures(space, 1, seed=0)[0]
    with backend.open(architecture_model(space, arch, "onnxruntime", 8)) as session:
        times = [session.run_once() for _ in range(5)]
    assert all(t > 0 for t in times)
    assert session.build_time_s > 0


def test_onnxruntime_fills_a_symbolic_batch_dimension_with_one():
    with get_backend("onnxruntime").open(ModelToMeasure("relu.onnx", None, onnx=_dynamic_batch_onnx())) as s:
        assert s._feeds["x"].shape == (1, 8)
        assert s.run_once() > 0


def test_torch_backend_measures_the_same_architecture_on_cpu():
    space = load_space("mobilenetv3")
    arch = sample_architectures(space, 1, seed=2)[0]
    measurer = Measurer(get_backend("torch", threads=1), Protocol(runs=10, warmup=2))
    result = measurer.measure(architecture_model(space, arch, "torch", 16))
    assert result.timing.runs == 10 and result.timing.mean_ms > 0
    assert measurer.device_description["backend_version"] == torch.__version__
    assert torch.get_num_threads() == 1


def test_unavailable_backends_and_settings_are_clear_errors():
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(HwAwareError, match="tensorrt is not installed"):
            get_backend("tensorrt")
    with pytest.raises(HwAwareError, match="fp32 only"):
        get_backend("onnxruntime", precision="fp16")
    with pytest.raises(HwAwareError, match="unknown backend"):
        get_backend("openvino")
    with pytest.raises(HwAwareError, match="onnxruntime or tensorrt"):
        get_backend("torch").open(ModelToMeasure("x.onnx", None, onnx=_dynamic_batch_onnx()))
    with pytest.raises(HwAwareError, match="cannot load"):
        get_backend("onnxruntime").open(ModelToMeasure("bad.onnx", None, onnx=b"not onnx"))


def _tensorrt_ready() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    if importlib.util.find_spec("pycuda") is None and importlib.util.find_spec("cuda") is None:
        return False
    return torch.cuda.is_available() or bool(__import__("shutil").which("nvidia-smi"))


@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs an NVIDIA GPU with tensorrt and pycuda/cuda-python")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_an_engine_and_times_it_with_cuda_events(precision):
    space = load_space("convnet")
    arch = sample_architectures(space, 1, seed=0)[0]
    backend = get_backend("tensorrt", precision=precision)
    assert backend.describe()["accelerator"].startswith("cuda:")
    with backend.open(architecture_model(space, arch, "tensorrt", 32)) as session:
        assert session.build_time_s > 0
        times = [session.run_once() for _ in range(20)]
        session.run_untimed(10)
    assert np.median(times) > 0
    # a model with a dynamic batch dimension from a file
    with backend.open(ModelToMeasure("relu.onnx", None, onnx=_dynamic_batch_onnx())) as session:
        assert session.run_once() > 0


def test_onnx_check_of_exported_architecture():
    space = load_space("convnet")
    model = architecture_model(space, space.default_architecture(), "onnxruntime", 8)
    onnx.checker.check_model(onnx.load_model_from_string(model.onnx))
    assert model.input_shape == (1, 3, 8, 8)
