"""experiments/notebooks/quickstart.ipynb: saved clean, and it runs a real NasExperiment end to end.

The slow test executes a copy of the notebook in a Jupyter kernel of this interpreter (nbclient) with 3 trials
and checks what it printed against an independent recomputation: every trained network and every network the
hardware filter rejected is estimated again with the Jetson Nano predictor and judged against the budget.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
from pathlib import Path

import nbformat
import pytest
from notebook_kernel import kernelspec_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "notebooks" / "quickstart.ipynb"
TRIALS = 3
CELL_TIMEOUT_S = 300


def test_notebook_is_saved_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    for piece in ("NasExperiment", "HardwareFilter", "SurrogateProfiler", "Chain(", "FunctionalEvaluator",
                  "experiment.stop()", "NNI_HWAWARE_NB_TRIALS", "NNI_HWAWARE_NB_PORT",
                  "NNI_HWAWARE_NB_WORKDIR"):
        assert piece in source, piece


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The executed notebook, the report its last cell printed, its report.json and its working folder."""
    from nbclient import NotebookClient

    tmp = tmp_path_factory.mktemp("notebook")
    workdir = tmp / "work"
    copy = tmp / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNI_HWAWARE_NB_TRIALS", str(TRIALS))
        mp.setenv("NNI_HWAWARE_NB_WORKDIR", str(workdir))
        mp.delenv("NNI_HWAWARE_NB_PORT", raising=False)
        mp.setenv("JUPYTER_PATH", str(kernelspec_dir(tmp / "jupyter")))
        NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp)}}).execute()
    nbformat.write(nb, copy)  # kept beside the run for debugging
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    printed = "".join(o.get("text", "") for o in last.outputs
                      if o.output_type == "stream" and o.name == "stdout")
    report = json.loads(printed)
    return nb, report, json.loads((workdir / "report.json").read_text()), workdir


@pytest.fixture(scope="module")
def judge():
    from nni_hwaware.hardware import load_predictor
    from nni_hwaware.nas.constraints import Budget

    return load_predictor("jetson_nano", "convnet"), Budget(latency_ms=30.0, energy_mj=80.0, margin=0.1)


@pytest.mark.slow
def test_notebook_trains_the_requested_trials(executed):
    nb, report, details, workdir = executed
    assert report["trials_requested"] == TRIALS
    assert report["trials_finished"] == TRIALS
    assert {k: details[k] for k in report} == report  # report.json = the printed summary + details
    trials = details["trials"]
    assert len(trials) == TRIALS and len({t["trial"] for t in trials}) == TRIALS
    assert report["workdir"] == str(workdir.resolve())
    with open(workdir / "trials.csv", newline="") as f:
        assert sorted(r["trial"] for r in csv.DictReader(f)) == sorted(t["trial"] for t in trials)
    assert (workdir / "nni-experiments" / report["experiment_id"]).is_dir()
    # the results table shown in the notebook lists every trial
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs if o.output_type == "execute_result")
    assert all(t["trial"] in shown for t in trials)


@pytest.mark.slow
def test_trial_reports_match_an_independent_estimate(executed, judge):
    _, report, details, _ = executed
    predictor, budget = judge
    for trial in details["trials"]:
        assert 0.0 <= trial["accuracy"] <= 1.0
        assert trial["latency_ms"] > 0 and trial["energy_mj"] > 0
        estimate = predictor.estimate(trial["arch"])  # the trial process computed its numbers on its own
        assert trial["arch_hash"] == predictor.space.arch_hash(trial["arch"])
        assert trial["latency_ms"] == pytest.approx(estimate.latency_ms, rel=1e-6)
        assert trial["energy_mj"] == pytest.approx(estimate.energy_mj, rel=1e-6)
        assert trial["in_distribution"] == estimate.in_distribution
        assert trial["within_budget"] is True and budget.check(estimate).ok
        assert trial["latency_ms"] <= 27.0 and trial["energy_mj"] <= 72.0
    best = max(details["trials"], key=lambda t: t["accuracy"])
    assert report["trials_within_budget"] == TRIALS
    assert report["best_accuracy_within_budget"] == pytest.approx(best["accuracy"])
    assert report["best_within_budget"]["arch"] == best["arch"]
    top = [t for t in details["trials"] if t["trial"] == report["nni_top_model_trial"]]
    assert top and top[0]["accuracy"] == pytest.approx(best["accuracy"])  # NNI ranks by the reported accuracy


@pytest.mark.slow
def test_filter_verdicts_hold(executed, judge):
    _, report, details, _ = executed
    predictor, budget = judge
    assert report["filter_accepted"] >= TRIALS
    assert report["filter_rejected"] == len(details["rejected_models"])
    assert report["filter_rejected"] > 0  # most random convnet networks exceed 27 ms / 72 mJ on the Nano
    for rejected in details["rejected_models"]:
        estimate = predictor.estimate(rejected["arch"])
        verdict = budget.check(estimate)
        assert not verdict.ok and verdict.violations == rejected["over_budget"] and rejected["over_budget"]
        assert rejected["latency_ms"] == pytest.approx(estimate.latency_ms, rel=1e-6)
        assert rejected["in_distribution"] == estimate.in_distribution
        assert (rejected["latency_ms"] > 27.0) or (rejected["energy_mj"] > 72.0)


@pytest.mark.slow
def test_experiment_is_stopped(executed):
    _, report, _, _ = executed
    with socket.socket() as sock:  # NNI's manager (web UI) no longer listens
        assert sock.connect_ex(("127.0.0.1", report["port"])) != 0
