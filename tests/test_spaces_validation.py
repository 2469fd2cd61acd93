"""Property tests of the validators: what they accept builds, what they refuse is refused by path.

* Space files: random valid variations of every shipped space (other depths, widths, strides, kernels,
  ratios, choices) parse, and a sampled architecture builds and exports to ONNX; a shipped space with any
  one node replaced by a bad value is refused with a :class:`HwAwareError` naming that node's path.
* Architectures: any JSON value, and any valid architecture with one node replaced by any JSON value, either
  gives :class:`HwAwareError` or a canonical architecture that validates to itself and builds.
* Parameters of the library: out-of-range seeds, counts, bins, input sizes and width multipliers raise
  :class:`ParameterError` (a ``ValueError``) naming the parameter; the space fingerprint is a property of
  the content, not of the name or file.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
import yaml
from badinput import field_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.paths import data_dir
from nni_hwaware.spaces import build_module, example_input, export_onnx, load_space, sample_architectures
from nni_hwaware.spaces.archjson import read_architecture_lines
from nni_hwaware.spaces.schema import parse_space

SPACES = ("resnet", "mobilenetv3", "densenet", "convnet")
SHIPPED = {name: yaml.safe_load((data_dir("search_spaces") / f"{name}.yaml").read_text()) for name in SPACES}
# Small networks keep a build and an ONNX export well under a second.
SMALL = {"resnet": (32, 0.125), "mobilenetv3": (32, 0.25), "densenet": (32, 0.25), "convnet": (24, 0.0625)}


# --------------------------------------------------------------------------------- tree helpers
def _nodes(data: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every node below the root of a YAML/JSON tree (mapping keys and list indices)."""
    out = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append((*path, key))
        out += _nodes(value, (*path, key))
    return out


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def _replace(data: Any, path: tuple, value: Any) -> Any:
    data = copy.deepcopy(data)
    _get(data, path[:-1])[path[-1]] = value
    return data


# -------------------------------------------------------------------------- valid space variations
_ODD = st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=3, unique=True)
_RATIOS = st.lists(st.sampled_from([0.25, 0.5, 0.6667, 1.0, 1.5]), min_size=1, max_size=3, unique=True)
_OPTIONS = {
    "stem_channels": st.sampled_from([8, 16]),
    "bottleneck_reduction": st.sampled_from([1, 2, 2.5, 4]),
    "max_expand": st.sampled_from([1, 3, 6]),
    "head_expand": st.sampled_from([1, 2, 6]),
    "last_channels": st.sampled_from([16, 64]),
    "growth_rate": st.sampled_from([4, 8, 12]),
    "bn_size": st.sampled_from([1, 2, 4]),
    "compression": st.sampled_from([0.25, 0.5, 1.0]),
}
_CHOICES = {
    "kernel_size": _ODD,
    "expand_ratio": _RATIOS,
    "layer_type": st.lists(st.sampled_from(["plain", "dws"]), min_size=1, max_size=2, unique=True),
    "filters": st.lists(st.integers(1, 32), min_size=1, max_size=4, unique=True),
    "padding": st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
}


@st.composite
def _unit(draw: st.DrawFn, template: dict[str, Any], index: int) -> dict[str, Any]:
    lo = draw(st.integers(1, 2))
    unit = {"name": f"u{index}", "min_depth": lo, "max_depth": draw(st.integers(lo, 3))}
    if "width" in template:
        unit["width"] = draw(st.sampled_from([8, 16, 24, 48]))
        unit["stride"] = draw(st.integers(1, 3))
    if "activation" in template:
        unit["activation"] = draw(st.sampled_from(["relu", "hswish"]))
        unit["se"] = draw(st.booleans())
    return unit


@st.composite
def valid_variation(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A shipped space with every field redrawn from values that build small networks."""
    data = copy.deepcopy(SHIPPED[name])
    count = 1 if name == "convnet" else draw(st.integers(1, 4))
    data["units"] = [draw(_unit(data["units"][0], i)) for i in range(count)]
    data["options"] = {k: draw(_OPTIONS[k]) for k in data["options"]}
    for level in ("global_choices", "unit_choices", "block_choices"):
        data[level] = {k: draw(_CHOICES[k]) for k in data[level]}
    data["defaults"] = {
        "input_size": draw(st.integers(20, 40)), "width_mult": draw(st.sampled_from([0.5, 1, 1.0])),
        "num_classes": draw(st.integers(1, 10)), "in_channels": draw(st.integers(1, 4)),
    }
    if name == "convnet":  # at most 3 layers of kernel 7 and padding 0 shrink the input by 18 pixels
        data["defaults"]["input_size"] = draw(st.integers(19, 40))
    return data


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_valid_space_variations_build_and_export(name: str, data: st.DataObject) -> None:
    content = data.draw(valid_variation(name))
    space = parse_space(yaml.safe_load(yaml.safe_dump(content)), source="variation.yaml")
    seed = data.draw(st.integers(0, 2**32))
    for arch in [space.default_architecture(), *sample_architectures(space, 1, seed=seed)]:
        assert space.validate(arch) == arch
        session = ort.InferenceSession(export_onnx(space, arch), providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"input": example_input(space).numpy()})
        assert y.shape == (1, space.defaults["num_classes"])


# ------------------------------------------------------------------------- invalid space mutations
_BAD_SCALARS = [-1, math.nan, math.inf, -math.inf, 10**30, [], {}, [1, 2]]
_BAD_CONTAINERS = [-1, math.nan, 5, "x", True]
# (space, path) pairs of every node of every shipped space: one field at a time is made bad
_SPACE_NODES = [(name, path) for name in SPACES for path in _nodes(SHIPPED[name])]


def _bad_values(name: str, path: tuple) -> list[Any]:
    current = _get(SHIPPED[name], path)
    if isinstance(current, dict | list):
        return _BAD_CONTAINERS
    extra = [] if path == ("description",) else ["!!", None]  # free text takes any string
    return _BAD_SCALARS + extra + ([] if path[-1] == "se" else [True])


@settings(max_examples=150, deadline=None)
@given(node=st.sampled_from(_SPACE_NODES), data=st.data())
def test_a_bad_field_of_a_space_file_is_refused_by_its_path(node: tuple[str, tuple], data: st.DataObject) -> None:
    name, path = node
    value = data.draw(st.sampled_from(_bad_values(name, path)))
    with pytest.raises(HwAwareError) as info:
        parse_space(_replace(SHIPPED[name], path, value), source="mutant.yaml")
    assert f"space file mutant.yaml: {field_path(path)}: " in str(info.value)


# ---------------------------------------------------------------------------------- architectures
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from([1, 2, 3, 5, 7, 0.5, 0.6667, 1.0, 64, "plain", "dws"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["units", "depth", "blocks", "global", "kernel_size", "expand_ratio", "padding", "x"])
        | st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


def _builds_or_is_refused(name: str, value: Any) -> None:
    """``validate`` either refuses the value with HwAwareError or returns a canonical architecture that builds."""
    space = load_space(name)
    try:
        arch = space.validate(value)
    except HwAwareError:
        return
    assert space.validate(arch) == arch
    assert space.validate(json.dumps(arch)) == arch
    size, width = SMALL[name]
    try:
        model = build_module(space, arch, input_size=size, width_mult=width, num_classes=3)
    except HwAwareError as exc:  # a convnet architecture may shrink this input below 1x1
        assert "below 1x1" in str(exc)
        return
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON)
def test_any_json_value_is_refused_or_a_canonical_architecture(name: str, value: Any) -> None:
    _builds_or_is_refused(name, value)
    if isinstance(value, str):
        _builds_or_is_refused(name, json.dumps(value))


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), data=st.data())
def test_an_architecture_with_one_node_replaced_is_refused_or_builds(name: str, seed: int, data: st.DataObject) -> None:
    space = load_space(name)
    (arch,) = sample_architectures(space, 1, seed=seed)
    path = data.draw(st.sampled_from(_nodes(arch)))
    mutant = _replace(arch, path, data.draw(_JSON))
    _builds_or_is_refused(name, mutant)
    # as JSON text (where NaN and infinities are refused before validation), the same or refused
    try:
        from_text = space.validate(json.dumps(mutant))
    except HwAwareError:
        return
    assert from_text == space.validate(mutant)


def test_json_text_python_accepts_but_architectures_do_not_hold() -> None:
    space = load_space("densenet")
    arch = space.default_architecture()
    good = json.dumps(arch)
    for token in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000):
        bad = good.replace('"depth": 1', f'"depth": {token}', 1)
        with pytest.raises(HwAwareError):
            space.validate(bad)
    with pytest.raises(HwAwareError, match="nested too deeply"):
        space.validate("[" * 100_000 + "]" * 100_000)
    with pytest.raises(HwAwareError, match="not UTF-8"):
        space.validate(b"\xff\xfe{}")
    with pytest.raises(HwAwareError, match=r"units\[0\].depth: must be an integer in 1..20, got true"):
        space.validate(good.replace('"depth": 1', '"depth": true', 1))
    assert space.validate(good.replace('"depth": 1', '"depth": 1.0', 1)) == arch  # one JSON number type


def test_archs_file_names_the_bad_line(tmp_path: Path) -> None:
    space = load_space("resnet")
    good = space.canonical_json(space.default_architecture())
    path = tmp_path / "archs.jsonl"
    path.write_text(f"{good}\n\n{good}\n")
    assert read_architecture_lines(path, space) == [space.default_architecture()] * 2
    path.write_text(f"{good}\n\n{good.replace('3', '4', 1)}\n")
    with pytest.raises(HwAwareError, match=r"archs.jsonl line 3: units\[0\].blocks\[0\].kernel_size: 4 is not"):
        read_architecture_lines(path, space)
    path.write_text(f"{good}\n{{\"units\": NaN}}\n")
    with pytest.raises(HwAwareError, match="line 2: architecture: NaN is not a number"):
        read_architecture_lines(path, space)
    path.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(HwAwareError, match="not UTF-8 text"):
        read_architecture_lines(path, space)
    path.write_text("\n \n")
    with pytest.raises(HwAwareError, match="holds no architecture"):
        read_architecture_lines(path, space)


# --------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: sample_architectures(s, 2, seed=-1), "seed must be a non-negative integer, got -1"),
        (lambda s: sample_architectures(s, 2, seed=2**63), "seed must be at most"),
        (lambda s: sample_architectures(s, 2, seed=1.5), "seed must be a non-negative integer, got 1.5"),
        (lambda s: sample_architectures(s, 2, seed=True), "seed must be a non-negative integer, got true"),
        (lambda s: sample_architectures(s, 10**12), "n must be at most 100000"),
        (lambda s: sample_architectures(s, -3), "n must be a non-negative integer, got -3"),
        (lambda s: sample_architectures(s, 2, bins=0), "bins must be a positive integer, got 0"),
        (lambda s: sample_architectures(s, 2, strategy="uniform"), "strategy must be one of random, balanced"),
        (lambda s: s.resolve_input_size(0), "input_size must be a positive integer, got 0"),
        (lambda s: s.resolve_input_size(100_000), "input_size must be at most 4096"),
        (lambda s: s.resolve_input_size(32.0), "input_size must be a positive integer, got 32.0"),
        (lambda s: build_module(s, s.default_architecture(), width_mult=math.nan), "width_mult must be a positive"),
        (lambda s: build_module(s, s.default_architecture(), width_mult=0), "width_mult must be a positive"),
        (lambda s: build_module(s, s.default_architecture(), num_classes=0), "num_classes must be a positive"),
        (lambda s: export_onnx(s, s.default_architecture(), input_size=-1), "input_size must be a positive"),
        (lambda s: example_input(s, 32, batch=0), "batch must be a positive integer"),
    ],
)
def test_parameters_out_of_range_raise_parameter_error(call: Any, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        call(load_space("densenet"))
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)
    # the Python API names the parameter as the caller wrote it, never a command-line flag, and says which it is
    assert str(info.value).startswith(info.value.parameter + " ") and "--" not in str(info.value)
    assert info.value.parameter == message.split()[0]


def test_fingerprint_is_the_canonical_content() -> None:
    shipped = load_space("resnet")
    assert len(shipped.fingerprint) == 16
    # the same content under another file, with another description and key order: the same space
    reordered = dict(reversed(list(SHIPPED["resnet"].items())))
    same = parse_space({**reordered, "description": "mine"}, source="elsewhere.yaml")
    assert same.fingerprint == shipped.fingerprint
    # a custom file that reuses the name with other content is another space
    other = parse_space(_replace(SHIPPED["resnet"], ("units", 0, "width"), 128), source="custom.yaml")
    assert other.name == shipped.name and other.fingerprint != shipped.fingerprint
    assert len({load_space(n).fingerprint for n in SPACES}) == len(SPACES)
