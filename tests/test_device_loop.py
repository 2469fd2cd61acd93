"""The device loop of the NAS layer: fingerprints checked, fallback measurements through a device agent into the
store, refits as new folders that later trials use, an unreachable device noted (never a crashed trial), and an
nnictl experiment whose fallback measures through the agent over HTTP.

The agent runs here on 127.0.0.1 with onnxruntime (this CPU stands in for the board), so the Jetson Nano
predictor is used with ``allow_device_mismatch`` (the board and backend differ, which the override records).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sshd import sshd_unavailable, start_http_agent, start_sshd

from nni_hwaware.errors import DeviceError
from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.nas import Budget, load_predictor
from nni_hwaware.nas.fallback import CAMPAIGN, MeasuredFallback, latest_refit, refits_dir
from nni_hwaware.spaces import sample_architectures
from nni_hwaware.spaces.nni_space import arch_to_hpo_params

REPO = Path(__file__).resolve().parents[1]
SIZE = 16  # small convnets: each measurement takes the protocol's window and little else


@pytest.fixture(scope="module")
def jetson():
    return load_predictor("jetson_nano", "convnet", SIZE)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    started = start_http_agent(tmp_path_factory.mktemp("agent"))
    yield started
    started.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _undecided(predictor, n: int = 200, seed: int = 4):
    """Small architectures (quick to export and upload) whose estimate the surrogate cannot decide under a
    budget at its point estimate."""
    archs = sample_architectures(predictor.space, n, seed=seed)
    for arch, est in zip(archs, predictor.estimate_many(archs)):
        budget = Budget(latency_ms=est.latency_ms * 1.0001)
        if est.details["params"] <= 1_500_000 and not budget.check(est).decided:
            yield arch, est, budget


def test_a_device_mismatch_is_one_line_naming_the_difference_and_the_override(jetson, tmp_path):
    with pytest.raises(DeviceError) as caught:
        MeasuredFallback(jetson, tmp_path / "m.db", backend="onnxruntime", protocol="esm", energy="none")
    message = str(caught.value)
    assert "\n" not in message
    assert "backend is 'onnxruntime', expected 'tensorrt'" in message
    assert "board is" in message and "NVIDIA Jetson Nano Developer Kit" in message
    assert "allow_device_mismatch=True" in message and "--allow-device-mismatch" in message
    allowed = MeasuredFallback(jetson, tmp_path / "m.db", backend="onnxruntime", protocol="esm", energy="none",
                               allow_device_mismatch=True)
    assert "backend is 'onnxruntime'" in allowed.device_difference
    allowed.close()
    # the Jetson Nano predictor's numbers follow the dataset's protocol: a local measurer cannot run it
    assert jetson.target.protocol_name == "jetson_dataset"
    with pytest.raises(Exception, match="device agent only"):
        MeasuredFallback(jetson, tmp_path / "m.db", backend="onnxruntime", allow_device_mismatch=True)


def test_fallback_measures_through_the_http_agent_and_refits_into_new_folders(jetson, agent, tmp_path):
    db = tmp_path / "store" / "m.db"
    fallback = MeasuredFallback(jetson, db, backend="onnxruntime", device=agent.url,
                                token_file=str(agent.token_file), seconds=0.3, allow_device_mismatch=True)
    try:
        assert fallback.primary == "jetson_dataset"  # the predictor's own protocol by default
        measured = []
        for arch, est, budget in list(_undecided(jetson))[:3]:
            verdict = fallback.decide(arch, budget.check(est), budget)
            assert verdict.decided and verdict.estimate.source == "measured"
            assert verdict.estimate.details["measured_protocol"] == "jetson_dataset"
            measured.append(jetson.space.arch_hash(arch))
        assert len(measured) == 3
    finally:
        fallback.close()
    with MeasurementStore(db, readonly=True) as store:
        rows = store.dataset()
        assert list(rows["campaign"]) == [CAMPAIGN] * 3 and sorted(rows["arch_hash"]) == sorted(measured)
        description = json.loads(rows["device_description"][0])
        assert description["protocol"] == "jetson_dataset" and description["backend"] == "onnxruntime"
        stored = store.get_measurement(jetson.space, measured[0], rows["device"][0], "onnxruntime", SIZE,
                                       precision="fp32")
    fingerprint = stored.extra["fingerprint"]
    assert fingerprint["protocol"] == "jetson_dataset" and fingerprint["machine"] == description["machine"]
    assert "board is" in stored.extra["device_mismatch"]

    # a refit is a new folder; the old predictor folder is untouched; the pointer leads a later load to it
    before = sorted(p.name for p in Path(jetson.folder).iterdir())
    record = fallback.refit()
    first = Path(record["folder"])
    assert first == refits_dir(db) / "0001" and (first / "predictor.json").is_file()
    assert sorted(p.name for p in Path(jetson.folder).iterdir()) == before
    meta = json.loads((first / "predictor.json").read_text())
    assert meta["kind"] == "calibrated" and meta["allow_device_mismatch"] is True
    assert sorted(meta["notes"]["arch_hashes"]) == sorted(measured) and meta["notes"]["added"] == 3
    assert meta["notes"]["store"] == str(db.resolve()) and meta["notes"]["devices"][0]["protocol"] == "jetson_dataset"
    assert "mape" in meta["notes"]["base_on_these_measurements"]
    assert "Device mismatch allowed**: True" in (first / "MODEL_CARD.md").read_text()
    assert latest_refit(db, jetson) == first
    assert latest_refit(db, REPO / "predictors" / "other") is None  # another base's pointer is not ours
    second = Path(fallback.refit()["folder"])
    assert second.name == "0002" and first.is_dir() and latest_refit(db, jetson) == second
    reloaded = load_predictor(second, "convnet")
    assert reloaded.kind == "calibrated" and reloaded.input_size == SIZE

    # a later trial of the same experiment (same store) predicts with the newest refit
    from nni_hwaware.nas.trial import build_parser, evaluate

    arch = sample_architectures(jetson.space, 1, seed=99)[0]
    args = build_parser().parse_args(["--space", "convnet", "--predictor", "jetson_nano", "--input-size", str(SIZE),
                                      "--latency-budget-ms", "1000", "--accuracy", "synflow", "--db", str(db)])
    _, result = evaluate(args, arch_to_hpo_params(jetson.space, arch))
    assert result["refit"] == str(second) and result["predictor"] == "calibrated"


@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_an_unreachable_device_inside_a_trial_reports_the_surrogate_and_a_note(jetson, tmp_path, transport):
    from nni_hwaware.nas.trial import build_parser, evaluate

    if transport == "ssh" and sshd_unavailable():
        pytest.skip(sshd_unavailable())
    port = _closed_port()
    token = tmp_path / "token"
    token.write_text("secret\n")
    device = (["--device", f"http://127.0.0.1:{port}", "--token-file", str(token)] if transport == "http"
              else ["--device", f"ssh://nobody@127.0.0.1:{port}"])
    arch, est, budget = next(_undecided(jetson))
    args = build_parser().parse_args([
        "--space", "convnet", "--predictor", "jetson_nano", "--input-size", str(SIZE), "--accuracy", "synflow",
        "--latency-budget-ms", repr(budget.latency_ms), "--allow-device-mismatch", "--fallback-seconds", "0.3",
        "--db", str(tmp_path / "m.db"), *device])
    _, result = evaluate(args, arch_to_hpo_params(jetson.space, arch))
    assert result["latency_source"] == "surrogate" and result["latency_ms"] == pytest.approx(est.latency_ms)
    assert str(port) in result["fallback_error"] and "\n" not in result["fallback_error"]
    assert any(n.startswith("fallback measurement failed") for n in result["notes"])
    assert result["within_budget"] is not None and result["default"] is not None


def test_fallback_measures_over_real_ssh(jetson, tmp_path):
    if sshd_unavailable():
        pytest.skip(sshd_unavailable())
    sshd = start_sshd(tmp_path / "sshd")
    try:
        fallback = MeasuredFallback(jetson, tmp_path / "m.db", backend="onnxruntime", device=sshd.url(),
                                    seconds=0.3, allow_device_mismatch=True)
        try:
            arch, est, budget = next(_undecided(jetson, seed=7))
            verdict = fallback.decide(arch, budget.check(est), budget)
        finally:
            fallback.close()
    finally:
        sshd.stop()
    assert verdict.estimate.source == "measured"
    with MeasurementStore(tmp_path / "m.db", readonly=True) as store:
        assert store.count() == 1


def _config(tmp_path: Path, device: dict, db: Path, budget: float) -> Path:
    """experiments/jetson_remote.yml pointed at an agent here (``device``: ``fallback_device`` and, over HTTP,
    ``token_file``), 3 trials."""
    config = yaml.safe_load((REPO / "experiments" / "jetson_remote.yml").read_text())
    args = config["tuner"]["classArgs"]
    args.pop("token_file", None)
    args.update(**device, allow_device_mismatch=True,
                backend="onnxruntime", refit_db=str(db), input_size=SIZE, latency_budget_ms=budget, margin=0.0,
                tuner="Random", tuner_args={"seed": 1}, refit_every=1,
                emit_uncertain=False)  # within budget under the estimate: small networks, quick to measure
    args.pop("energy_budget_mj", None)
    config.update(trialCommand="python3 -m nni_hwaware.nas.trial --accuracy synflow --fallback-seconds 0.3",
                  searchSpaceFile=str(REPO / "experiments" / config["searchSpaceFile"]),
                  trialCodeDirectory=str(REPO), maxTrialNumber=3)
    config["tuner"]["codeDirectory"] = str(REPO)
    path = tmp_path / "jetson_remote.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_jetson_remote_config_passes_preflight():
    from nni_hwaware.nas.experiment import load_config, preflight

    path = REPO / "experiments" / "jetson_remote.yml"
    info = preflight(load_config(path), path.parent, samples=30)
    args = load_config(path)["tuner"]["classArgs"]
    assert info["predictor"]["kind"] == "jetson_nano" and args["fallback_device"] == "ssh://jetson"
    assert args["tuner"] == "TPE" and args["backend"] == "tensorrt"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_nnictl_experiment_measures_through_the_agent(jetson, agent, tmp_path, transport):
    """experiments/jetson_remote.yml as nnictl runs it, its fallback on the agent over HTTP, or over real SSH
    (each measuring trial starts ``ssh ... agent serve-stdio``, as with a board)."""
    if transport == "ssh":
        if sshd_unavailable():
            pytest.skip(sshd_unavailable())
        sshd = start_sshd(tmp_path / "sshd")
        try:
            _nnictl_experiment(jetson, tmp_path, {"fallback_device": sshd.url()})
        finally:
            sshd.stop()
    else:
        _nnictl_experiment(jetson, tmp_path, {"fallback_device": agent.url, "token_file": str(agent.token_file)})


def _nnictl_experiment(jetson, tmp_path: Path, device: dict) -> None:
    from nni_hwaware.nas.experiment import free_port

    estimates = jetson.estimate_many(sample_architectures(jetson.space, 40, seed=2))
    budget = round(sorted(e.latency_ms for e in estimates)[10], 4)  # out of distribution at 16 px: measured
    db = tmp_path / "runs" / "jetson.db"
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config",
                          str(_config(tmp_path, device, db, budget)), "--out", str(tmp_path / "run"), "--port",
                          str(free_port()), "--json", "--stop", "--timeout", "600"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.stdout.strip(), run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["stopped"] and report.get("left_running") == [], report
    trial_results = [json.loads(p.read_text())["result"]
                     for p in (tmp_path / "run" / "nni-experiments").glob("**/result.json")]
    assert len(trial_results) == 3 and report["succeeded"] == 3, (report, run.stderr[-3000:])
    measured = [r for r in trial_results if r["latency_source"] == "measured"]
    assert measured and all(r["fallback_error"] is None for r in trial_results), trial_results
    with MeasurementStore(db, readonly=True) as store:
        rows = store.dataset()
    assert len(rows) >= len(measured) and set(rows["campaign"]) == {CAMPAIGN}
    assert json.loads(rows["device_description"][0])["protocol"] == "jetson_dataset"
    # refit_every 1: the tuner refitted into refits/0001 after the first measured trial
    pointer = json.loads((refits_dir(db) / "latest.json").read_text())
    assert Path(pointer["folder"]).parent == refits_dir(db) and (refits_dir(db) / "0001" / "predictor.json").is_file()
    assert pointer["base"] == str(Path(jetson.folder).resolve())
    # later trials of the experiment predicted with a refit (trials run one at a time, each after a refit)
    assert [r["refit"] is not None for r in trial_results].count(True) >= 1, trial_results
    assert all(Path(r["refit"]).parent == refits_dir(db) for r in trial_results if r["refit"])


@pytest.mark.parametrize(("changes", "message"), [
    ({"fallback_device": 5}, "classArgs fallback_device must be a device URL"),
    ({"fallback_device": []}, "classArgs fallback_device must be a device URL"),
    ({"fallback_device": "jetson"}, "classArgs fallback_device must be ssh://[user@]host[:port]"),
    ({"fallback_device": ["ssh://a", "cpu"]}, "classArgs fallback_device must be ssh://[user@]host[:port]"),
    ({"fallback_device": "ssh://jetson", "token_file": "/tmp/t"}, "classArgs token_file is the token of an http://"),
    ({"fallback_device": "http://h:1", "token_file": 3}, "classArgs token_file must be a string"),
    ({"fallback_protocol": "fast"}, "classArgs fallback_protocol must be one of predictor, esm, jetson_dataset"),
    ({"allow_device_mismatch": "yes"}, "classArgs allow_device_mismatch must be true or false"),
    ({"threads": 0}, "classArgs threads must be a whole number of at least 1"),
])
def test_fallback_class_args_are_checked_with_one_line_naming_the_key(changes, message):
    from nni_hwaware.errors import HwAwareError
    from nni_hwaware.nas.tuner import check_class_args

    args = {"space": "convnet", "predictor": "jetson_nano", "latency_budget_ms": 30, **changes}
    with pytest.raises(HwAwareError) as caught:
        check_class_args(args)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_trial_command_states_the_device_once(tmp_path):
    from nni_hwaware.errors import HwAwareError
    from nni_hwaware.nas.experiment import load_config, preflight

    config = load_config(REPO / "experiments" / "jetson_remote.yml")
    config["trialCommand"] += " --device ssh://other"
    with pytest.raises(HwAwareError, match="state fallback_device once, in the tuner's classArgs"):
        preflight(config, REPO / "experiments", samples=10)
    config = load_config(REPO / "experiments" / "jetson_remote.yml")
    config["trialCommand"] += " --fallback onnxruntime"
    with pytest.raises(HwAwareError, match="state the backend once"):
        preflight(config, REPO / "experiments", samples=10)
    config = load_config(REPO / "experiments" / "jetson_remote.yml")
    config["tuner"]["classArgs"].update(fallback_device="http://127.0.0.1:9", token_file=str(tmp_path / "none"))
    with pytest.raises(HwAwareError, match="token_file .* cannot be read"):
        preflight(config, REPO / "experiments", samples=10)


def test_an_esm_refit_is_a_new_folder_that_loads_and_holds_the_new_measurements(esm_gb_predictor, tmp_path):
    """The ESM side of the loop: a fallback measurement here, then ``refit`` writes ``refits/0001`` (kind esm,
    build data plus the measurement), leaves the original folder as it was, and loads as a predictor."""
    base = load_predictor(esm_gb_predictor, "mobilenetv3", 8)
    before = {p.name: p.read_bytes() for p in Path(esm_gb_predictor).iterdir() if p.is_file()}
    data_before = (Path(esm_gb_predictor) / "data.jsonl").read_text().splitlines()
    db = tmp_path / "store" / "m.db"
    # the fixture's latencies are synthetic, so it names no device: nothing to check the measurer against
    # 40 runs: the middle 60 % of 5 runs on a busy machine spreads past the outlier threshold, and a refit
    # leaves ESM-protocol outliers out
    fallback = MeasuredFallback(base, db, backend="onnxruntime", runs=40, energy="none", check_device=False)
    try:
        arch = sample_architectures(base.space, 1, seed=123)[0]
        measured = fallback.measure(arch, base.estimate(arch))
        assert measured.source == "measured"
        record = fallback.refit()
    finally:
        fallback.close()
    folder = Path(record["folder"])
    assert folder == refits_dir(db) / "0001" and latest_refit(db, base) == folder
    assert json.loads((folder / "predictor.json").read_text())["kind"] == "esm"
    data_after = (folder / "data.jsonl").read_text().splitlines()
    assert len(data_after) == len(data_before) + 1
    assert before == {p.name: p.read_bytes() for p in Path(esm_gb_predictor).iterdir() if p.is_file()}
    refitted = load_predictor(folder, "mobilenetv3", 8)
    assert refitted.kind == "esm" and refitted.estimate(arch).latency_ms > 0
    # and the refitted folder's own refit reads the measurement as training data
    from nni_hwaware.esm import read_build_data

    train_before = read_build_data(esm_gb_predictor, base.space)["train"][0]
    train_after = read_build_data(folder, base.space)["train"][0]
    assert len(train_after) == len(train_before) + 1
