"""Complete validation of a space file's content, as rule tables: one table of fields per family.

A space file is checked field by field before anything is built from it, so a bad value is reported with
the path of its field (``units[2].stride``, ``block_choices.kernel_size[1]``) instead of crashing a builder
later, or worse, building a nonsense network. Each family's table lists every option, unit field and choice
its builder reads (:mod:`nni_hwaware.spaces.builders`) with the values that build; keys not in the table are
refused, as are booleans where numbers are expected (YAML reads ``yes`` as ``true``) and anything beyond the
caps of :mod:`nni_hwaware.spaces.limits`.

:func:`validate_space_data` returns the checked fields; :func:`nni_hwaware.spaces.schema.parse_space` turns
them into a :class:`~nni_hwaware.spaces.schema.SearchSpace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces import limits
from nni_hwaware.spaces.checks import finite_real, is_int, show

FAMILIES = ("resnet", "mobilenetv3", "densenet", "convnet")
# Two numbers closer than this name the same choice (0.667 and 0.6667 are both 2/3); see schema._snap.
FLOAT_TOLERANCE = 1e-3
_MAX_KEYS_SHOWN = 5  # unknown keys listed in a message


class SpaceFieldError(Exception):
    """A bad field of a space file: the path of the field and what is wrong with it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


# A check takes a value and its path and returns the value to keep (raising SpaceFieldError if it is bad).
Check = Callable[[Any, str], Any]


# ------------------------------------------------------------------------------------- value checks
def integer(lo: int, hi: int, what: str) -> Check:
    """An integer (not a boolean) in ``lo..hi``; ``what`` names the kind of value in messages."""

    def check(value: Any, path: str) -> int:
        if not is_int(value) or not lo <= value <= hi:
            raise SpaceFieldError(path, f"{what} must be integers in {lo}..{hi}, got {show(value)}")
        return value

    return check


def odd_kernel(value: Any, path: str) -> int:
    """A kernel size of a family that pads by ``k // 2`` to keep the resolution: odd, so padding is symmetric."""
    if not is_int(value) or value < 1 or value % 2 == 0:
        raise SpaceFieldError(path, f"kernel sizes must be odd positive integers, got {show(value)}")
    if value > limits.MAX_KERNEL_SIZE:
        raise SpaceFieldError(path, f"kernel sizes must be at most {limits.MAX_KERNEL_SIZE}, got {show(value)}")
    return value


def number(lo: float, hi: float, what: str, *, lo_inclusive: bool = False) -> Check:
    """A finite real number (not a boolean) in ``(lo, hi]`` (or ``[lo, hi]``)."""
    bracket = "[" if lo_inclusive else "("

    def check(value: Any, path: str) -> int | float:
        real = finite_real(value)
        if real is None or real > hi or real < lo or (real == lo and not lo_inclusive):
            interval = f"{bracket}{lo:g}, {hi:g}]"
            raise SpaceFieldError(path, f"{what} must be finite numbers in {interval}, got {show(value)}")
        return value

    return check


def word(*allowed: str) -> Check:
    """One of the given strings."""

    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise SpaceFieldError(path, f"must be one of {list(allowed)}, got {show(value)}")
        return value

    return check


def boolean(value: Any, path: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise SpaceFieldError(path, f"must be true or false, got {show(value)}")
    return value


def identifier(value: Any, path: str) -> str:
    """A Python identifier of at most 64 characters (names become NNI labels and encoding columns)."""
    if not isinstance(value, str) or not value.isidentifier() or len(value) > 64:
        raise SpaceFieldError(path, f"must be an identifier such as resnet or unit1, got {show(value)}")
    return value


def text(value: Any, path: str) -> str:
    """Free text."""
    if not isinstance(value, str):
        raise SpaceFieldError(path, f"must be text, got {show(value)}")
    return value.strip()


channels = integer(1, limits.MAX_CHANNELS, "channel counts")
stride = integer(1, limits.MAX_STRIDE, "strides")
ratio = number(0, limits.MAX_CHANNEL_RATIO, "channel ratios")
expand_ratio = number(0, limits.MAX_EXPAND_RATIO, "expansion ratios")
any_kernel = integer(1, limits.MAX_KERNEL_SIZE, "kernel sizes")  # convnet: padding is explicit, even k builds
padding = integer(0, limits.MAX_PADDING, "paddings")


# ------------------------------------------------------------------------------------ family tables
@dataclass(frozen=True)
class FamilyRules:
    """What one family's builder reads from a space file, and the values of each field that build.

    ``options``, ``unit`` and the three choice tables are required; ``unit_optional`` fields may be left out
    (the builder has a default). ``units`` is the allowed range of the number of units.
    """

    options: Mapping[str, Check]
    unit: Mapping[str, Check] = field(default_factory=dict)
    unit_optional: Mapping[str, Check] = field(default_factory=dict)
    global_choices: Mapping[str, Check] = field(default_factory=dict)
    unit_choices: Mapping[str, Check] = field(default_factory=dict)
    block_choices: Mapping[str, Check] = field(default_factory=dict)
    units: tuple[int, int] = (1, limits.MAX_UNITS)


_BLOCKS = {"kernel_size": odd_kernel, "expand_ratio": expand_ratio}
RULES: dict[str, FamilyRules] = {
    "resnet": FamilyRules(
        options={"stem_channels": channels, "bottleneck_reduction": ratio},
        unit={"width": channels, "stride": stride},
        block_choices=_BLOCKS,
    ),
    "mobilenetv3": FamilyRules(
        options={"stem_channels": channels, "max_expand": ratio, "head_expand": ratio, "last_channels": channels},
        unit={"width": channels, "stride": stride},
        unit_optional={"activation": word("relu", "hswish"), "se": boolean},
        block_choices=_BLOCKS,
    ),
    "densenet": FamilyRules(
        options={
            "stem_channels": channels,
            "growth_rate": channels,
            "bn_size": integer(1, limits.MAX_CHANNEL_RATIO, "bottleneck sizes"),
            "compression": number(0, 1, "compressions"),
        },
        unit_choices={"kernel_size": odd_kernel},
    ),
    "convnet": FamilyRules(
        options={},
        global_choices={"layer_type": word("plain", "dws"), "filters": channels},
        block_choices={"kernel_size": any_kernel, "padding": padding},
        units=(1, 1),
    ),
}

# Defaults of every space, each overridable per command; the checks match the library's parameter checks.
DEFAULTS: dict[str, tuple[Any, Check]] = {
    "input_size": (224, integer(1, limits.MAX_INPUT_SIZE, "input sizes")),
    "width_mult": (1.0, number(0, limits.MAX_WIDTH_MULT, "channel multipliers")),
    "num_classes": (1000, integer(1, limits.MAX_NUM_CLASSES, "class counts")),
    "in_channels": (3, integer(1, limits.MAX_IN_CHANNELS, "input channel counts")),
}
_TOP_REQUIRED = ("name", "family", "units")
_TOP_OPTIONAL = ("description", "defaults", "options", "global_choices", "unit_choices", "block_choices")
_DEPTH_KEYS = ("name", "min_depth", "max_depth")


# ------------------------------------------------------------------------------------------ helpers
def _keys(keys: list[Any]) -> str:
    shown = ", ".join(show(k) for k in keys[:_MAX_KEYS_SHOWN])
    return shown + (", ..." if len(keys) > _MAX_KEYS_SHOWN else "")


def mapping(value: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> Mapping[str, Any]:
    """A mapping with string keys, all of ``required`` and nothing outside ``required`` and ``optional``."""
    required = tuple(required)
    allowed = set(required) | set(optional)
    if not isinstance(value, Mapping):
        raise SpaceFieldError(path, f"must be a mapping, got {show(value)}")
    unknown = [k for k in value if not isinstance(k, str) or k not in allowed]
    if unknown:
        hint = f"allowed: {', '.join(sorted(allowed))}" if allowed else "nothing is allowed here"
        raise SpaceFieldError(path, f"unknown key(s) {_keys(unknown)}; {hint}")
    missing = [k for k in required if k not in value]
    if missing:
        raise SpaceFieldError(path, f"missing required key(s) {', '.join(missing)}")
    return value


def _section(data: Mapping[str, Any], key: str) -> Any:
    # an empty section (``options:`` with nothing after it) reads as null in YAML: the same as {}
    value = data.get(key)
    return {} if value is None else value


def _checked_fields(value: Any, path: str, rules: Mapping[str, Check], optional: Mapping[str, Check]) -> dict:
    """Check a mapping field by field against a table; keeps the file's key order."""
    checked = mapping(value, path, rules, optional)
    table = {**rules, **optional}
    return {k: table[k](v, f"{path}.{k}") for k, v in checked.items()}


def _choice_list(values: Any, path: str, check: Check) -> tuple[Any, ...]:
    """A non-empty list of distinct values, each passing ``check``."""
    if not isinstance(values, list) or not 1 <= len(values) <= limits.MAX_CHOICE_VALUES:
        raise SpaceFieldError(path, f"must be a list of 1..{limits.MAX_CHOICE_VALUES} values, got {show(values)}")
    out = tuple(check(v, f"{path}[{i}]") for i, v in enumerate(values))
    for j, value in enumerate(out):
        for i in range(j):
            if _same_choice(out[i], value):
                raise SpaceFieldError(f"{path}[{j}]", f"{show(value)} repeats {path}[{i}] ({show(out[i])})")
    return out


def _same_choice(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return abs(float(a) - float(b)) <= FLOAT_TOLERANCE


def _choices(data: Mapping[str, Any], key: str, rules: Mapping[str, Check]) -> dict[str, tuple[Any, ...]]:
    checked = mapping(_section(data, key), key, rules)
    return {name: _choice_list(values, f"{key}.{name}", rules[name]) for name, values in checked.items()}


# ---------------------------------------------------------------------------------------- sections
def _defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    given = mapping(_section(data, "defaults"), "defaults", (), DEFAULTS)
    out = {}
    for key, (default, check) in DEFAULTS.items():
        out[key] = check(given[key], f"defaults.{key}") if key in given else default
    out["width_mult"] = float(out["width_mult"])  # 1 and 1.0 are the same space
    return out


def _unit(raw: Any, path: str, rules: FamilyRules) -> tuple[str, int, int, dict[str, Any]]:
    unit = mapping(raw, path, (*_DEPTH_KEYS, *rules.unit), rules.unit_optional)
    name = identifier(unit["name"], f"{path}.name")
    depth = integer(1, limits.MAX_UNIT_DEPTH, "depths")
    lo = depth(unit["min_depth"], f"{path}.min_depth")
    hi = depth(unit["max_depth"], f"{path}.max_depth")
    if hi < lo:
        raise SpaceFieldError(f"{path}.max_depth", f"must be at least min_depth ({lo}), got {hi}")
    table = {**rules.unit, **rules.unit_optional}
    options = {k: table[k](v, f"{path}.{k}") for k, v in unit.items() if k not in _DEPTH_KEYS}
    return name, lo, hi, options


def _units(data: Mapping[str, Any], family: str, rules: FamilyRules) -> list[tuple[str, int, int, dict]]:
    raw = data["units"]
    lo, hi = rules.units
    if not isinstance(raw, list) or not lo <= len(raw) <= hi:
        count = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise SpaceFieldError("units", f"family {family} needs a list of {count} unit(s), got {show(raw)}"
                              + (f" of {len(raw)}" if isinstance(raw, list) else ""))
    units = [_unit(u, f"units[{i}]", rules) for i, u in enumerate(raw)]
    names = [u[0] for u in units]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SpaceFieldError(f"units[{i}].name", f"{name!r} is the name of another unit; names must be unique")
    total = sum(u[2] for u in units)
    if total > limits.MAX_TOTAL_DEPTH:
        raise SpaceFieldError(
            "units", f"the max_depth values add up to {total} blocks; at most {limits.MAX_TOTAL_DEPTH} can be built"
        )
    return units


def validate_space_data(data: Any) -> dict[str, Any]:
    """Check the parsed content of a space file completely; return its fields.

    Returns
    -------
    dict
        ``name``, ``family``, ``description``, ``defaults``, ``options``, ``global_choices``,
        ``unit_choices``, ``block_choices`` (choice name -> tuple of values, in file order) and ``units``
        (a list of ``(name, min_depth, max_depth, options)``).

    Raises
    ------
    SpaceFieldError
        For the first bad field, with its path.
    """
    if not isinstance(data, Mapping):
        raise SpaceFieldError("file", f"must be a YAML mapping with {', '.join(_TOP_REQUIRED)}, got {show(data)}")
    mapping(data, "file", _TOP_REQUIRED, _TOP_OPTIONAL)
    name = identifier(data["name"], "name")
    family = data["family"]
    if not isinstance(family, str) or family not in FAMILIES:
        raise SpaceFieldError("family", f"family {show(family)} is not one of {list(FAMILIES)}")
    rules = RULES[family]
    fields: dict[str, Any] = {"name": name, "family": family}
    description = data.get("description")
    fields["description"] = text("" if description is None else description, "description")
    fields["defaults"] = _defaults(data)
    fields["units"] = _units(data, family, rules)
    fields["options"] = _checked_fields(_section(data, "options"), "options", rules.options, {})
    for level in ("global_choices", "unit_choices", "block_choices"):
        fields[level] = _choices(data, level, getattr(rules, level))
    return fields


def space_error(source: str, exc: SpaceFieldError) -> HwAwareError:
    """The user-facing error for a bad field of the space file ``source``."""
    return HwAwareError(f"space file {source}: {exc}")
