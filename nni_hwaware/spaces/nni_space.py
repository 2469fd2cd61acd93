"""The NNI views of a space: an NNI 3.0 ``ModelSpace`` and an nnictl (HPO) search-space JSON.

Both are derived from the space file and map to architectures:

* **NAS samples** (``{label: value}`` dicts of the :class:`HwModelSpace`): one label per depth, per global,
  unit and block choice, with block labels for every position up to the unit's maximum depth, as OFA does.
  :func:`arch_to_sample` gives the canonical sample of an architecture (choices of blocks beyond a unit's depth
  set to their first value) and :func:`sample_to_arch` reads an architecture back, ignoring those inactive
  labels; the two are inverse on canonical samples.
* **nnictl parameter dicts**: the HPO search space uses NNI's *nested* choice, one per unit, whose ``_name``
  is the depth and whose nested choices are that many blocks. A parameter dict therefore names exactly one
  architecture and every architecture exactly one parameter dict. TPE, Random, Anneal and Evolution tuners
  support nested search spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nni
import torch
from nni.mutable import ensure_frozen
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import model_context

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces.builders import build_module
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space


# ------------------------------------------------------------------------------------ NAS samples
def depth_label(unit: str) -> str:
    """Label of a unit's depth."""
    return f"{unit}_depth"


def block_label(unit: str, block: int, choice: str) -> str:
    """Label of a block choice; ``block`` counts from 1."""
    return f"{unit}_b{block}_{choice}"


def nas_choices(space: SearchSpace) -> dict[str, list[Any]]:
    """Every label of the NAS model space and its candidate values, in a fixed order."""
    out: dict[str, list[Any]] = {f"global_{k}": list(v) for k, v in space.global_choices.items()}
    for unit in space.units:
        out[depth_label(unit.name)] = list(range(unit.min_depth, unit.max_depth + 1))
        out.update({f"{unit.name}_{k}": list(v) for k, v in space.unit_choices.items()})
        for j in range(1, unit.max_depth + 1):
            out.update({block_label(unit.name, j, k): list(v) for k, v in space.block_choices.items()})
    return out


def arch_to_sample(space: SearchSpace, arch: Any) -> dict[str, Any]:
    """The canonical NAS sample of an architecture."""
    arch = space.validate(arch)
    sample: dict[str, Any] = {f"global_{k}": v for k, v in arch.get("global", {}).items()}
    for spec, unit in zip(space.units, arch["units"]):
        sample[depth_label(spec.name)] = unit["depth"]
        sample.update({f"{spec.name}_{k}": unit[k] for k in space.unit_choices})
        blocks = unit.get("blocks", [])
        for j in range(1, spec.max_depth + 1):
            for k, values in space.block_choices.items():
                sample[block_label(spec.name, j, k)] = blocks[j - 1][k] if j <= len(blocks) else values[0]
    return sample


def sample_to_arch(space: SearchSpace, sample: Mapping[str, Any]) -> Architecture:
    """Read the architecture a NAS sample names (inactive block labels are ignored)."""

    def get(label: str) -> Any:
        if label not in sample:
            raise HwAwareError(f"NNI sample for space {space.name!r} lacks the label {label!r}")
        return sample[label]

    arch: Architecture = {}
    if space.global_choices:
        arch["global"] = {k: get(f"global_{k}") for k in space.global_choices}
    units = []
    for spec in space.units:
        depth = get(depth_label(spec.name))
        unit: dict[str, Any] = {"depth": depth}
        unit.update({k: get(f"{spec.name}_{k}") for k in space.unit_choices})
        if space.block_choices and isinstance(depth, int) and spec.min_depth <= depth <= spec.max_depth:
            unit["blocks"] = [
                {k: get(block_label(spec.name, j, k)) for k in space.block_choices} for j in range(1, depth + 1)
            ]
        units.append(unit)
    arch["units"] = units
    return space.validate(arch)


class HwModelSpace(ModelSpace):
    """NNI 3.0 model space of a declarative search space.

    Every choice of the space file is an ``nni.choice`` registered on this module; when NNI freezes a sample
    (``model_space.freeze(sample)``, or in a trial), the module builds the concrete network of the
    architecture the sample names. Use it with any multi-trial strategy in a ``NasExperiment``.

    Parameters
    ----------
    space
        Space name or path to a space file.
    input_size, width_mult, num_classes
        Overrides of the space defaults.

    Examples
    --------
    >>> model_space = HwModelSpace("resnet", num_classes=10)
    >>> arch = model_space.space.default_architecture()
    >>> net = model_space.freeze(arch_to_sample(model_space.space, arch))
    >>> net.architecture == arch
    True
    """

    def __init__(
        self,
        space: str = "resnet",
        input_size: int | None = None,
        width_mult: float | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.space = load_space(space)
        self.input_size = self.space.resolve_input_size(input_size)
        values = {
            label: ensure_frozen(self.add_mutable(nni.choice(label, candidates)))
            for label, candidates in nas_choices(self.space).items()
        }
        self.architecture = sample_to_arch(self.space, values)
        self.net = build_module(
            self.space, self.architecture, input_size=self.input_size, width_mult=width_mult, num_classes=num_classes
        )

    def freeze(self, sample: Mapping[str, Any]) -> HwModelSpace:
        """The concrete network of the architecture a sample names (a new module; weights are not shared)."""
        with model_context(dict(sample)):
            return self.__class__(*self.trace_args, **self.trace_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------- nnictl (HPO)
def hpo_search_space(space: SearchSpace) -> dict[str, Any]:
    """The nnictl search-space JSON of a space, using nested choices so parameter dicts are architectures."""
    out: dict[str, Any] = {
        f"global_{k}": {"_type": "choice", "_value": list(v)} for k, v in space.global_choices.items()
    }
    for unit in space.units:
        out.update({f"{unit.name}_{k}": {"_type": "choice", "_value": list(v)} for k, v in space.unit_choices.items()})
        depths = range(unit.min_depth, unit.max_depth + 1)
        if not space.block_choices:
            out[depth_label(unit.name)] = {"_type": "choice", "_value": list(depths)}
            continue
        options = []
        for depth in depths:
            option: dict[str, Any] = {"_name": depth}
            for j in range(1, depth + 1):
                option.update(
                    {f"b{j}_{k}": {"_type": "choice", "_value": list(v)} for k, v in space.block_choices.items()}
                )
            options.append(option)
        out[unit.name] = {"_type": "choice", "_value": options}
    return out


def hpo_params_to_arch(space: SearchSpace, params: Mapping[str, Any]) -> Architecture:
    """The architecture named by an nnictl parameter dict of :func:`hpo_search_space`."""

    def get(key: str) -> Any:
        if key not in params:
            raise HwAwareError(f"nnictl parameters for space {space.name!r} lack {key!r}")
        return params[key]

    arch: Architecture = {}
    if space.global_choices:
        arch["global"] = {k: get(f"global_{k}") for k in space.global_choices}
    units = []
    for spec in space.units:
        unit: dict[str, Any] = {}
        if space.block_choices:
            nested = get(spec.name)
            if not isinstance(nested, Mapping) or "_name" not in nested:
                raise HwAwareError(f"nnictl parameter {spec.name!r} must be a nested choice with '_name'")
            depth = nested["_name"]
            unit["depth"] = depth
            # only a depth in range gets blocks: validate() reports the others (and 10**9 must not loop)
            if isinstance(depth, int) and spec.min_depth <= depth <= spec.max_depth:
                unit["blocks"] = [
                    {k: nested.get(f"b{j}_{k}") for k in space.block_choices} for j in range(1, depth + 1)
                ]
        else:
            unit["depth"] = get(depth_label(spec.name))
        unit.update({k: get(f"{spec.name}_{k}") for k in space.unit_choices})
        units.append(unit)
    arch["units"] = units
    return space.validate(arch)


def arch_to_hpo_params(space: SearchSpace, arch: Any) -> dict[str, Any]:
    """The nnictl parameter dict naming an architecture (inverse of :func:`hpo_params_to_arch`)."""
    arch = space.validate(arch)
    params: dict[str, Any] = {f"global_{k}": v for k, v in arch.get("global", {}).items()}
    for spec, unit in zip(space.units, arch["units"]):
        params.update({f"{spec.name}_{k}": unit[k] for k in space.unit_choices})
        if space.block_choices:
            nested: dict[str, Any] = {"_name": unit["depth"]}
            for j, block in enumerate(unit["blocks"], start=1):
                nested.update({f"b{j}_{k}": v for k, v in block.items()})
            params[spec.name] = nested
        else:
            params[depth_label(spec.name)] = unit["depth"]
    return params
