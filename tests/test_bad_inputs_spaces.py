"""Bad input to the spaces layer fails cleanly: exit 2, one ``error:`` line naming the field, nothing written.

The cases run the real command line in-process (:mod:`tests.badinput`) over ``spaces show/sample/build/export``,
``measure --space`` and ``predict --space --arch/--archs``, in four groups, each generated from a table:

* space files: one shipped space with one field replaced by a bad value (the message names the field's
  path), and files that are not space files at all (binary, huge, unparseable, nested too deeply);
* architecture JSON: one field of a valid architecture replaced by a bad value or a JSON token Python's
  ``json`` lets through (NaN, Infinity, 1e400), and bad ``@FILE`` arguments;
* numbers out of range: seeds, counts, bins, input sizes and width multipliers, through every command that
  takes them;
* networks too large to build or collapsing to nothing.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import Case, check_case, field_path

from nni_hwaware.paths import data_dir
from nni_hwaware.spaces import load_space

SPACES = ("resnet", "mobilenetv3", "densenet", "convnet")
SHIPPED = {name: yaml.safe_load((data_dir("search_spaces") / f"{name}.yaml").read_text()) for name in SPACES}


def _set(data: Any, path: tuple, value: Any) -> Any:
    """A deep copy of ``data`` with the node at ``path`` (keys and list indices) replaced by ``value``.

    An index one past the end of a list appends.
    """
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, list) and path[-1] == len(node):
        node.append(value)
    else:
        node[path[-1]] = value
    return data


def _writer(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        target = folder / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)

    return setup


# ------------------------------------------------------------------------------------- space files
# (space, path of the field, bad value, what the message says after the path; "@..." if the message is about
# another path, e.g. the mapping that holds an unknown key)
FIELD_MUTATIONS: list[tuple[str, tuple, Any, str]] = [
    ("resnet", ("block_choices", "kernel_size", 1), 4, "kernel sizes must be odd positive integers, got 4"),
    ("resnet", ("block_choices", "kernel_size", 0), -3, "kernel sizes must be odd positive integers, got -3"),
    ("resnet", ("block_choices", "kernel_size", 2), "7", "kernel sizes must be odd positive integers, got '7'"),
    ("resnet", ("block_choices", "kernel_size", 2), 99, "kernel sizes must be at most 15"),
    ("resnet", ("block_choices", "kernel_size", 1), 3, "3 repeats block_choices.kernel_size[0]"),
    ("resnet", ("block_choices", "expand_ratio", 0), 0, "expansion ratios must be finite numbers in (0, 8]"),
    ("resnet", ("block_choices", "expand_ratio", 1), -0.5, "expansion ratios must be finite numbers in (0, 8], got -0.5"),
    ("resnet", ("block_choices", "expand_ratio", 2), True, "expansion ratios must be finite numbers in (0, 8], got true"),
    ("resnet", ("block_choices", "kernel_size"), {"a": 1}, "must be a list"),
    ("resnet", ("block_choices", "kernel_size"), [], "must be a list of 1..256 values"),
    ("resnet", ("block_choices",), [3, 5], "must be a mapping"),
    ("resnet", ("block_choices", "dilation"), [1, 2], "@block_choices: unknown key(s) 'dilation'"),
    ("resnet", ("units", 1, "stride"), 0, "strides must be integers in 1..8, got 0"),
    ("resnet", ("units", 1, "stride"), -2, "strides must be integers in 1..8, got -2"),
    ("resnet", ("units", 2, "width"), "wide", "channel counts must be integers in 1..8192, got 'wide'"),
    ("resnet", ("units", 2, "width"), -256, "channel counts must be integers in 1..8192, got -256"),
    ("resnet", ("units", 2, "width"), 0, "channel counts must be integers in 1..8192, got 0"),
    ("resnet", ("units", 2, "width"), 256.5, "channel counts must be integers in 1..8192, got 256.5"),
    ("resnet", ("units", 0, "max_depth"), 100000, "depths must be integers in 1..64, got 100000"),
    ("resnet", ("units", 0, "min_depth"), 0, "depths must be integers in 1..64, got 0"),
    ("resnet", ("units", 0, "min_depth"), 9, "@units[0].max_depth: must be at least min_depth (9), got 7"),
    ("resnet", ("units", 0, "colour"), "red", "@units[0]: unknown key(s) 'colour'"),
    ("resnet", ("units", 0, "name"), "unit 1", "must be an identifier"),
    ("resnet", ("units", 3), [1, 2], "must be a mapping, got a list"),
    ("resnet", ("units",), {"unit1": 1}, "family resnet needs a list of 1..16 unit(s), got an object"),
    ("resnet", ("defaults", "width_mult"), math.nan, "channel multipliers must be finite numbers in (0, 16], got NaN"),
    ("resnet", ("defaults", "width_mult"), math.inf, "channel multipliers must be finite numbers in (0, 16], got Infinity"),
    ("resnet", ("defaults", "width_mult"), 0, "channel multipliers must be finite numbers in (0, 16], got 0"),
    ("resnet", ("defaults", "width_mult"), -1.0, "channel multipliers must be finite numbers in (0, 16], got -1.0"),
    ("resnet", ("defaults", "input_size"), 100000, "input sizes must be integers in 1..4096"),
    ("resnet", ("defaults", "input_size"), 0, "input sizes must be integers in 1..4096, got 0"),
    ("resnet", ("defaults", "num_classes"), "ten", "class counts must be integers in 1..100000, got 'ten'"),
    ("resnet", ("defaults", "batch"), 8, "@defaults: unknown key(s) 'batch'"),
    ("resnet", ("defaults",), [224], "must be a mapping"),
    ("resnet", ("options", "bottleneck_reduction"), 0, "channel ratios must be finite numbers in (0, 64]"),
    ("resnet", ("options", "stem_channels"), -64, "channel counts must be integers in 1..8192, got -64"),
    ("resnet", ("options",), ["stem_channels"], "must be a mapping"),
    ("resnet", ("name",), "my space", "must be an identifier"),
    ("resnet", ("family",), "vgg", "family 'vgg' is not one of"),
    ("resnet", ("extra",), 1, "@file: unknown key(s) 'extra'"),
    ("resnet", ("description",), ["a", "b"], "must be text"),
    ("mobilenetv3", ("options", "max_expand"), 0, "channel ratios must be finite numbers"),
    ("mobilenetv3", ("units", 0, "activation"), "gelu", "must be one of ['relu', 'hswish'], got 'gelu'"),
    ("mobilenetv3", ("units", 2, "se"), "yes", "must be true or false, got 'yes'"),
    ("mobilenetv3", ("block_choices", "expand_ratio", 2), 0, "expansion ratios must be finite numbers"),
    ("mobilenetv3", ("units", 3, "stride"), 0, "strides must be integers"),
    ("densenet", ("unit_choices", "kernel_size", 1), 4, "kernel sizes must be odd positive integers, got 4"),
    ("densenet", ("options", "compression"), 0, "compressions must be finite numbers in (0, 1]"),
    ("densenet", ("options", "compression"), 1.5, "compressions must be finite numbers in (0, 1], got 1.5"),
    ("densenet", ("options", "growth_rate"), -32, "channel counts must be integers"),
    ("densenet", ("options", "bn_size"), True, "bottleneck sizes must be integers in 1..64, got true"),
    ("densenet", ("units", 4, "max_depth"), 10**30, "depths must be integers in 1..64"),
    ("convnet", ("global_choices", "filters", 0), 0, "channel counts must be integers in 1..8192, got 0"),
    ("convnet", ("global_choices", "filters", 3), -128, "channel counts must be integers in 1..8192, got -128"),
    ("convnet", ("global_choices", "layer_type", 1), "depthwise", "must be one of ['plain', 'dws']"),
    ("convnet", ("block_choices", "padding", 0), -1, "paddings must be integers in 0..15, got -1"),
    ("convnet", ("block_choices", "kernel_size", 0), 0, "kernel sizes must be integers in 1..15, got 0"),
    ("convnet", ("units", 1), {"name": "more", "min_depth": 1, "max_depth": 2},
     "@units: family convnet needs a list of 1 unit(s), got a list of 2"),
]

# Whole-file replacements: (id, space, {key: value} merged into the file, expected text)
_WIDE = [{"name": f"u{i}", "min_depth": 1, "max_depth": 64} for i in range(5)]
FILE_MUTATIONS: list[tuple[str, str, dict, str]] = [
    ("total-depth", "densenet", {"units": _WIDE}, "units: the max_depth values add up to 320 blocks; at most 256"),
    ("too-many-units", "densenet", {"units": [{"name": f"u{i}", "min_depth": 1, "max_depth": 1} for i in range(17)]},
     "needs a list of 1..16 unit(s)"),
    ("too-many-architectures", "resnet",
     {"units": [{"name": f"u{i}", "min_depth": 1, "max_depth": 16, "width": 8, "stride": 1} for i in range(16)],
      "block_choices": {"kernel_size": [3, 5, 7], "expand_ratio": [round(0.01 * (i + 1), 2) for i in range(256)]}},
     "units: the depth ranges and choices give about 1e"),
    ("duplicate-unit", "densenet", {"units": [{"name": "a", "min_depth": 1, "max_depth": 2}] * 2},
     "units[1].name: 'a' is the name of another unit"),
]

# Command lines that load a space file named custom.yaml; every bad file is tried through one of them.
_LOADERS = [
    ["spaces", "show", "custom.yaml"],
    ["spaces", "sample", "custom.yaml", "--n", "2"],
    ["spaces", "export", "custom.yaml", "--out", "ss.json"],
    ["measure", "--space", "custom.yaml", "--n", "2", "--db", "m.db"],
]


def _space_file_cases() -> list[Case]:
    cases = []
    for i, (space, path, value, message) in enumerate(FIELD_MUTATIONS):
        where = field_path(path)
        bad = yaml.safe_dump(_set(SHIPPED[space], path, value), sort_keys=False)
        cases.append(Case(
            id=f"yaml-{space}-{where}-{i}", argv=_LOADERS[i % len(_LOADERS)], setup=_writer("custom.yaml", bad),
            expect=message[1:] if message.startswith("@") else f"{where}: {message}",
        ))
    for case_id, space, changes, message in FILE_MUTATIONS:
        bad = yaml.safe_dump({**SHIPPED[space], **changes}, sort_keys=False)
        cases.append(Case(id=f"yaml-{case_id}", argv=_LOADERS[0], setup=_writer("custom.yaml", bad), expect=message))
    shipped = (data_dir("search_spaces") / "resnet.yaml").read_text()
    raw_files: list[tuple[str, str | bytes, str]] = [
        ("yes-as-width", shipped.replace("width: 512", "width: yes"), "units[1].width: channel counts must be"),
        ("unparseable", "name: bad\nfamily: resnet\nunits: [unclosed\n", "not valid yaml"),
        ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10, "not utf-8 text"),
        ("nul-bytes", "name: x\x00\nfamily: resnet\n", "not valid yaml"),
        ("huge", shipped + "#" * (2 << 20) + "\n", "at most 1,048,576 are read"),
        ("empty", "", "must be a yaml mapping"),
        ("a-list", "- resnet\n- convnet\n", "must be a yaml mapping"),
        ("deeply-nested", "units: " + "[" * 50000 + "]" * 50000 + "\n", "nested too deeply"),
        ("huge-integer", shipped.replace("width: 512", "width: " + "9" * 5000), "not valid yaml"),
        ("python-tag", shipped + "x: !!python/object/apply:os.system ['true']\n", "not valid yaml"),
        ("two-documents", shipped + "---\n" + shipped, "not valid yaml"),
    ]
    for j, (case_id, content, message) in enumerate(raw_files):
        cases.append(Case(id=f"yaml-{case_id}", argv=_LOADERS[j % len(_LOADERS)],
                          setup=_writer("custom.yaml", content), expect=message))
    cases += [
        Case(id="space-missing-file", argv=["spaces", "show", "nothere.yaml"], expect="does not exist"),
        Case(id="space-unknown-name", argv=["spaces", "sample", "nosuch", "--n", "1"], expect="unknown space"),
        Case(id="space-is-a-folder", argv=["spaces", "show", "{tmp}/folder.yaml"],
             setup=lambda f: (f / "folder.yaml").mkdir(), expect="not a regular file"),
    ]
    return cases


# ---------------------------------------------------------------------------------- architectures
_RESNET_ARCH = load_space("resnet").default_architecture()
_CONVNET_ARCH = load_space("convnet").default_architecture()
_TOKEN = "\u0000TOKEN\u0000"

# (id, path in the resnet default architecture, bad value, expected text); a str value starting with
# _TOKEN is written into the JSON text as it is (JSON that Python's json reads but no architecture holds).
ARCH_MUTATIONS: list[tuple[str, tuple, Any, str]] = [
    ("depth-nan", ("units", 0, "depth"), _TOKEN + "NaN", "nan is not a number"),
    ("depth-inf", ("units", 1, "depth"), _TOKEN + "Infinity", "infinity is not a number"),
    ("depth-neg-inf", ("units", 1, "depth"), _TOKEN + "-Infinity", "-infinity is not a number"),
    ("depth-1e400", ("units", 2, "depth"), _TOKEN + "1e400", "1e400 is beyond the range"),
    ("depth-huge-int", ("units", 2, "depth"), _TOKEN + "9" * 5000, "more than 4300 digits"),
    ("depth-float", ("units", 1, "depth"), 2.5, "units[1].depth: must be an integer in 1..7, got 2.5"),
    ("depth-true", ("units", 0, "depth"), True, "units[0].depth: must be an integer in 1..7, got true"),
    ("depth-string", ("units", 3, "depth"), "2", "units[3].depth: must be an integer in 1..7, got '2'"),
    ("depth-null", ("units", 3, "depth"), None, "units[3].depth: must be an integer in 1..7, got null"),
    ("depth-big", ("units", 3, "depth"), 10**20, "units[3].depth: depth 100000000000000000000 is outside"),
    ("kernel-even", ("units", 1, "blocks", 0, "kernel_size"), 4, "units[1].blocks[0].kernel_size: 4 is not one"),
    ("kernel-string", ("units", 1, "blocks", 0, "kernel_size"), "3", "units[1].blocks[0].kernel_size: '3' is not"),
    ("kernel-bool", ("units", 0, "blocks", 0, "kernel_size"), True, "kernel_size: true is not one of"),
    ("kernel-list", ("units", 0, "blocks", 0, "kernel_size"), [3], "kernel_size: a list is not one of"),
    ("ratio-nan", ("units", 0, "blocks", 0, "expand_ratio"), _TOKEN + "NaN", "nan is not a number"),
    ("ratio-null", ("units", 0, "blocks", 0, "expand_ratio"), None, "units[0].blocks[0]: missing 'expand_ratio'"),
    ("block-extra-key", ("units", 0, "blocks", 0, "dilation"), 2, "units[0].blocks[0]: unknown key(s) 'dilation'"),
    ("block-list", ("units", 2, "blocks", 0), [3, 0.5], "units[2].blocks[0]: must be a json object"),
    ("blocks-missing", ("units", 2, "blocks"), None, "units[2].blocks: the unit has depth 1 but no 'blocks'"),
    ("unit-extra-key", ("units", 0, "width"), 64, "units[0]: unknown key(s) 'width'"),
    ("unit-string", ("units", 3), "unit4", "units[3]: unit unit4 must be a json object"),
    ("units-object", ("units",), {"unit1": 1}, "units: 'resnet' architecture needs a 'units' list"),
    ("top-extra-key", ("global",), {}, "architecture: unknown key(s) 'global'"),
    ("nested-deeply", ("units", 0, "blocks", 0, "kernel_size"), _TOKEN + "[" * 100000 + "]" * 100000,
     "nested too deeply"),
]


def _arch_text(arch: Any, path: tuple, value: Any) -> str:
    if isinstance(value, str) and value.startswith(_TOKEN):
        return json.dumps(_set(arch, path, "@@")).replace('"@@"', value[len(_TOKEN):])
    return json.dumps(_set(arch, path, value))


def _arch_cases() -> list[Case]:
    build = ["spaces", "build", "resnet", "--onnx", "out.onnx", "--arch"]
    cases = [
        Case(id=f"arch-{case_id}", argv=[*build, _arch_text(_RESNET_ARCH, path, value)], expect=message)
        for case_id, path, value, message in ARCH_MUTATIONS
    ]
    missing_units = json.dumps({"global": {"layer_type": "plain", "filters": 64}})
    binary = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" * 50
    cases += [
        Case(id="arch-missing-units", argv=["spaces", "build", "convnet", "--onnx", "o.onnx", "--arch", missing_units],
             expect="units: 'convnet' architecture needs a 'units' list"),
        Case(id="arch-missing-global", argv=["spaces", "build", "convnet", "--onnx", "o.onnx", "--arch",
                                             json.dumps({"units": _CONVNET_ARCH["units"]})],
             expect="global: must be a json object"),
        Case(id="arch-global-filters-string", argv=["spaces", "build", "convnet", "--onnx", "o.onnx", "--arch",
                                                    json.dumps(_set(_CONVNET_ARCH, ("global", "filters"), "64"))],
             expect="global.filters: '64' is not one of"),
        Case(id="arch-not-object", argv=[*build, "[1, 2, 3]"], expect="must be a json object, got a list"),
        Case(id="arch-not-json", argv=[*build, "{units: 1}"], expect="not valid json"),
        Case(id="arch-huge", argv=[*build, json.dumps({"units": ["x" * (2 << 20)]})], expect="characters long"),
        Case(id="arch-file-binary", argv=[*build, "@arch.json"], setup=_writer("arch.json", binary),
             expect="architecture file arch.json is not utf-8 text"),
        Case(id="arch-file-huge", argv=[*build, "@arch.json"], setup=_writer("arch.json", " " * (2 << 20) + "{}"),
             expect="at most 1,048,576 are read"),
        Case(id="arch-file-missing", argv=[*build, "@nothere.json"], expect="cannot read architecture file"),
        Case(id="arch-file-folder", argv=[*build, "@{tmp}"], expect="is not a regular file"),
        Case(id="export-out-folder", argv=["spaces", "export", "resnet", "--out", "{tmp}"], expect="cannot write"),
        Case(id="build-onnx-folder", argv=["spaces", "build", "convnet", "--onnx", "{tmp}", "--arch",
                                           json.dumps(_CONVNET_ARCH)], expect="cannot write"),
        Case(id="arch-file-nan", argv=[*build, "@arch.json"],
             setup=_writer("arch.json", _arch_text(_RESNET_ARCH, ("units", 0, "depth"), _TOKEN + "NaN")),
             expect="nan is not a number"),
    ]
    # predict validates architectures of any space with the shipped Jetson Nano predictor
    good = json.dumps(_RESNET_ARCH)
    bad_line = _arch_text(_RESNET_ARCH, ("units", 0, "blocks", 0, "kernel_size"), 4)
    predict = ["predict", "--space", "resnet"]
    cases += [
        Case(id="predict-arch-file-binary", argv=[*predict, "--arch", "@arch.json"], setup=_writer("arch.json", binary),
             expect="architecture file arch.json is not utf-8 text"),
        Case(id="predict-arch-depth-true", argv=[*predict, "--arch",
                                                 _arch_text(_RESNET_ARCH, ("units", 2, "depth"), True)],
             expect="units[2].depth: must be an integer in 1..7, got true"),
        Case(id="predict-archs-bad-line", argv=[*predict, "--archs", "a.jsonl"],
             setup=_writer("a.jsonl", f"{good}\n\n{bad_line}\n"),
             expect="a.jsonl line 3: units[0].blocks[0].kernel_size: 4 is not one of"),
        Case(id="predict-archs-nan-line", argv=[*predict, "--archs", "a.jsonl"],
             setup=_writer("a.jsonl", f"{good}\n{{\"units\": NaN}}\n"),
             expect="a.jsonl line 2: architecture: nan is not a number"),
        Case(id="predict-archs-binary", argv=[*predict, "--archs", "a.jsonl"], setup=_writer("a.jsonl", binary),
             expect="not utf-8 text"),
        Case(id="predict-archs-empty", argv=[*predict, "--archs", "a.jsonl"], setup=_writer("a.jsonl", "\n \n"),
             expect="holds no architecture"),
        Case(id="predict-space-file-bad", argv=["predict", "--space", "custom.yaml", "--arch", good],
             setup=_writer("custom.yaml", (data_dir("search_spaces") / "resnet.yaml").read_text().replace(
                 "stride: 2", "stride: 0", 1)),
             expect="units[1].stride: strides must be integers in 1..8, got 0"),
        Case(id="predict-input-size-huge", argv=[*predict, "--input-size", "100000", "--arch", good],
             expect="--input-size must be at most 4096"),
    ]
    return cases


# ---------------------------------------------------------------------------------------- numbers
def _number_cases() -> list[Case]:
    arch = json.dumps(_CONVNET_ARCH)
    build = ["spaces", "build", "convnet", "--arch", arch, "--onnx", "out.onnx"]
    measure = ["measure", "--space", "convnet", "--db", "m.db"]
    shrink = json.dumps(_set(_CONVNET_ARCH, ("units", 0, "blocks", 0), {"kernel_size": 7, "padding": 1}))
    sample = ["spaces", "sample", "convnet"]
    table: list[tuple[str, list[str], str]] = [
        ("sample-n-huge", [*sample, "--n", str(10**12)], "--n must be at most 100000"),
        ("sample-n-negative", [*sample, "--n", "-1"], "--n must be a non-negative integer, got -1"),
        ("sample-seed-negative", [*sample, "--n", "2", "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        ("sample-seed-huge", [*sample, "--n", "2", "--seed", str(2**64)], "--seed must be at most 9223372036854775807"),
        ("sample-bins-zero", [*sample, "--n", "2", "--strategy", "balanced", "--bins", "0"],
         "--bins must be a positive integer, got 0"),
        ("sample-bins-negative", [*sample, "--n", "2", "--bins", "-3"], "--bins must be a positive integer, got -3"),
        ("sample-more-than-space", ["spaces", "sample", "tiny.yaml", "--n", "4"], "more than the 3 architectures"),
        ("build-input-zero", [*build, "--input-size", "0"], "--input-size must be a positive integer, got 0"),
        ("build-input-negative", [*build, "--input-size", "-32"], "--input-size must be a positive integer, got -32"),
        ("build-input-huge", [*build, "--input-size", "100000"], "--input-size must be at most 4096"),
        ("build-width-zero", [*build, "--width-mult", "0"], "--width-mult must be a positive finite number, got 0"),
        ("build-width-nan", [*build, "--width-mult", "nan"], "--width-mult must be a positive finite number, got nan"),
        ("build-width-inf", [*build, "--width-mult", "inf"], "--width-mult must be a positive finite number, got inf"),
        ("build-width-negative", [*build, "--width-mult", "-1"], "--width-mult must be a positive finite number"),
        ("build-width-huge", [*build, "--width-mult", "1e6"], "--width-mult must be at most 16"),
        ("build-collapses", ["spaces", "build", "convnet", "--onnx", "out.onnx", "--input-size", "3", "--arch", shrink],
         "below 1x1"),
        ("build-too-many-parameters", [*build, "--input-size", "4096"], "at most 500,000,000 can be built"),
        ("measure-n-huge", [*measure, "--n", str(10**12)], "--n must be at most 100000"),
        ("measure-seed-negative", [*measure, "--n", "2", "--seed", "-1"], "--seed must be a non-negative integer"),
        ("measure-bins-zero", [*measure, "--n", "2", "--strategy", "balanced", "--bins", "0"],
         "--bins must be a positive integer"),
        ("measure-input-huge", [*measure, "--n", "2", "--input-size", "100000"], "--input-size must be at most 4096"),
        ("measure-input-zero", [*measure, "--n", "2", "--input-size", "0"], "--input-size must be a positive integer"),
        ("measure-bad-space-file", ["measure", "--space", "tiny.yaml", "--n", "9", "--db", "m.db"],
         "more than the 3 architectures"),
    ]
    tiny = {**SHIPPED["densenet"], "unit_choices": {"kernel_size": [1, 3, 5]},
            "units": [{"name": "only", "min_depth": 1, "max_depth": 1}]}
    return [Case(id=case_id, argv=argv, setup=_writer("tiny.yaml", yaml.safe_dump(tiny)), expect=message)
            for case_id, argv, message in table]


def _size_cases() -> list[Case]:
    space = load_space("resnet")
    largest = {"units": [{"depth": u.max_depth, "blocks": [{"kernel_size": 7, "expand_ratio": 1.0}] * u.max_depth}
                         for u in space.units]}
    return [
        Case(id="resnet-too-wide", argv=["spaces", "build", "resnet", "--arch", json.dumps(largest),
                                         "--onnx", "out.onnx", "--input-size", "32", "--width-mult", "4"],
             expect="at most 500,000,000 can be built"),
        Case(id="densenet-activation-too-large", argv=["spaces", "build", "densenet", "--arch",
                                                       json.dumps(load_space("densenet").default_architecture()),
                                                       "--onnx", "out.onnx", "--input-size", "4096",
                                                       "--width-mult", "8"],
             expect="largest activation has"),
    ]


CASES = _space_file_cases() + _arch_cases() + _number_cases() + _size_cases()


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
