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

Architecture = dict[str, Any]
ChoiceValue = int | float | str

FAMILIES = ("resnet", "mobilenetv3", "densenet", "convnet")
_FLOAT_TOLERANCE = 1e-3  # 0.667 and 0.6667 both name the choice 2/3


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
    >>> space.num_architectures
    838308817954664436521779140...
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
        ``0.6667``); unknown keys, missing units, depths or values outside the space raise
        :class:`HwAwareError` with a message that says which field is wrong and what is allowed.
        """
        if isinstance(arch, str | bytes):
            try:
                arch = json.loads(arch)
            except json.JSONDecodeError as exc:
                raise HwAwareError(f"architecture is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(arch, Mapping):
            raise HwAwareError(f"an architecture of space {self.name!r} must be a JSON object, got {type(arch).__name__}")
        allowed_top = {"units"} | ({"global"} if self.global_choices else set())
        unknown = set(arch) - allowed_top
        if unknown:
            raise HwAwareError(
                f"unknown key(s) {sorted(unknown)} in {self.name!r} architecture; allowed: {sorted(allowed_top)}"
            )
        canonical: Architecture = {}
        if self.global_choices:
            canonical["global"] = self._check_choices(arch.get("global"), self.global_choices, "global")
        units = arch.get("units")
        if not isinstance(units, list):
            raise HwAwareError(f"{self.name!r} architecture needs a 'units' list with {len(self.units)} entries")
        if len(units) != len(self.units):
            raise HwAwareError(
                f"{self.name!r} architecture has {len(units)} unit(s), the space has {len(self.units)} "
                f"({', '.join(u.name for u in self.units)})"
            )
        canonical["units"] = [self._check_unit(i, spec, u) for i, (spec, u) in enumerate(zip(self.units, units))]
        return canonical

    def _check_unit(self, index: int, spec: UnitSpec, unit: Any) -> dict[str, Any]:
        where = f"unit {index + 1} ({spec.name})"
        if not isinstance(unit, Mapping):
            raise HwAwareError(f"{where} must be a JSON object with a 'depth'")
        allowed = {"depth"} | set(self.unit_choices) | ({"blocks"} if self.block_choices else set())
        unknown = set(unit) - allowed
        if unknown:
            raise HwAwareError(f"unknown key(s) {sorted(unknown)} in {where}; allowed: {sorted(allowed)}")
        depth = unit.get("depth")
        if isinstance(depth, bool) or not isinstance(depth, int | float) or int(depth) != depth:
            raise HwAwareError(f"{where} needs an integer 'depth' in {spec.min_depth}..{spec.max_depth}")
        depth = int(depth)
        if not spec.min_depth <= depth <= spec.max_depth:
            raise HwAwareError(
                f"{where} has depth {depth}, outside the space's range {spec.min_depth}..{spec.max_depth}"
            )
        unit_values = self._check_choices(
            {k: unit.get(k) for k in self.unit_choices}, self.unit_choices, where
        )
        blocks: list[Mapping[str, Any]] = []
        if self.block_choices:
            raw_blocks = unit.get("blocks")
            if not isinstance(raw_blocks, list) or len(raw_blocks) != depth:
                got = len(raw_blocks) if isinstance(raw_blocks, list) else "no"
                raise HwAwareError(f"{where} has depth {depth} but {got} 'blocks'; give one per block")
            blocks = [
                self._check_choices(b, self.block_choices, f"{where} block {j + 1}")
                for j, b in enumerate(raw_blocks)
            ]
        return self._make_unit(depth, unit_values, blocks)

    def _check_choices(
        self, values: Any, choices: Mapping[str, tuple[ChoiceValue, ...]], where: str
    ) -> dict[str, ChoiceValue]:
        if not isinstance(values, Mapping):
            raise HwAwareError(f"{where} must be a JSON object with {sorted(choices)}")
        unknown = set(values) - set(choices)
        if unknown:
            raise HwAwareError(f"unknown choice(s) {sorted(unknown)} in {where}; allowed: {sorted(choices)}")
        out: dict[str, ChoiceValue] = {}
        for name, allowed in choices.items():
            if name not in values or values[name] is None:
                raise HwAwareError(f"{where} is missing {name!r} (one of {list(allowed)})")
            out[name] = _snap(values[name], allowed, f"{where} {name}")
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
        """The input size to use: the override if given (checked), else the space default."""
        if input_size is None:
            return self.input_size
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise HwAwareError(f"--input-size must be a positive integer, got {input_size!r}")
        return int(input_size)


def bin_edges(lo: int, hi: int, num_bins: int) -> list[float]:
    """Edges of ``num_bins`` equal ranges over the total block counts ``lo..hi``.

    Bin ``i`` holds the integers in ``(edges[i], edges[i+1]]`` (the first bin also holds ``lo``).
    """
    width = (hi - lo) / num_bins
    return [lo + i * width for i in range(num_bins)] + [float(hi)]


def _snap(value: Any, allowed: tuple[ChoiceValue, ...], where: str) -> ChoiceValue:
    for choice in allowed:
        if isinstance(choice, str) or isinstance(value, str):
            if value == choice:
                return choice
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float) and abs(float(value) - float(choice)) <= _FLOAT_TOLERANCE:
            return choice
    raise HwAwareError(f"{where} is {value!r}, not one of the space's choices {list(allowed)}")


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
        If the space is unknown, the file cannot be read, or it is not a valid space file.
    """
    text_name = str(name_or_path)
    looks_like_path = text_name.endswith((".yaml", ".yml")) or "/" in text_name
    path = Path(text_name) if looks_like_path else _space_dir() / f"{text_name}.yaml"
    if not path.is_file():
        if looks_like_path:
            raise HwAwareError(f"space file {text_name} does not exist")
        raise HwAwareError(f"unknown space {text_name!r}; known spaces: {', '.join(list_spaces())}")
    return _load_space_file(str(path.resolve()))


def _load_space_file(path: str) -> SearchSpace:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise HwAwareError(f"cannot read space file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HwAwareError(f"space file {path} is not valid YAML{where}; fix the syntax") from None
    return parse_space(data, source=path)


def parse_space(data: Any, source: str = "<memory>") -> SearchSpace:
    """Build a :class:`SearchSpace` from the parsed content of a space file, checking every field."""

    def fail(msg: str) -> HwAwareError:
        return HwAwareError(f"space file {source}: {msg}")

    if not isinstance(data, Mapping):
        raise fail("must be a YAML mapping with name, family, defaults, units and choices")
    for key in ("name", "family", "units"):
        if key not in data:
            raise fail(f"missing required key {key!r}")
    known = {
        "name", "family", "description", "defaults", "options",
        "global_choices", "unit_choices", "block_choices", "units",
    }
    unknown = set(data) - known
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
    name = data["name"]
    if not isinstance(name, str) or not name.isidentifier():
        raise fail("'name' must be an identifier such as resnet")
    family = data["family"]
    if family not in FAMILIES:
        raise fail(f"family {family!r} is not one of {list(FAMILIES)}")
    defaults = {"input_size": 224, "width_mult": 1.0, "num_classes": 1000, "in_channels": 3}
    raw_defaults = data.get("defaults") or {}
    if not isinstance(raw_defaults, Mapping) or set(raw_defaults) - set(defaults):
        raise fail(f"'defaults' may only set {sorted(defaults)}")
    defaults.update(raw_defaults)
    for key in ("input_size", "num_classes", "in_channels"):
        if not isinstance(defaults[key], int) or isinstance(defaults[key], bool) or defaults[key] < 1:
            raise fail(f"defaults.{key} must be a positive integer")
    if not isinstance(defaults["width_mult"], int | float) or defaults["width_mult"] <= 0:
        raise fail("defaults.width_mult must be a positive number")

    def choices(key: str) -> dict[str, tuple[ChoiceValue, ...]]:
        raw = data.get(key) or {}
        if not isinstance(raw, Mapping):
            raise fail(f"{key!r} must map choice names to lists of values")
        out: dict[str, tuple[ChoiceValue, ...]] = {}
        for cname, values in raw.items():
            if not isinstance(cname, str) or not cname.isidentifier() or cname in ("depth", "blocks"):
                raise fail(f"{key}: {cname!r} is not a usable choice name")
            if not isinstance(values, list) or not values:
                raise fail(f"{key}.{cname} must be a non-empty list of values")
            if any(isinstance(v, bool) or not isinstance(v, int | float | str) for v in values):
                raise fail(f"{key}.{cname} values must be numbers or strings")
            if len(set(values)) != len(values):
                raise fail(f"{key}.{cname} lists a value twice")
            out[cname] = tuple(values)
        return out

    global_choices, unit_choices, block_choices = (
        choices("global_choices"), choices("unit_choices"), choices("block_choices")
    )
    overlap = (set(global_choices) & set(unit_choices)) | (set(unit_choices) & set(block_choices)) | (
        set(global_choices) & set(block_choices)
    )
    if overlap:
        raise fail(f"choice name(s) {sorted(overlap)} appear at more than one level")
    raw_units = data["units"]
    if not isinstance(raw_units, list) or not raw_units:
        raise fail("'units' must be a non-empty list")
    units = []
    for i, raw in enumerate(raw_units):
        if not isinstance(raw, Mapping) or not {"name", "min_depth", "max_depth"} <= set(raw):
            raise fail(f"unit {i + 1} needs name, min_depth and max_depth")
        lo, hi = raw["min_depth"], raw["max_depth"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 1 <= lo <= hi:
            raise fail(f"unit {i + 1}: need integers 1 <= min_depth <= max_depth")
        options = {k: v for k, v in raw.items() if k not in ("name", "min_depth", "max_depth")}
        units.append(UnitSpec(str(raw["name"]), lo, hi, options))
    if len({u.name for u in units}) != len(units):
        raise fail("unit names must be unique")
    space = SearchSpace(
        name=name,
        family=family,
        description=str(data.get("description", "")).strip(),
        defaults=defaults,
        options=dict(data.get("options") or {}),
        global_choices=global_choices,
        unit_choices=unit_choices,
        block_choices=block_choices,
        units=tuple(units),
        source=source,
    )
    from nni_hwaware.spaces.builders import check_family_requirements

    check_family_requirements(space, fail)
    return space
