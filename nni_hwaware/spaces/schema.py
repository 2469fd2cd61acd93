"""Search spaces as data: parse a space file and validate, canonicalise and hash its architectures.

A space file (YAML, one per space in ``search_spaces/``) is the single source of truth. It describes a fixed
macro-architecture made of *units*, each a stack of ``min_depth``..``max_depth`` *blocks*, and three levels of
choices:

``global_choices``
    one value per architecture (e.g. the layer type of the convnet space);
``unit_choices``
    one value per unit, shared by its blocks (e.g. DenseNet's kernel size);
``block_choices``
    one value per block (e.g. kernel size and expansion ratio of a ResNet bottleneck).

An *architecture* is a JSON object::

    {"global": {...},                      # only when the space has global choices
     "units": [{"depth": 2,                # one entry per unit, in order
                "kernel_size": 3,          # the unit's unit choices, if any
                "blocks": [{...}, {...}]}, # one dict of block choices per block, if the space has any
               ...]}

Its canonical form has exactly these keys, values snapped to the listed choices, and a stable hash
(SHA-256 of the canonical JSON with sorted keys, first 16 hex digits).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from nni_hwaware.errors import HwAwareError
from nni_hwaware.paths import data_dir
from nni_hwaware.spaces import limits
from nni_hwaware.spaces.archjson import parse_json_text, read_text_file
from nni_hwaware.spaces.checks import check_input_size, finite_real, show
from nni_hwaware.spaces.spacefile import (
    FAMILIES,
    FLOAT_TOLERANCE,
    SpaceFieldError,
    space_error,
    validate_space_data,
)

Architecture = dict[str, Any]
ChoiceValue = int | float | str

__all__ = ["FAMILIES", "Architecture", "SearchSpace", "UnitSpec", "list_spaces", "load_space", "parse_space"]
_FLOAT_TOLERANCE = FLOAT_TOLERANCE  # 0.667 and 0.6667 both name the choice 2/3


@dataclass(frozen=True)
class UnitSpec:
    """One unit of the macro-architecture: a stack of blocks of variable depth.

    Parameters
    ----------
    name
        Label of the unit, used in NNI labels and encodings.
    min_depth, max_depth
        Inclusive range of the number of blocks.
    options
        Fixed, family-specific details of the unit (width, stride, activation, ...).
    """

    name: str
    min_depth: int
    max_depth: int
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed space file.

    Use :func:`load_space` to get one by name or path. Architectures are plain JSON-able dicts; this class
    validates, canonicalises, hashes, counts and describes them. Building modules, NNI model spaces and
    samplers live in sibling modules and take a :class:`SearchSpace`.

    Parameters
    ----------
    name
        Space name (``resnet``, ``convnet``, ...).
    family
        Which module builder implements the blocks (one of :data:`FAMILIES`).
    description
        Human-readable description of the fixed macro-architecture.
    defaults
        ``input_size``, ``width_mult``, ``num_classes``, ``in_channels``: the paper's defaults, each
        overridable per command.
    options
        Fixed family-specific details (stem width, growth rate, ...).
    global_choices, unit_choices, block_choices
        Choice name -> allowed values, at each level.
    units
        The units in order.
    source
        The file the space was read from.

    Examples
    --------
    >>> space = load_space("resnet")
    >>> f"{float(space.num_architectures):.3g}"
    '8.38e+26'
    >>> arch = space.default_architecture()
    >>> space.validate(arch) == arch
    True
    """

    name: str
    family: str
    description: str
    defaults: Mapping[str, Any]
    options: Mapping[str, Any]
    global_choices: Mapping[str, tuple[ChoiceValue, ...]]
    unit_choices: Mapping[str, tuple[ChoiceValue, ...]]
    block_choices: Mapping[str, tuple[ChoiceValue, ...]]
    units: tuple[UnitSpec, ...]
    source: str = ""

    # ----------------------------------------------------------------------------------------- sizes
    @property
    def input_size(self) -> int:
        """Default input resolution."""
        return int(self.defaults["input_size"])

    @property
    def width_mult(self) -> float:
        """Default channel multiplier."""
        return float(self.defaults["width_mult"])

    @property
    def min_total_depth(self) -> int:
        """Smallest total block count of an architecture."""
        return sum(u.min_depth for u in self.units)

    @property
    def max_total_depth(self) -> int:
        """Largest total block count of an architecture."""
        return sum(u.max_depth for u in self.units)

    @cached_property
    def block_options_count(self) -> int:
        """Number of distinct blocks (combinations of block choices)."""
        return math.prod(len(v) for v in self.block_choices.values())

    @cached_property
    def num_architectures(self) -> int:
        """Exact number of distinct architectures."""
        total = math.prod(len(v) for v in self.global_choices.values())
        per_unit_choices = math.prod(len(v) for v in self.unit_choices.values())
        for unit in self.units:
            total *= per_unit_choices * sum(
                self.block_options_count**d for d in range(unit.min_depth, unit.max_depth + 1)
            )
        return total

    def describe(self) -> dict[str, Any]:
        """The JSON shown by ``nni-hwaware spaces show``."""
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "num_architectures": self.num_architectures,
            "num_architectures_sci": f"{float(self.num_architectures):.3g}",
            "defaults": dict(self.defaults),
            "options": dict(self.options),
            "units": [
                {"name": u.name, "min_depth": u.min_depth, "max_depth": u.max_depth, **dict(u.options)}
                for u in self.units
            ],
            "choices": {
                "global": {k: list(v) for k, v in self.global_choices.items()},
                "unit": {k: list(v) for k, v in self.unit_choices.items()},
                "block": {k: list(v) for k, v in self.block_choices.items()},
            },
            "total_depth_range": [self.min_total_depth, self.max_total_depth],
            "source": self.source,
        }

    # ------------------------------------------------------------------------------- architectures
    def default_architecture(self) -> Architecture:
        """The smallest architecture: minimum depths and the first value of every choice."""
        arch: Architecture = {}
        if self.global_choices:
            arch["global"] = {k: v[0] for k, v in self.global_choices.items()}
        arch["units"] = [
            self._make_unit(
                u.min_depth,
                {k: v[0] for k, v in self.unit_choices.items()},
                [{k: v[0] for k, v in self.block_choices.items()} for _ in range(u.min_depth)],
            )
            for u in self.units
        ]
        return arch

    def _make_unit(
        self, depth: int, unit_values: Mapping[str, Any], blocks: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        unit: dict[str, Any] = {"depth": depth, **unit_values}
        if self.block_choices:
            unit["blocks"] = [dict(b) for b in blocks]
        return unit

    def validate(self, arch: Any) -> Architecture:
        """Check an architecture against the space and return its canonical form.

        Accepts a dict or a JSON string. Numbers are snapped to the listed choice they name (``0.667`` is
        ``0.6667``); anything else (unknown or missing keys, depths or values outside the space, booleans,
        NaN, strings where numbers are expected) raises :class:`HwAwareError` whose message starts with the
        path of the bad field, e.g. ``units[1].blocks[0].kernel_size: 4 is not one of ...``.
        """
        if isinstance(arch, str | bytes | bytearray):
            arch = parse_json_text(arch)
        if not isinstance(arch, Mapping):
            raise HwAwareError(f"architecture: an architecture of space {self.name!r} must be a JSON object, "
                               f"got {show(arch)}")
        allowed_top = ("units", "global") if self.global_choices else ("units",)
        _check_keys(arch, allowed_top, "architecture")
        canonical: Architecture = {}
        if self.global_choices:
            canonical["global"] = self._check_choices(arch.get("global"), self.global_choices, "global")
        units = arch.get("units")
        if not isinstance(units, list):
            raise HwAwareError(f"units: {self.name!r} architecture needs a 'units' list with {len(self.units)} "
                               f"entries, got {show(units)}")
        if len(units) != len(self.units):
            raise HwAwareError(
                f"units: the architecture has {len(units)} unit(s), the space {self.name!r} has {len(self.units)} "
                f"({', '.join(u.name for u in self.units)})"
            )
        canonical["units"] = [self._check_unit(i, spec, u) for i, (spec, u) in enumerate(zip(self.units, units))]
        return canonical

    def _check_unit(self, index: int, spec: UnitSpec, unit: Any) -> dict[str, Any]:
        where = f"units[{index}]"
        if not isinstance(unit, Mapping):
            raise HwAwareError(f"{where}: unit {spec.name} must be a JSON object with a 'depth', got {show(unit)}")
        allowed = ("depth", *self.unit_choices, *(("blocks",) if self.block_choices else ()))
        _check_keys(unit, allowed, where)
        depth = _check_depth(unit.get("depth"), spec, f"{where}.depth")
        unit_values = self._check_choices(
            {k: unit[k] for k in self.unit_choices if k in unit}, self.unit_choices, where
        )
        blocks: list[Mapping[str, Any]] = []
        if self.block_choices:
            raw_blocks = unit.get("blocks")
            if not isinstance(raw_blocks, list) or len(raw_blocks) != depth:
                got = len(raw_blocks) if isinstance(raw_blocks, list) else "no"
                raise HwAwareError(f"{where}.blocks: the unit has depth {depth} but {got} 'blocks'; "
                                   "give one per block")
            blocks = [
                self._check_choices(b, self.block_choices, f"{where}.blocks[{j}]") for j, b in enumerate(raw_blocks)
            ]
        return self._make_unit(depth, unit_values, blocks)

    def _check_choices(
        self, values: Any, choices: Mapping[str, tuple[ChoiceValue, ...]], where: str
    ) -> dict[str, ChoiceValue]:
        if not isinstance(values, Mapping):
            raise HwAwareError(f"{where}: must be a JSON object with {sorted(choices)}, got {show(values)}")
        _check_keys(values, tuple(choices), where)
        out: dict[str, ChoiceValue] = {}
        for name, allowed in choices.items():
            if name not in values or values[name] is None:
                raise HwAwareError(f"{where}: missing {name!r} (one of {list(allowed)})")
            out[name] = _snap(values[name], allowed, f"{where}.{name}")
        return out

    def canonical_json(self, arch: Any) -> str:
        """The canonical JSON text of an architecture (sorted keys, no spaces)."""
        return json.dumps(self.validate(arch), sort_keys=True, separators=(",", ":"))

    def arch_hash(self, arch: Any) -> str:
        """A stable 16-hex-digit hash of the canonical architecture, prefixed by nothing space-specific."""
        return hashlib.sha256(self.canonical_json(arch).encode()).hexdigest()[:16]

    def total_depth(self, arch: Architecture) -> int:
        """Total number of blocks of an (already valid) architecture."""
        return sum(int(u["depth"]) for u in arch["units"])

    def depth_bin(self, total_depth: int, num_bins: int) -> int:
        """Index of the bin holding ``total_depth`` when the total depth range is split in equal ranges."""
        lo, hi = self.min_total_depth, self.max_total_depth
        if num_bins <= 1 or hi == lo:
            return 0
        edges = bin_edges(lo, hi, num_bins)
        for i in range(num_bins):
            if total_depth <= edges[i + 1]:
                return i
        return num_bins - 1

    def resolve_input_size(self, input_size: int | None) -> int:
        """The input size to use: the override if given, else the space default.

        Raises
        ------
        ParameterError
            If the override is not an integer in ``1..MAX_INPUT_SIZE`` (4096).
        """
        if input_size is None:
            return self.input_size
        return check_input_size(input_size)

    @cached_property
    def fingerprint(self) -> str:
        """A 16-hex-digit hash of the space's canonical content: everything that defines its architectures
        and their networks (name, family, defaults, options, units, choices), not its description or file.

        Two space files with the same name but different content have different fingerprints, so data keyed
        by fingerprint never mixes them. ESM predictors record it as ``space_fingerprint``.
        """
        ignored = ("description", "source", "num_architectures_sci")
        content = {k: v for k, v in self.describe().items() if k not in ignored}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bin_edges(lo: int, hi: int, num_bins: int) -> list[float]:
    """Edges of ``num_bins`` equal ranges over the total block counts ``lo..hi``.

    Bin ``i`` holds the integers in ``(edges[i], edges[i+1]]`` (the first bin also holds ``lo``).
    """
    width = (hi - lo) / num_bins
    return [lo + i * width for i in range(num_bins)] + [float(hi)]


def _check_keys(obj: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        shown = ", ".join(show(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise HwAwareError(f"{where}: unknown key(s) {shown}; allowed: {', '.join(allowed)}")


def _check_depth(value: Any, spec: UnitSpec, where: str) -> int:
    # 2.0 is accepted as 2 (JSON has one number type); 2.5, true, NaN and 1e400 are not depths
    number = finite_real(value)
    if number is None or not number.is_integer():
        raise HwAwareError(f"{where}: must be an integer in {spec.min_depth}..{spec.max_depth}, got {show(value)}")
    if not spec.min_depth <= number <= spec.max_depth:
        raise HwAwareError(
            f"{where}: depth {show(value)} is outside the space's range {spec.min_depth}..{spec.max_depth} "
            f"of unit {spec.name}"
        )
    return int(number)


def _snap(value: Any, allowed: tuple[ChoiceValue, ...], where: str) -> ChoiceValue:
    number = finite_real(value)
    for choice in allowed:
        if isinstance(choice, str) or isinstance(value, str):
            if value == choice:
                return choice
        elif number is not None and abs(number - float(choice)) <= _FLOAT_TOLERANCE:
            return choice
    raise HwAwareError(f"{where}: {show(value)} is not one of the space's choices {list(allowed)}")


# ------------------------------------------------------------------------------------------ loading
def _space_dir() -> Path:
    return data_dir("search_spaces")


def list_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in _space_dir().glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a space by name (a file in ``search_spaces/``) or by path to a YAML file.

    Raises
    ------
    HwAwareError
        If the space is unknown, the file cannot be read, or it is not a valid space file (the message names
        the bad field, e.g. ``units[2].stride``).
    """
    text_name = str(name_or_path)
    looks_like_path = text_name.endswith((".yaml", ".yml")) or "/" in text_name
    path = Path(text_name) if looks_like_path else _space_dir() / f"{text_name}.yaml"
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a NUL character or an over-long name
        exists = False
    if not exists:
        if looks_like_path:
            raise HwAwareError(f"space file {text_name} does not exist")
        raise HwAwareError(f"unknown space {show(text_name)}; known spaces: {', '.join(list_spaces())}")
    return _load_space_file(str(path.resolve()))


def _load_space_file(path: str) -> SearchSpace:
    text = read_text_file(path, "space file", limits.MAX_SPACE_FILE_BYTES)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HwAwareError(f"space file {path} is not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise HwAwareError(f"space file {path} is not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise HwAwareError(f"space file {path} is not valid YAML: {str(exc).split(':')[0]}") from None
    return parse_space(data, source=path)


def parse_space(data: Any, source: str = "<memory>") -> SearchSpace:
    """Build a :class:`SearchSpace` from the parsed content of a space file, checking every field.

    Raises
    ------
    HwAwareError
        For the first bad field: ``space file SOURCE: PATH: what is wrong``, e.g.
        ``space file x.yaml: block_choices.kernel_size[1]: kernel sizes must be odd positive integers, got 4``.
    """
    try:
        fields = validate_space_data(data)
    except SpaceFieldError as exc:
        raise space_error(source, exc) from None
    units = tuple(UnitSpec(name, lo, hi, options) for name, lo, hi, options in fields.pop("units"))
    space = SearchSpace(**fields, units=units, source=source)
    if space.num_architectures > limits.MAX_ARCHITECTURES:
        exponent = int(math.log10(space.num_architectures))
        raise space_error(source, SpaceFieldError(
            "units", f"the depth ranges and choices give about 1e{exponent} architectures; at most 1e300 "
            "can be counted (narrow the depth ranges or the choice lists)"))
    return space
