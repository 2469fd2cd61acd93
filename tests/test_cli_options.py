"""Options from the config dataclasses, and errors named as each front end names its parameters.

The library's messages name a parameter as a Python caller wrote it (``input_size``); the command line shows
the same error with its flag (``--input-size``), found through the option's ``dest`` in the command that ran
(:mod:`nni_hwaware.cli.options`). The options' defaults are the dataclasses' and functions' own.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from badinput import run_in_process

from nni_hwaware.cli import build_parser
from nni_hwaware.cli.options import (
    PARSER_KEY,
    add_dataclass_options,
    dataclass_from_args,
    error_message,
    flag_for,
    parameter_default,
)
from nni_hwaware.errors import DeviceError, HwAwareError, ParameterError
from nni_hwaware.spaces import load_space


# ------------------------------------------------------------------------------------ the helper
@dataclass
class _Settings:
    """Settings of a made-up command.

    Parameters
    ----------
    name
        What it is called (``name`` in ``reST``).
    low, high
        The range, both ends included; 100 % inclusive.
    quiet
        Say nothing.

    Examples
    --------
    >>> _Settings("x").low
    0
    """

    name: str
    low: int = 0
    high: float | None = None
    quiet: bool = False
    loud: bool = True
    tags: list[str] = field(default_factory=list, metadata={"help": "labels to attach"})
    mode: str = field(default="fast", metadata={"choices": ("fast", "slow")})


def _parser(**kwargs: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="made-up", exit_on_error=False)
    add_dataclass_options(parser, _Settings, **kwargs)
    return parser


def test_options_take_defaults_types_and_help_from_the_fields():
    parser = _parser(flags={"high": "--upper"})
    args = parser.parse_args(["--name", "a", "--low", "3", "--upper", "2.5", "--quiet", "--no-loud",
                              "--tags", "x, y,", "--mode", "slow"])
    assert dataclass_from_args(_Settings, args) == _Settings("a", 3, 2.5, True, False, ["x", "y"], "slow")
    assert dataclass_from_args(_Settings, parser.parse_args(["--name", "a"])) == _Settings("a")
    assert dataclass_from_args(_Settings, parser.parse_args(["--name", "a"]), low=7).low == 7
    text = parser.format_help()
    assert "The range, both ends included; 100 % inclusive. (default: 0)" in " ".join(text.split())
    assert "What it is called (name in reST)." in " ".join(text.split())  # reST markup dropped
    assert "labels to attach" in text and "--upper UPPER" in text and "Examples" not in text
    assert flag_for(parser, "high") == "--upper"


def test_bad_option_values_are_refused_by_argparse(capsys):
    parser = _parser()
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--name", "a", "--mode", "medium"])  # choices from the field's metadata
    with pytest.raises(argparse.ArgumentError, match="invalid int value"):
        parser.parse_args(["--name", "a", "--low", "x"])  # the field's type
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a field without a default is a required option
    assert "--name" in capsys.readouterr().err


def test_only_the_chosen_fields_become_options_and_unknown_ones_are_a_programming_error():
    parser = _parser(fields=["name", "mode"])
    args = parser.parse_args(["--name", "b"])
    assert dataclass_from_args(_Settings, args) == _Settings("b")
    assert not hasattr(args, "low")
    with pytest.raises(TypeError, match="no init fields"):
        _parser(fields=["nosuch"])
    with pytest.raises(TypeError, match="no options of"):
        dataclass_from_args(_Settings, argparse.Namespace(name="x"))


def test_parameter_default_reads_the_signature():
    def f(a: int, *, b: int = 4) -> None: ...
    assert parameter_default(f, "b") == 4
    with pytest.raises(TypeError, match="no default"):
        parameter_default(f, "a")


# ------------------------------------------------------------------------- the command line's defaults
def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_measure_options_are_the_protocol_and_the_campaign_defaults():
    from nni_hwaware.measure.campaign import Campaign
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.remote import JetsonDatasetProtocol
    from nni_hwaware.measure.runner import make_measurer

    args = _args("measure", "--space", "convnet", "--db", "m.db")
    assert dataclass_from_args(Protocol, args) == Protocol()
    assert dataclass_from_args(JetsonDatasetProtocol, args) == JetsonDatasetProtocol()
    for name in ("qc_every", "references", "drift_threshold"):
        assert getattr(args, name) == parameter_default(Campaign, name)
    for name in ("backend", "threads", "precision", "energy", "energy_seconds"):
        assert getattr(args, name) == parameter_default(make_measurer, name)
    changed = _args("measure", "--space", "convnet", "--db", "m.db", "--ci-width", "0.05", "--adaptive")
    assert dataclass_from_args(Protocol, changed) == Protocol(adaptive=True, ci_rel_width=0.05)


def test_nn_meter_build_options_are_the_build_settings():
    from nni_hwaware.nnmeter.builder import BuildSettings

    assert dataclass_from_args(BuildSettings, _args("nn-meter", "build", "--out", "x")) == BuildSettings()
    args = _args("nn-meter", "build", "--out", "x", "--kernels", "fc,relu", "--runs", "3")
    assert dataclass_from_args(BuildSettings, args) == BuildSettings(kernels=["fc", "relu"], runs=3)


def test_every_command_knows_its_parser():
    parser = build_parser()
    for argv in (["measure", "--space", "s", "--db", "d"], ["dataset", "recover", "--db", "a", "--out", "b"],
                 ["nn-meter", "register"], ["spaces", "list"], ["device", "agent-path"]):
        args = parser.parse_args(argv)
        command = " ".join(a for a in argv[:2] if not a.startswith("-"))
        assert getattr(args, PARSER_KEY).prog == f"nni-hwaware {command}"  # the command's own parser


# ------------------------------------------------------------------------------- error messages
def test_error_message_rules():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--experiment-dir", dest="working_dir")
    # the subject: only where it starts the message, so the same word later stays a word
    assert error_message(ParameterError("port must be a TCP port, got 0", parameter="port"), parser) == \
        "--port must be a TCP port, got 0"
    # mentions: every whole-word use; not inside other identifiers or flags
    exc = HwAwareError("give working_dir (not my_working_dir or --working_dir) or port", mentions=("working_dir", "port"))
    assert error_message(exc, parser) == "give --experiment-dir (not my_working_dir or --working_dir) or --port"
    # a parameter the message does not start with: the flag is added
    assert error_message(ParameterError("nothing listens there", parameter="port"), parser) == \
        "nothing listens there (--port)"
    # a parameter that is not an option of the command, or no command at all: the library's words
    assert error_message(ParameterError("check_every must be >= 1", parameter="check_every"), parser) == \
        "check_every must be >= 1"
    assert error_message(ParameterError("port must be a TCP port", parameter="port"), None) == "port must be a TCP port"
    assert error_message(ValueError("plain"), parser) == "plain"


def test_parameter_names_survive_pickling():
    for exc in (DeviceError("device x: no host", parameter="device", mentions=("token_file",)),
                ParameterError("runs must be >= 1", parameter="runs")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert (back.parameter, back.mentions) == (exc.parameter, exc.mentions)


# ------------------------------------------------------------------------- both front ends, same error
def _protocol(**kwargs: Any) -> Callable[[], Any]:
    from nni_hwaware.measure.protocol import Protocol

    return lambda: Protocol(**kwargs)


def _space_size(size: int) -> Callable[[], Any]:
    from nni_hwaware.spaces import load_space

    return lambda: load_space("convnet").resolve_input_size(size)


def _measurer(**kwargs: Any) -> Callable[[], Any]:
    from nni_hwaware.measure.runner import make_measurer

    return lambda: make_measurer("onnxruntime", energy="none", **kwargs)


def _device(url: str) -> Callable[[], Any]:
    from nni_hwaware.measure.remote import parse_device_url

    return lambda: parse_device_url(url)


def _quality(*values: Any) -> Callable[[], Any]:
    from nni_hwaware.measure.campaign import check_quality_control

    return lambda: check_quality_control(*values)


def _build(**kwargs: Any) -> Callable[[], Any]:
    from nni_hwaware.nnmeter.builder import BuildSettings

    return lambda: BuildSettings(**kwargs).check()


def _experiment_dir(folder: str) -> Callable[[], Any]:
    from nni_hwaware.measure.nni_import import find_experiment_dir

    return lambda: find_experiment_dir("exp1", folder)


MEASURE = ["measure", "--space", "convnet", "--n", "1", "--db", "m.db"]
CONVNET_ARCH = json.dumps(load_space("convnet").default_architecture())
BOTH = [
    (_protocol(runs=0), "runs must be an integer >= 1", [*MEASURE, "--runs", "0"], "--runs must be an integer >= 1"),
    (_protocol(ci_rel_width=2.0), "ci_rel_width must be a number in (0, 1)", [*MEASURE, "--ci-width", "2"],
     "--ci-width must be a number in (0, 1)"),
    (_protocol(adaptive=True, runs=150, min_runs=200), "min_runs (200) exceeds runs (150); the adaptive mode needs "
     "min_runs <= runs", [*MEASURE, "--adaptive", "--min-runs", "200"],
     "--min-runs (200) exceeds --runs (150); the adaptive mode needs --min-runs <= --runs"),
    (_space_size(0), "input_size must be a positive integer, got 0",
     ["spaces", "build", "convnet", "--arch", CONVNET_ARCH, "--onnx", "x.onnx", "--input-size", "0"],
     "--input-size must be a positive integer, got 0"),
    (_measurer(energy_seconds=0), "energy_seconds must be a positive finite number",
     [*MEASURE, "--energy-seconds", "0"], "--energy-seconds must be a positive finite number"),
    (_measurer(threads=0), "threads must be a positive integer", [*MEASURE, "--threads", "0"],
     "--threads must be a positive integer"),
    (_quality(0, 0, 0.03), "references must be an integer from 1", [*MEASURE, "--qc-references", "0"],
     "--qc-references must be an integer from 1"),
    (_quality(0, 3, 0), "drift_threshold must be a positive finite number", [*MEASURE, "--drift", "0"],
     "--drift must be a positive finite number"),
    (_device("ftp://h"), "device ftp://h: unknown scheme", ["device", "info", "--device", "ftp://h"],
     "--device ftp://h: unknown scheme"),
    (_build(init_samples=2), "init_samples must be an integer >= 5",
     ["nn-meter", "build", "--out", "res", "--init-samples", "2"], "--init-samples must be an integer >= 5"),
    (_build(input_size=32), "input_size needs space", ["nn-meter", "build", "--out", "res", "--input-size", "32"],
     "--input-size needs --space"),
    (_experiment_dir("nowhere"), "working_dir nowhere is not a folder",
     ["dataset", "import-nni", "exp1", "--db", "m.db", "--experiment-dir", "nowhere"],
     "--experiment-dir nowhere is not a folder"),
]


@pytest.mark.parametrize("call, python, argv, cli", BOTH, ids=[f"{case[2][0]}{case[2][-2]}" for case in BOTH])
def test_python_names_the_parameter_and_the_cli_its_flag(call, python, argv, cli, tmp_path: Path):
    with pytest.raises(HwAwareError) as caught:
        call()
    assert python in str(caught.value) and "--" not in str(caught.value)
    code, _, err = run_in_process(argv, tmp_path)
    assert code == 2 and err.count("\n") == 1 and cli in err, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
