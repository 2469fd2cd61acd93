"""Fallback to real measurement with an ESM predictor built here: store, refit, trial entry point, local_cpu.yml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.nas import Budget, HardwarePredictor, load_predictor
from nni_hwaware.nas.fallback import MeasuredFallback
from nni_hwaware.spaces import sample_architectures
from nni_hwaware.spaces.nni_space import arch_to_hpo_params

# real ESM builds and measurements: the full suite runs them, the fast lane (-m "not slow") does not
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUILD = ["build", "--space", "mobilenetv3", "--input-size", "8", "--runs", "5", "--initial", "12", "--step", "6",
         "--max-samples", "12", "--test-size", "8", "--bins", "3", "--acc-th", "0.5", "--qc-every", "0"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("nas-esm")
    db, out = root / "m.db", root / "pred"
    result = cli(*BUILD, "--db", str(db), "--out", str(out), "--runs", "5", timeout=600)
    assert result.returncode == 0, result.stderr
    return db, out


def _straddling(predictor: HardwarePredictor, n: int = 40, seed: int = 5):
    """Architectures and their estimates; a budget at an estimate lies inside its interval (undecided)."""
    archs = sample_architectures(predictor.space, n, seed=seed)
    return archs, predictor.estimate_many(archs)


def test_esm_predictor_is_refused_for_another_space_or_size(built):
    _db, out = built
    assert load_predictor(out, "mobilenetv3").input_size == 8
    with pytest.raises(HwAwareError, match="built for space 'mobilenetv3'"):
        load_predictor(out, "resnet")
    with pytest.raises(HwAwareError, match="built for input size 8"):
        load_predictor(out, "mobilenetv3", input_size=32)
    with pytest.raises(HwAwareError, match="energy budget needs a predictor with energy"):
        Budget(energy_mj=1.0).check_predictor(load_predictor(out, "mobilenetv3"))


def test_undecided_candidates_are_measured_stored_and_refit_the_surrogate(built, tmp_path):
    db, out = built
    predictor = load_predictor(out, "mobilenetv3")
    archs, ests = _straddling(predictor)
    fallback = MeasuredFallback(predictor, db, runs=10)
    decided = 0
    for arch, est in list(zip(archs, ests))[:4]:
        budget = Budget(latency_ms=est.latency_ms * 1.01)  # inside the 90 % interval: undecided
        verdict = budget.check(est)
        assert verdict.ok and not verdict.decided
        final = fallback.decide(arch, verdict, budget)
        assert final.decided and final.estimate.source == "measured"
        assert final.ok == (final.estimate.latency_ms <= budget.latency_ms)
        assert any(n.startswith("surrogate said") for n in final.estimate.notes)
        decided += 1
    with MeasurementStore(db, readonly=True) as store:
        fallback_rows = store.dataset()
        fallback_rows = fallback_rows[fallback_rows["campaign"] == "nas-fallback"]
    assert len(fallback_rows) == decided
    before = predictor.estimate(archs[10]).latency_ms
    record = fallback.refit()
    usable = int((~fallback_rows["outlier"]).sum())  # flagged measurements are not trained on
    assert record["added"] == usable and record["train_size"] == 12 + usable
    assert 0 < record["accuracy"] <= 1 and predictor.model.info["refits"][-1] == record
    assert predictor.estimate(archs[10]).latency_ms != before  # the cache was dropped, new surrogate answers


def test_fallback_refuses_other_targets(built, tmp_path):
    _db, out = built
    with pytest.raises(HwAwareError, match="measure with the tensorrt backend on the board"):
        MeasuredFallback(load_predictor("jetson_nano", "convnet"), tmp_path / "m.db")
    with pytest.raises(HwAwareError, match="another device/backend"):
        MeasuredFallback(load_predictor(out, "mobilenetv3"), tmp_path / "m.db", threads=2)


def _trial(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nni_hwaware.nas.trial", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})))


def test_trial_reports_measured_latency_when_the_surrogate_cannot_decide(built, tmp_path):
    db, out = built
    predictor = load_predictor(out, "mobilenetv3")
    archs, ests = _straddling(predictor, seed=9)
    arch, est = archs[0], ests[0]
    params = json.dumps(arch_to_hpo_params(predictor.space, arch))
    common = ["--space", "mobilenetv3", "--input-size", "8", "--predictor", str(out), "--accuracy", "synflow",
              "--params", params]
    # far from the budget: the surrogate decides, nothing is measured
    sure = _trial(*common, "--latency-budget-ms", str(est.latency_interval[1] * 3), "--fallback", "onnxruntime", "--runs", "5", "--db", str(tmp_path / "f.db"))
    assert sure.returncode == 0, sure.stderr
    result = json.loads(sure.stdout.strip().splitlines()[-1])
    assert result["latency_source"] == "surrogate" and result["within_budget"] is True
    assert not (tmp_path / "f.db").exists() or MeasurementStore(tmp_path / "f.db").count() == 0
    # inside the interval: measured, and the measurement decides
    close = _trial(*common, "--latency-budget-ms", f"{est.latency_ms:.6f}", "--fallback", "onnxruntime",
                   "--runs", "5", "--db", str(db), env={"NNI_OUTPUT_DIR": str(tmp_path / "trial")})
    assert close.returncode == 0, close.stderr
    result = json.loads(close.stdout.strip().splitlines()[-1])
    assert result["latency_source"] == "measured" and result["latency_ms"] > 0
    assert result["within_budget"] == (result["latency_ms"] <= est.latency_ms)
    if not result["within_budget"]:
        assert result["default"] == 0.0 and result["accuracy"] is None
    saved = json.loads((tmp_path / "trial" / "result.json").read_text())
    assert saved["result"]["arch_hash"] == predictor.space.arch_hash(arch)
    # bad input: one line, exit 2
    bad = _trial("--space", "mobilenetv3", "--predictor", str(out), "--params", "{not json")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    outside = _trial("--space", "mobilenetv3", "--predictor", str(out))
    assert outside.returncode == 2 and "inside an nnictl experiment" in outside.stderr


def local_cpu_config(tmp_path: Path, out: Path, db: Path, budget: float, **overrides) -> Path:
    """experiments/local_cpu.yml pointed at the tiny predictor of this test."""
    config = yaml.safe_load((REPO / "experiments" / "local_cpu.yml").read_text())
    args = config["tuner"]["classArgs"]
    command = config["trialCommand"]
    # the space, predictor, input size and budget are in classArgs only: the tuner sends them to the trials
    for old, new in ((f"--db {args['refit_db']}", f"--db {db}"), ("--runs 50", "--runs 5"),
                     ("--accuracy digits", "--accuracy synflow")):
        assert old in command, old
        command = command.replace(old, new)
    args.update(predictor=str(out), input_size=8, latency_budget_ms=budget, refit_db=str(db), **overrides)
    config.update(trialCommand=command, searchSpaceFile=str(REPO / "experiments" / config["searchSpaceFile"]),
                  trialCodeDirectory=str(REPO))
    config["tuner"]["codeDirectory"] = str(REPO)
    path = tmp_path / "local_cpu.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_local_cpu_config_passes_preflight_with_a_predictor_of_this_machine(built, tmp_path, cli):
    db, out = built
    ests = load_predictor(out, "mobilenetv3").estimate_many(
        sample_architectures(load_predictor(out, "mobilenetv3").space, 30, seed=1))
    budget = sorted(e.latency_ms for e in ests)[15]
    check = cli("nas", "check", "--config", str(local_cpu_config(tmp_path, out, db, round(budget, 4))),
                "--samples", "30")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["predictor"]["kind"] == "esm"
    shipped = cli("nas", "check", "--config", str(REPO / "experiments" / "local_cpu.yml"))
    if not (REPO / "runs" / "predictors" / "mobilenetv3-32-cpu" / "predictor.json").is_file():
        assert shipped.returncode == 2 and "not found" in shipped.stderr and "nni-hwaware build" in shipped.stderr
