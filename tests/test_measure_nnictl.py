"""experiments/measure.yml on NNI's engine: a real nnictl experiment measures batches, import-nni collects them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.spaces import load_space, sample_architectures

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "measure.yml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=10) as response:
        return json.loads(response.read().decode())


def test_shipped_config_is_a_valid_nni_v2_config():
    from nni.experiment.config import ExperimentConfig

    config = yaml.safe_load(CONFIG.read_text())
    ExperimentConfig(**config).validate()
    assert config["tuner"]["name"] == "GridSearch" and config["trainingService"]["platform"] == "local"
    batches = int(config["trialCommand"].split("--batches")[1].split()[0])
    assert config["searchSpace"]["batch"]["_value"] == list(range(batches)) and config["maxTrialNumber"] == batches
    assert "machineList" in CONFIG.read_text()  # the remote farm is documented in the file


@pytest.mark.slow
def test_nnictl_experiment_measures_batches_and_import_collects_them(tmp_path, cli):
    nnictl = shutil.which("nnictl", path=os.path.dirname(os.sys.executable) + os.pathsep + os.environ["PATH"])
    if nnictl is None:
        pytest.skip("nnictl is not installed")
    config = yaml.safe_load(CONFIG.read_text())
    command = config["trialCommand"]
    for old, new in (("--n 40", "--n 4"), ("--batches 4", "--batches 2"), ("--runs 150", "--runs 10"),
                     ("--input-size 32", "--input-size 16"), ("--energy auto", "--energy none")):
        assert old in command
        command = command.replace(old, new)
    config.update(trialCommand=command.replace("python3 ", f"{os.sys.executable} "), maxTrialNumber=2,
                  trialCodeDirectory=str(REPO), experimentWorkingDirectory=str(tmp_path / "nni"))
    config["searchSpace"]["batch"]["_value"] = [0, 1]
    (tmp_path / "measure.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    # a home of its own: NNI's experiment registry (~/nni-experiments/.experiment) is not shared with anyone
    env = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore",
               PATH=os.path.dirname(os.sys.executable) + os.pathsep + os.environ["PATH"])
    (tmp_path / "home").mkdir()
    created = subprocess.run([nnictl, "create", "--config", str(tmp_path / "measure.yml"), "--port", str(port)],
                             capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stdout + created.stderr
    experiment_id = _get(port, "experiment")["id"]
    try:
        deadline = time.monotonic() + 80
        status = None
        while time.monotonic() < deadline:
            status = _get(port, "check-status")["status"]
            trials = _get(port, "trial-jobs")
            if status in ("DONE", "ERROR", "STOPPED", "NO_MORE_TRIAL") and len(trials) == 2 and all(
                    t["status"] in ("SUCCEEDED", "FAILED") for t in trials):
                break
            time.sleep(1)
        assert [t["status"] for t in trials] == ["SUCCEEDED", "SUCCEEDED"], (status, trials)
        # while it runs: through the REST API
        live = cli("dataset", "import-nni", experiment_id, "--port", str(port), "--db", str(tmp_path / "live.db"))
        assert live.returncode == 0, live.stderr
    finally:
        subprocess.run([nnictl, "stop", experiment_id], capture_output=True, env=env, timeout=60)

    # stopped: from the experiment's folder, found through NNI's registry in HOME
    db = tmp_path / "m.db"
    run = subprocess.run([os.sys.executable, "-m", "nni_hwaware.cli", "dataset", "import-nni", experiment_id,
                          "--db", str(db)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "imported 4 measurement(s) from 2 trial(s)" in run.stdout
    again = cli("dataset", "import-nni", experiment_id, "--experiment-dir", str(tmp_path / "nni"), "--db", str(db))
    assert again.returncode == 0 and "imported 0" in again.stdout and "4 already stored" in again.stdout
    space = load_space("mobilenetv3")
    expected = {space.arch_hash(a) for a in sample_architectures(space, 4, seed=0, strategy="balanced", bins=5)}
    with MeasurementStore(db, readonly=True) as store:
        df = store.dataset()
        assert set(df["arch_hash"]) == expected and len(df) == 4
        assert (df["runs"] == 10).all() and (df["input_size"] == 16).all()
        assert set(df["campaign"]) == {f"nni:{experiment_id}"}
    with MeasurementStore(tmp_path / "live.db", readonly=True) as store:
        assert set(store.dataset()["arch_hash"]) == expected
    # each trial also left its results in its output folder
    outputs = list((tmp_path / "nni" / experiment_id).rglob("measurements.json"))
    assert len(outputs) == 2
