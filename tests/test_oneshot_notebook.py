"""experiments/notebooks/oneshot.ipynb: saved clean, and it runs SPOS + evolution through NNI's Python API.

The slow test executes a copy of the notebook in a Jupyter kernel of this interpreter (nbclient) at ``tiny``
scale and checks what it printed and wrote against an independent recomputation: every finalist and every
scored candidate is estimated again with the Jetson Nano predictor in this process and judged against the
budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from notebook_kernel import kernelspec_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "experiments" / "notebooks" / "oneshot.ipynb"
CELL_TIMEOUT_S = 300
TINY = {"cycles": 6, "top_k": 2}  # the notebook's tiny scale


def test_notebook_is_saved_clean() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    for piece in ("HwSupernet(", "load_predictor(", "train_supernet(", "evolve(", "retrain(", "write_outputs(",
                  "NNI_HWAWARE_NB_SCALE", "NNI_HWAWARE_NB_WORKDIR", "oneshot_spos.yml"):
        assert piece in source, piece


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], dict[str, Any], Path]:
    """The executed notebook, the summary its last cell printed, its results.json and its working folder."""
    from nbclient import NotebookClient

    tmp = tmp_path_factory.mktemp("oneshot_notebook")
    workdir = tmp / "work"
    copy = tmp / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNI_HWAWARE_NB_SCALE", "tiny")
        mp.setenv("NNI_HWAWARE_NB_WORKDIR", str(workdir))
        mp.setenv("JUPYTER_PATH", str(kernelspec_dir(tmp / "jupyter")))
        NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp)}}).execute()
    nbformat.write(nb, copy)  # kept beside the run for debugging
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    printed = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream" and o.name == "stdout")
    return nb, json.loads(printed), json.loads((workdir / "results.json").read_text()), workdir


@pytest.fixture(scope="module")
def judge() -> tuple[Any, Any]:
    from nni_hwaware.hardware import load_predictor
    from nni_hwaware.nas.constraints import Budget

    return load_predictor("jetson_nano", "convnet", 50), Budget(latency_ms=30.0, energy_mj=80.0, margin=0.1)


@pytest.mark.slow
def test_finalists_are_within_budget_by_an_independent_estimate(executed, judge) -> None:
    _, summary, results, workdir = executed
    predictor, budget = judge
    assert summary["scale"] == "tiny" and summary["workdir"] == str(workdir.resolve())
    assert summary["finalists"] == len(results["final"]) == TINY["top_k"]
    assert summary["finalists_within_budget"] == TINY["top_k"]
    for row in results["final"]:
        estimate = predictor.estimate(row["arch"])  # this process, not the notebook's kernel
        assert row["latency_ms"] == pytest.approx(estimate.latency_ms, rel=1e-6)
        assert row["energy_mj"] == pytest.approx(estimate.energy_mj, rel=1e-6)
        assert row["within_budget"] is True and budget.check(estimate).ok
        assert row["arch_hash"] == predictor.space.arch_hash(row["arch"])
        assert 0.0 <= row["accuracy"] <= 1.0
    best = max(results["final"], key=lambda r: r["accuracy"])
    assert summary["best_accuracy"] == pytest.approx(best["accuracy"]) and summary["best_arch"] == best["arch"]
    assert (workdir / "pareto.png").stat().st_size > 1000


@pytest.mark.slow
def test_evolution_scored_only_candidates_within_budget(executed, judge) -> None:
    nb, summary, results, _ = executed
    predictor, budget = judge
    assert summary["evaluated"] == results["evaluated"] == len(results["search"]) == TINY["cycles"]
    for record in results["search"]:
        assert record["latency_ms"] <= 27.0 and record["energy_mj"] <= 72.0
        assert record["latency_ms"] == pytest.approx(predictor.estimate(record["arch"]).latency_ms, rel=1e-6)
        assert 0.0 <= record["supernet_accuracy"] <= 1.0
    finalist_hashes = {r["arch_hash"] for r in results["final"]}
    searched = {predictor.space.arch_hash(r["arch"]) for r in results["search"]}
    assert finalist_hashes <= searched  # the finalists come from the evolution
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs if o.output_type == "execute_result")
    assert all(h in shown for h in finalist_hashes)  # the finalists' table is displayed
    assert set(summary["seconds"]) == {"supernet_s", "evolution_s", "retrain_s", "wall_s"}
