"""Declarative NAS search spaces: one YAML file per space, from which everything else is derived.

From a space file this package derives the architecture type (validated JSON with a canonical form and a
stable hash), concrete PyTorch modules and their ONNX export, an NNI 3.0 ``ModelSpace``, an nnictl search
space, and random/balanced samplers.

Every input is checked here, so every command inherits the checks: space files field by field
(:mod:`~nni_hwaware.spaces.spacefile`), architecture JSON and files (:mod:`~nni_hwaware.spaces.archjson`),
and the numbers of the library functions (:mod:`~nni_hwaware.spaces.checks`), against the documented caps
of :mod:`~nni_hwaware.spaces.limits`. A bad input raises :class:`~nni_hwaware.errors.HwAwareError` (a bad
parameter: :class:`~nni_hwaware.errors.ParameterError`, also a ``ValueError``) whose message names the
field's path or the parameter.
"""

from __future__ import annotations

from nni_hwaware.lazy import lazy_exports

# Imported on first use (PEP 562): building modules needs torch and exporting needs onnx, which would cost a
# command that only reads a space file (``spaces show``, ``sample``) seconds of start-up.
_EXPORTS = {
    "STRATEGIES": "nni_hwaware.spaces.sampling",
    "sample_architectures": "nni_hwaware.spaces.sampling",
    "Architecture": "nni_hwaware.spaces.schema",
    "SearchSpace": "nni_hwaware.spaces.schema",
    "list_spaces": "nni_hwaware.spaces.schema",
    "load_space": "nni_hwaware.spaces.schema",
    "build_module": "nni_hwaware.spaces.builders",
    "example_input": "nni_hwaware.spaces.builders",
    "export_onnx": "nni_hwaware.spaces.export",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
