"""Bad input to ``nni-hwaware nas check`` / ``nas run`` and to the trial entry point: one ``error:`` line, exit 2.

Every case writes an experiment config (the quickstart with one thing wrong) into its own folder and runs the
command there in-process (:mod:`badinput`); it must fail before NNI or the predictor starts, name the key or
option to fix, and leave the folder as it was. The trial cases call ``nni_hwaware.nas.trial.main`` the same
way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import Case, check_case, run_in_process, snapshot

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "experiments" / "quickstart.yml").read_text())


def _config(**class_args: Any) -> dict[str, Any]:
    """The quickstart with absolute paths; ``class_args`` changed (``None`` removes a key)."""
    config = json.loads(json.dumps(QUICKSTART))
    config["searchSpaceFile"] = str(REPO / "experiments" / config["searchSpaceFile"])
    config["trialCodeDirectory"] = str(REPO)
    config["tuner"]["codeDirectory"] = str(REPO)
    args = config["tuner"]["classArgs"]
    for key, value in class_args.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    return config


def _writes(config: Any = None, text: str | None = None) -> Callable[[Path], None]:
    """A case setup that writes ``exp.yml``: ``config`` as YAML, or ``text`` as is."""
    def setup(folder: Path) -> None:
        (folder / "exp.yml").write_text(text if text is not None else yaml.safe_dump(config, sort_keys=False))
    return setup


def _with(**top_level: Any) -> dict[str, Any]:
    config = _config()
    config.update(top_level)
    return config


def _command(extra: str) -> dict[str, Any]:
    return _with(trialCommand=f"python3 -m nni_hwaware.nas.trial --accuracy digits {extra}")


# classArgs of the wrong type or out of range: (id, classArgs changes, expected text)
CLASS_ARGS = [
    ("word-latency-budget", {"latency_budget_ms": "fast"}, "classargs latency_budget_ms must be a positive number"),
    ("string-number-budget", {"latency_budget_ms": "30"}, "classargs latency_budget_ms must be a positive number"),
    ("word-energy-budget", {"energy_budget_mj": "eighty"}, "classargs energy_budget_mj must be a positive number"),
    ("negative-budget", {"latency_budget_ms": -5}, "classargs latency_budget_ms must be a positive number"),
    ("nan-budget", {"latency_budget_ms": float("nan")}, "classargs latency_budget_ms must be a positive number"),
    ("inf-budget", {"energy_budget_mj": float("inf")}, "classargs energy_budget_mj must be a positive number"),
    ("bool-budget", {"latency_budget_ms": True}, "classargs latency_budget_ms must be a positive number"),
    ("word-margin", {"margin": "tight"}, "classargs margin must be a number in [0, 1)"),
    ("margin-over-one", {"margin": 1.5}, "classargs margin must be a number in [0, 1)"),
    ("negative-margin", {"margin": -0.1}, "classargs margin must be a number in [0, 1)"),
    ("no-budget", {"latency_budget_ms": None, "energy_budget_mj": None}, "need a budget"),
    ("numeric-predictor", {"predictor": 3}, "classargs predictor must be a predictor folder"),
    ("list-space", {"space": ["convnet"]}, "classargs space must be a space name"),
    ("no-space", {"space": None}, "lack classargs space"),
    ("word-input-size", {"input_size": "big"}, "classargs input_size must be a whole number"),
    ("zero-input-size", {"input_size": 0}, "classargs input_size must be a whole number"),
    ("zero-patience", {"patience": 0}, "classargs patience must be a whole number of at least 1"),
    ("float-patience", {"patience": 2.5}, "classargs patience must be a whole number of at least 1"),
    ("unknown-tuner", {"tuner": "SMAC"}, "classargs tuner must be one of"),
    ("list-tuner-args", {"tuner_args": [1, 2]}, "classargs tuner_args must be a mapping"),
    ("unknown-key", {"latency_budget": 30}, "unknown key(s) latency_budget"),
    ("word-trust", {"trust_nn_meter_pickles": "yes"}, "classargs trust_nn_meter_pickles must be true or false"),
    ("trusted-without-flag", {"trust_nn_meter_pickles": True}, "turn --trust-pickles on to load them"),
    ("word-emit-uncertain", {"emit_uncertain": "sometimes"}, "classargs emit_uncertain must be true or false"),
    ("refit-without-db", {"refit_every": 2}, "refit_every needs refit_db"),
    ("nan-penalty", {"penalty": float("nan")}, "classargs penalty must be a finite number"),
]

# the trial command states what the tuner states, or does not parse: (id, config, expected text)
TRIAL_COMMANDS = [
    ("trial-latency-budget", _command("--latency-budget-ms 10"), "state latency_budget_ms once, in the tuner's"),
    ("trial-energy-budget", _command("--energy-budget-mj 90"), "state energy_budget_mj once"),
    ("trial-space-predictor", _command("--space convnet --predictor jetson_nano"), "state space, predictor once"),
    ("trial-margin-equals", _command("--margin=0.2"), "state margin once"),
    ("trial-input-size", _command("--input-size 32"), "state input_size once"),
    ("trial-unbalanced-quote", _with(trialCommand="python3 -m nni_hwaware.nas.trial --accuracy 'digits"),
     "trialcommand is not a valid command line (no closing quotation)"),
    ("trial-bad-int", _command("--epochs x"), "trialcommand: argument --epochs: invalid int value"),
    ("trial-abbreviation", _command("--latency 5"), "trialcommand: unrecognized arguments: --latency 5"),
    ("trial-zero-epochs", _command("--epochs 0"), "trialcommand: --epochs must be at least 1"),
    ("trial-params", _command("--params {}"), "trialcommand gives --params"),
    ("trial-not-a-string", _with(trialCommand=5), "trialcommand must be a command line"),
    ("trial-nn-meter-untrusted", _command("--nn-meter runs/nn-meter-cpu"), "set trust_nn_meter_pickles: true"),
]

# the config file itself: (id, setup, expected text)
FILES = [
    ("config-is-a-list", _writes(text="- a\n- b\n"), "expected a mapping"),
    ("config-not-yaml", _writes(text="tuner: [unclosed\n"), "is not valid yaml"),
    ("class-args-a-list", _writes(_with(tuner={**QUICKSTART["tuner"], "classArgs": ["convnet", 30]})),
     "classargs must be a mapping"),
    ("no-class-args", _writes(_with(tuner={"className": QUICKSTART["tuner"]["className"]})), "has no classargs"),
    ("other-tuner", _writes(_with(tuner={"name": "TPE"})), "the config's tuner is not"),
]


def _cases() -> list[Case]:
    cases = []
    for command in ("check", "run"):
        for name, changes, expect in CLASS_ARGS:
            cases.append(Case(f"{command}-{name}", ["nas", command, "--config", "exp.yml"],
                              _writes(_config(**changes)), expect))
        for name, config, expect in TRIAL_COMMANDS:
            cases.append(Case(f"{command}-{name}", ["nas", command, "--config", "exp.yml"], _writes(config), expect))
        for name, setup, expect in FILES:
            cases.append(Case(f"{command}-{name}", ["nas", command, "--config", "exp.yml"], setup, expect))
        cases.append(Case(f"{command}-missing-config", ["nas", command, "--config", "nowhere.yml"], None, "not found"))
    good = _writes(_config())
    for samples in ("0", "-5", "1000000"):
        cases.append(Case(f"check-samples-{samples}", ["nas", "check", "--config", "exp.yml", "--samples", samples],
                          good, "--samples must be a whole number"))
    cases.append(Case("check-samples-word", ["nas", "check", "--config", "exp.yml", "--samples", "many"], good,
                      "invalid int value"))
    for option, value, expect in (("--trials", "0", "--trials must be at least 1"),
                                  ("--trials", "-1", "--trials must be at least 1"),
                                  ("--timeout", "0", "--timeout must be a positive number"),
                                  ("--timeout", "-10", "--timeout must be a positive number"),
                                  ("--timeout", "nan", "--timeout must be a positive number"),
                                  ("--timeout", "inf", "--timeout must be a positive number"),
                                  ("--port", "70000", "--port must be a port number from 1 to 65535"),
                                  ("--port", "0", "--port must be a port number"),
                                  ("--port", "-1", "--port must be a port number")):
        cases.append(Case(f"run-{option[2:]}-{value}", ["nas", "run", "--config", "exp.yml", option, value], good,
                          expect))
    cases.append(Case("run-out-is-a-file", ["nas", "run", "--config", "exp.yml", "--out", "results.txt"],
                      lambda folder: (good(folder), (folder / "results.txt").write_text("mine\n")), "is a file"))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nas_command_fails_cleanly(case, tmp_path):
    check_case(case, tmp_path)


def test_there_are_enough_cases():
    assert len(CASES) + len(TRIAL_CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


# --- the trial entry point ----------------------------------------------------------------------------------

HARDWARE = {"space": "convnet", "predictor": "jetson_nano", "latency_budget_ms": 30.0}
PARAMS = json.dumps({"_hardware": HARDWARE})
BY_HAND = ["--space", "convnet", "--predictor", "jetson_nano"]

TRIAL_CASES = [
    ("params-not-json", ["--params", "{not json", *BY_HAND], "--params is not json"),
    ("params-a-list", ["--params", "[1, 2]", *BY_HAND], "must be a json object"),
    ("settings-twice", ["--params", PARAMS, "--latency-budget-ms", "10"], "state latency_budget_ms once"),
    ("space-twice", ["--params", PARAMS, "--space", "convnet"], "state space once"),
    ("word-budget-from-tuner", ["--params", json.dumps({"_hardware": {**HARDWARE, "latency_budget_ms": "fast"}})],
     "_hardware.latency_budget_ms must be a positive number"),
    ("settings-not-a-mapping", ["--params", json.dumps({"_hardware": 5})], "must be a mapping"),
    ("settings-without-predictor", ["--params", json.dumps({"_hardware": {"space": "convnet"}})],
     "lack _hardware.predictor"),
    ("no-settings", ["--params", "{}"], "no hardware settings"),
    ("zero-epochs", ["--params", PARAMS, "--epochs", "0"], "--epochs must be at least 1"),
    ("word-budget", ["--params", "{}", *BY_HAND, "--latency-budget-ms", "fast"], "invalid float value"),
    ("margin-over-one", ["--params", "{}", *BY_HAND, "--latency-budget-ms", "5", "--margin", "1.5"],
     "--margin must be a number in [0, 1)"),
    ("nan-budget", ["--params", "{}", *BY_HAND, "--latency-budget-ms", "nan"],
     "--latency-budget-ms must be a positive number"),
    ("zero-input-size", ["--params", "{}", *BY_HAND, "--input-size", "0"], "--input-size must be a whole number"),
    ("unknown-fallback", ["--params", PARAMS, "--fallback", "magic"], "invalid choice"),
    ("zero-threads", ["--params", PARAMS, "--threads", "0"], "--threads must be at least 1"),
    ("zero-runs", ["--params", PARAMS, "--runs", "0"], "--runs must be at least 1"),
    ("negative-seed", ["--params", PARAMS, "--seed", "-1"], "--seed must be at least 0"),
    ("zero-width", ["--params", PARAMS, "--train-width-mult", "0"], "--train-width-mult must be in (0, 1]"),
    ("unknown-accuracy", ["--params", PARAMS, "--accuracy", "imagenet"], "--accuracy must be digits"),
    ("abbreviated-option", ["--params", PARAMS, "--lat", "5"], "unrecognized arguments"),
]


def _run_trial(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    from nni_hwaware.nas.trial import main

    return run_in_process(argv, cwd, entry=main)


@pytest.mark.parametrize(("argv", "expect"), [c[1:] for c in TRIAL_CASES], ids=[c[0] for c in TRIAL_CASES])
def test_trial_fails_cleanly(argv, expect, tmp_path, monkeypatch):
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    before = snapshot(tmp_path)
    code, stdout, stderr = _run_trial(argv, tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr + stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[:10]
    assert expect.lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path) == before
