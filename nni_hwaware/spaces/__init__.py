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

from nni_hwaware.spaces.builders import build_module, example_input
from nni_hwaware.spaces.export import export_onnx
from nni_hwaware.spaces.sampling import STRATEGIES, sample_architectures
from nni_hwaware.spaces.schema import Architecture, SearchSpace, list_spaces, load_space

__all__ = [
    "STRATEGIES",
    "Architecture",
    "SearchSpace",
    "build_module",
    "example_input",
    "export_onnx",
    "list_spaces",
    "load_space",
    "sample_architectures",
]
