"""Real nnictl experiments: the main job (quickstart) and local_cpu.yml with fallback measurement.

Each experiment gets a free port, a working directory and a HOME of its own (NNI's experiment registry lives
in ~/nni-experiments), so two runs never collide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_nas_fallback import BUILD, local_cpu_config

from nni_hwaware.nas.experiment import free_port, read_trials, rest
from nni_hwaware.store import MeasurementStore

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "experiments" / "quickstart.yml").read_text())


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore")


def _nnictl_stop(experiment_id: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", experiment_id], capture_output=True,
                   env=env, timeout=120)


@pytest.mark.slow
def test_main_job_runs_the_quickstart_and_leaves_the_web_ui_up(tmp_path):
    env, port, out = _env(tmp_path), free_port(), tmp_path / "quickstart"
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.main", "--trials", "3", "--port", str(port),
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / "results.json").read_text())
    experiment_id = report["experiment_id"]
    try:
        assert f"web UI: http://localhost:{port}" in run.stdout and f"nnictl stop {experiment_id}" in run.stdout
        assert "best architectures within budget" in run.stdout and "trials done" in run.stderr
        # the trials, read back through NNI's REST API while the experiment is still up
        assert rest(port, "experiment")["id"] == experiment_id
        trials = read_trials(port)
        args = QUICKSTART["tuner"]["classArgs"]
        limit_ms = args["latency_budget_ms"] * (1 - args["margin"])
        limit_mj = args["energy_budget_mj"] * (1 - args["margin"])
        succeeded = [t for t in trials if t["status"] == "SUCCEEDED"]
        assert len(trials) == 3 and len(succeeded) == 3, trials
        for t in succeeded:
            r = t["result"]
            assert 0 <= r["default"] <= 1 and r["accuracy_method"] == "digits"
            assert r["latency_ms"] <= limit_ms and r["energy_mj"] <= limit_mj and r["within_budget"] is True
            assert r["latency_source"] == "surrogate" and r["predictor"] == "jetson_nano"
        assert {t["trial"] for t in succeeded} == {r["trial"] for r in report["rows"]}
        assert (out / "pareto.png").stat().st_size > 0 and (out / "trials.csv").read_text().count("\n") == 4
    finally:
        _nnictl_stop(experiment_id, env)
    with pytest.raises(OSError):
        rest(port, "check-status", timeout=3)


@pytest.mark.slow
def test_local_cpu_experiment_measures_what_the_surrogate_cannot_decide(tmp_path, cli):
    from nni_hwaware.nas import HardwarePredictor
    from nni_hwaware.spaces import sample_architectures

    db, pred = tmp_path / "m.db", tmp_path / "pred"
    built = cli(*BUILD, "--db", str(db), "--out", str(pred), timeout=600)
    assert built.returncode == 0, built.stderr
    predictor = HardwarePredictor(pred, "mobilenetv3")
    ests = predictor.estimate_many(sample_architectures(predictor.space, 40, seed=2))
    budget = round(sorted(e.latency_ms for e in ests)[20], 4)
    config = local_cpu_config(tmp_path, pred, db, budget, refit_every=1)
    env = _env(tmp_path)
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config", str(config),
                          "--trials", "3", "--out", str(tmp_path / "run"), "--port", str(free_port()), "--stop",
                          "--json"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(run.stdout)
    assert report["stopped"] and report["trials"] == 3 and report["succeeded"] == 3, run.stderr
    sources = [r["source"] for r in report["rows"]]
    assert set(sources) <= {"surrogate", "measured"} and "measured" in sources, report["rows"]
    limit = budget * 0.95
    for r in report["rows"]:
        # the surrogate or the measurement decided; over budget means not trained (the tuner screens with a
        # refitted surrogate, the trials with the built one, so a surrogate verdict can be over budget too)
        assert r["within_budget"] == (r["latency_ms"] <= limit)
        if not r["within_budget"]:
            assert r["accuracy"] == 0.0
    with MeasurementStore(db, readonly=True) as store:
        rows = store.dataset()
    assert (rows["campaign"] == "nas-fallback").sum() == sources.count("measured")
    dispatcher = (Path(report["experiment_dir"]) / "log" / "dispatcher.log").read_text()
    assert "refitted the surrogate" in dispatcher
