"""ONNX export of one architecture, written atomically so a failed export never leaves a partial file
(:func:`nni_hwaware.artifacts.write_atomically`)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from nni_hwaware.artifacts import write_atomically
from nni_hwaware.spaces.builders import build_module, example_input
from nni_hwaware.spaces.schema import SearchSpace

OPSET = 17


def module_to_onnx_bytes(model: torch.nn.Module, example: Any, opset: int = OPSET) -> bytes:
    """Export a module to ONNX (TorchScript exporter, opset 17 by default, input ``input``, output ``output``)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (example,), buffer, dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"],
        )
    return buffer.getvalue()


def export_onnx(
    space: SearchSpace,
    arch: Any,
    out: str | Path | None = None,
    *,
    input_size: int | None = None,
    width_mult: float | None = None,
    num_classes: int | None = None,
) -> bytes:
    """Build an architecture and export it to ONNX; write it to ``out`` if given and return the bytes.

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> space = load_space("convnet")
    >>> onnx_bytes = export_onnx(space, space.default_architecture(), input_size=32)
    """
    model = build_module(space, arch, input_size=input_size, width_mult=width_mult, num_classes=num_classes)
    data = module_to_onnx_bytes(model, example_input(space, input_size))
    if out is not None:
        write_atomically(out, data)
    return data
