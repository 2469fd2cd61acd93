"""Measuring on a remote device through the agent: real SSH to a real sshd, and HTTP, on this machine's loopback.

The device is this machine (the agent runs with this venv's Python and onnxruntime), reached the way a Jetson
would be: ``--device ssh://USER@127.0.0.1:PORT?...`` through an sshd the test starts, or ``--device
http://127.0.0.1:PORT`` with a token. Campaigns store and resume exactly as local measurement does; the faults
(agent killed, device unreachable, wrong token, a pool of different devices) are one-line errors.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badinput import Case, check_case
from sshd import free_port, sshd_unavailable, start_http_agent, start_sshd, write_tiny_space

from nni_hwaware.errors import DeviceError
from nni_hwaware.measure.remote import agent_digest, parse_device_url
from nni_hwaware.measure.store import MeasurementStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def sample_args(space: str, n: int = 4, seed: int = 1) -> list[str]:
    return ["--space", space, "--n", str(n), "--seed", str(seed), "--input-size", "8"]
FAST = ["--runs", "15", "--warmup", "2", "--energy", "none", "--qc-every", "2", "--qc-references", "1",
        "--drift", "0.9"]


def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nni_hwaware.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A convnet-family space of models of a few kilobytes (the real convnet's reach 400 MB)."""
    return str(write_tiny_space(tmp_path_factory.mktemp("space")))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    info = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield info
    info.stop()


@pytest.fixture
def http_agents(tmp_path):
    """Starts HTTP agents (``http_agents(name, **kwargs)``) and stops every one at the end."""
    started = []

    def start(name: str = "agent", **kwargs):
        agent = start_http_agent(tmp_path / name, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def rows(db: Path) -> list[tuple]:
    with MeasurementStore(db, readonly=True) as store:
        return sorted((m.arch_hash, m.device_key, m.input_size, m.campaign) for _, m in store.measurements())


# ------------------------------------------------------------------------------------------------ URLs
def test_device_urls_parse_and_bad_ones_say_what_is_wrong(tmp_path):
    d = parse_device_url("ssh://nvidia@jetson:2222?python=/usr/bin/python3.6&gpu=0")
    assert (d.scheme, d.user, d.host, d.port, d.python, d.gpu) == ("ssh", "nvidia", "jetson", 2222,
                                                                   "/usr/bin/python3.6", 0)
    assert parse_device_url("http://10.0.0.5:8765").port == 8765
    for url, expect in [("ftp://x", "unknown scheme"), ("https://x:1", "plain HTTP"), ("ssh://", "no host"),
                        ("http://h:99999", "port"), ("ssh://h?color=red", "unknown option"),
                        ("ssh://h/some/path", "no path"), ("http://h:1?gpu=x", "gpu"),
                        ("ssh://h?identity=" + str(tmp_path / "nokey"), "does not exist")]:
        with pytest.raises(DeviceError, match=expect):
            parse_device_url(url)


def _token(work: Path) -> None:
    (work / "token").write_text("secret\n")


BAD = [
    Case("scheme", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device", "ftp://h"],
         expect="unknown scheme"),
    Case("no-host", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device", "ssh://"],
         expect="no host"),
    Case("port", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device",
                  "http://127.0.0.1:70000"], expect="port"),
    Case("option", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device",
                    "ssh://h?pyhton=python3"], expect="unknown option"),
    Case("pool-mixed", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device", "cpu",
                        "--device", "http://127.0.0.1:1"], setup=_token, expect="pool"),
    Case("no-token", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device",
                      "http://127.0.0.1:1"], expect="token"),
    Case("token-file", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device",
                        "http://127.0.0.1:1", "--token-file", "{tmp}/missing"], expect="token-file"),
    Case("build-url", ["build", "--space", "convnet", "--db", "{tmp}/m.db", "--out", "{tmp}/p", "--device",
                       "gopher://h"], expect="unknown scheme"),
    Case("jetson-protocol-here", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--protocol",
                                  "jetson_dataset"], expect="device agent only"),
    Case("protocol-seconds", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--protocol",
                              "jetson_dataset", "--protocol-seconds", "0"], expect="seconds"),
    Case("info-url", ["device", "info", "--device", "ssh://h?x=1"], expect="unknown option"),
    Case("setup-url", ["device", "setup", "jetson"], expect="unknown scheme"),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_device_arguments_fail_cleanly(case, tmp_path, monkeypatch):
    monkeypatch.delenv("NNI_HWAWARE_TOKEN", raising=False)
    check_case(case, tmp_path)


def test_unreachable_device_is_one_line_and_leaves_no_database(tmp_path, monkeypatch):
    monkeypatch.delenv("NNI_HWAWARE_TOKEN", raising=False)
    port = free_port()
    case = Case("unreachable", ["measure", "--space", "convnet", "--n", "2", "--db", "{tmp}/m.db", "--device",
                                f"http://127.0.0.1:{port}", "--token-file", "{tmp}/token"], setup=_token,
                expect="cannot reach")
    line = check_case(case, tmp_path)
    assert f"127.0.0.1:{port}" in line


def test_unreachable_ssh_device_is_one_line(tmp_path, tiny):
    if sshd_unavailable():
        pytest.skip(sshd_unavailable())
    result = run("measure", *sample_args(tiny), *FAST, "--db", str(tmp_path / "m.db"), "--device",
                 f"ssh://nobody@127.0.0.1:{free_port()}?known_hosts={tmp_path / 'kh'}")
    line = one_error_line(result)
    assert "cannot reach" in line and "ssh" in line
    assert not (tmp_path / "m.db").exists()


# --------------------------------------------------------------------------------- measure, store, resume
def test_local_measurement_records_the_fingerprint():
    from nni_hwaware.measure.runner import make_measurer

    measurer = make_measurer("onnxruntime", energy="none")
    description = measurer.device_description
    assert description["protocol"] == "esm" and description["precision"] == "fp32"
    for key in ("board", "l4t", "gpu", "cuda", "power_mode", "clocks_locked", "cpu", "cores", "machine"):
        assert key in description


def test_architecture_model_exports_at_the_opset_asked():
    import onnx

    from nni_hwaware.measure.runner import architecture_model
    from nni_hwaware.spaces import load_space

    space = load_space("convnet")
    model = architecture_model(space, space.default_architecture(), "onnxruntime", 16, opset=13)
    opsets = {o.domain: o.version for o in onnx.load_model_from_string(model.onnx).opset_import}
    assert opsets[""] == 13


@pytest.mark.parametrize("transport", ["ssh", "http"])
@pytest.mark.slow
def test_remote_measure_stores_and_resumes_like_local(transport, sshd, http_agents, tmp_path, tiny):
    if transport == "ssh":
        copy = sshd.home / ".cache" / "nni-hwaware" / f"agent-{agent_digest()}.py"
        copy.unlink(missing_ok=True)  # the first connection copies the agent over
        device = ["--device", sshd.url()]
    else:
        agent = http_agents()
        device = ["--device", agent.url, "--token-file", str(agent.token_file)]
    local = run("measure", *sample_args(tiny), *FAST, "--db", str(tmp_path / "local.db"), "--json", "--quiet")
    assert local.returncode == 0, local.stderr
    db = tmp_path / "remote.db"
    first = run("measure", *sample_args(tiny), *FAST, "--db", str(db), "--json", "--quiet", *device)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["measured"] == 4 and summary["skipped"] == 0 and summary["db_rows"] == 4
    if transport == "ssh":
        assert copy.is_file() and copy.read_bytes() == (REPO_ROOT / "nni_hwaware/measure/agent.py").read_bytes()
    # the same architectures as local measurement, under one device whose fingerprint is recorded
    assert [r[0] for r in rows(db)] == [r[0] for r in rows(tmp_path / "local.db")]
    with MeasurementStore(db, readonly=True) as store:
        measurements = [m for _, m in store.measurements()]
        description = store.device_description(summary["device"])
    assert {m.device_key for m in measurements} == {summary["device"]}
    assert description["protocol"] == "esm" and description["backend"] == "onnxruntime"
    assert description["machine"] and description["cpu"] and "board" in description and "host" not in description
    assert all(m.extra["agent_version"] == 1 and m.extra["host"] for m in measurements)
    assert all(m.latency_ms > 0 and m.runs == 15 for m in measurements)
    # rerun: nothing new
    again = run("measure", *sample_args(tiny), *FAST, "--db", str(db), "--json", "--quiet", *device)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["measured"] == 0 and json.loads(again.stdout)["skipped"] == 4
    assert len(rows(db)) == 4


def test_wrong_token_is_one_line(http_agents, tmp_path, tiny):
    agent = http_agents(token="right-token")
    bad = tmp_path / "bad-token"
    bad.write_text("wrong-token\n")
    line = one_error_line(run("measure", *sample_args(tiny), *FAST, "--db", str(tmp_path / "m.db"), "--device", agent.url,
                              "--token-file", str(bad)))
    assert "wrong token" in line and agent.url in line
    assert not (tmp_path / "m.db").exists()
    # the token from the environment works
    ok = run("device", "info", "--device", agent.url, env={"NNI_HWAWARE_TOKEN": "right-token"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["agent_version"] == 1


@pytest.mark.slow
def test_device_commands_over_ssh(sshd):
    path = run("device", "agent-path")
    assert path.returncode == 0 and Path(path.stdout.strip()).is_file()
    info = run("device", "info", "--device", sshd.url())
    assert info.returncode == 0, info.stderr
    fingerprint = json.loads(info.stdout)
    assert fingerprint["runtimes"]["onnxruntime"] and fingerprint["max_onnx_opset"]["onnxruntime"] >= 13
    setup = run("device", "setup", sshd.url())
    assert setup.returncode == 0, setup.stderr
    assert "agent copied to" in setup.stdout
    missing = run("device", "setup", sshd.url(), "--backend", "tensorrt")
    if fingerprint["runtimes"]["tensorrt"] is None:  # no TensorRT here: the check says what to install
        assert missing.returncode == 1, missing.stderr
        assert "Traceback" not in missing.stderr and "tensorrt" in (missing.stdout + missing.stderr).lower()


@pytest.mark.slow
def test_esm_build_on_a_remote_device(http_agents, tmp_path, tiny):
    agent = http_agents()
    out = tmp_path / "predictor"
    result = run("build", "--space", tiny, "--input-size", "8", "--runs", "5", "--initial", "12", "--step",
                 "6", "--max-samples", "18", "--test-size", "10", "--bins", "3", "--acc-th", "0.999",
                 "--qc-every", "0", "--db", str(tmp_path / "m.db"), "--out", str(out), "--device", agent.url,
                 "--token-file", str(agent.token_file))
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "predictor.json").read_text())
    assert (out / "MODEL_CARD.md").is_file()
    assert len(rows(tmp_path / "m.db")) >= 22  # 12 + 6 training and 10 held-out architectures (some shared)
    assert info["measured_on"] == agent.url
    assert info["device"]["protocol"] == "esm" and info["device"]["backend"] == "onnxruntime"


# ------------------------------------------------------------------------------------------------ faults
def _wait_for_rows(db: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    n = con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
                if n >= count:
                    return n
            except sqlite3.Error:
                pass
        time.sleep(0.02)
    raise AssertionError(f"the campaign did not reach {count} stored models (exit {process.poll()})")


def _ssh_agent_pids(sshd) -> list[int]:
    pids = []
    for pid in sshd.session_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"serve-stdio" in cmdline:
            pids.append(pid)
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_agent_killed_mid_campaign_then_rerun_resumes(transport, sshd, http_agents, tmp_path, tiny):
    n = 10
    sample = sample_args(tiny, n, seed=5)
    slow = ["--runs", "400", "--warmup", "2", "--energy", "none", "--qc-every", "0"]
    db = tmp_path / "m.db"
    if transport == "http":
        agent = http_agents("first")
        device = ["--device", agent.url, "--token-file", str(agent.token_file)]
    else:
        device = ["--device", sshd.url()]
    process = subprocess.Popen([sys.executable, "-m", "nni_hwaware.cli", "measure", *sample, *slow, "--db", str(db),
                                "--json", "--quiet", *device], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        stored = _wait_for_rows(db, 2, process)
        if transport == "http":
            os.kill(agent.process.pid, signal.SIGKILL)
        else:
            pids = _ssh_agent_pids(sshd)
            assert pids, "no agent process found on the sshd side"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    line = one_error_line(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    assert "device" in line and ("stopped" in line if transport == "ssh" else "cannot reach" in line), line
    before = rows(db)
    assert stored <= len(before) < n
    if transport == "http":
        agent = http_agents("second")  # a new agent (another port) on the same device
        device = ["--device", agent.url, "--token-file", str(agent.token_file)]
    rerun = run("measure", *sample, *slow, "--db", str(db), "--json", "--quiet", *device)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(before) and summary["measured"] == n - len(before)
    after = rows(db)
    assert len(after) == n and len({r[0] for r in after}) == n  # nothing lost, nothing twice
    assert set(before) <= set(after)


@pytest.mark.slow
def test_pool_of_two_agents_shares_the_work(http_agents, tmp_path, tiny):
    a, b = http_agents("a"), http_agents("b")  # a pool reads one token: the devices of a farm share it
    db = tmp_path / "m.db"
    result = run("measure", *sample_args(tiny, 8, seed=2), *FAST,
                 "--db", str(db), "--json", "--quiet", "--device", a.url, "--device", b.url,
                 "--token-file", str(a.token_file))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["measured"] == 8 and summary["db_rows"] == 8
    assert set(summary["devices"]) == {a.url, b.url} and all(v > 0 for v in summary["devices"].values())
    stored = rows(db)
    assert len({r[1] for r in stored}) == 1  # one device key for the pool
    with MeasurementStore(db, readonly=True) as store:
        urls = {m.extra["device_url"] for _, m in store.measurements()}
    assert urls == {a.url, b.url}


def test_pool_of_different_devices_is_refused(http_agents, tmp_path, tiny):
    if not Path("/usr/bin/setarch").exists():
        pytest.skip("setarch (util-linux) is missing: no second kind of device to start")
    a = http_agents("a")
    b = http_agents("b", wrapper=("setarch", "linux32"))  # the same board reporting another machine
    line = one_error_line(run("measure", *sample_args(tiny), *FAST, "--db", str(tmp_path / "m.db"), "--device", a.url,
                              "--device", b.url, "--token-file", str(a.token_file)))
    assert "machine is 'i686'" in line and b.url in line
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_nn_meter_build_on_a_remote_device(http_agents, tmp_path):
    agent = http_agents()
    out = tmp_path / "nn-meter"
    result = run("nn-meter", "build", "--backend", "onnxruntime", "--out", str(out), "--kernels", "relu",
                 "--fusion-testcases", "conv_relu", "--init-samples", "5", "--iterations", "1",
                 "--finegrained-samples", "1", "--runs", "3", "--device", agent.url, "--token-file",
                 str(agent.token_file), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "build.json").read_text())
    assert [k["kernel"] for k in summary["kernels"]] == ["relu"] and (out / "predictor" / "relu.pkl").is_file()
    assert summary["device"]["backend"] == "onnxruntime" and summary["device"]["protocol"] == "esm"
    # every model was timed by the agent: its cache holds them
    assert len(list((agent.token_file.parent / "cache" / "models").iterdir())) >= 3  # conv_relu: 3 models


def test_nni_measuring_trial_on_a_remote_device(http_agents, tmp_path, tiny):
    agent = http_agents()
    done = subprocess.run(
        [sys.executable, "-m", "nni_hwaware.measure.nni_trial", "--space", tiny, "--n", "4", "--batches", "2",
         "--input-size", "8", "--runs", "10", "--energy", "none", "--device", agent.url, "--token-file",
         str(agent.token_file)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "NNI_OUTPUT_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "measurements.json").read_text())
    assert len(result["measurements"]) == 2 and result["device_description"]["protocol"] == "esm"
    assert all(m["extra"]["device_url"] == agent.url for m in result["measurements"])


@pytest.mark.slow
def test_pool_device_killed_keeps_what_the_others_measured(http_agents, tmp_path, tiny):
    n = 12
    a, b = http_agents("a"), http_agents("b")
    args = [*sample_args(tiny, n, seed=7), "--runs", "400", "--warmup", "2", "--energy", "none", "--qc-every", "0",
            "--json", "--quiet", "--token-file", str(a.token_file)]
    db = tmp_path / "m.db"
    process = subprocess.Popen([sys.executable, "-m", "nni_hwaware.cli", "measure", *args, "--db", str(db),
                                "--device", a.url, "--device", b.url], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(db, 2, process)
        os.kill(b.process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    line = one_error_line(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    assert b.url in line
    before = rows(db)
    assert 2 <= len(before) < n
    c = http_agents("c")
    rerun = run("measure", *args, "--db", str(db), "--device", a.url, "--device", c.url)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["measured"] == n - len(before)
    after = rows(db)
    assert len(after) == n and len({r[0] for r in after}) == n and set(before) <= set(after)


def test_jetson_dataset_protocol_on_a_remote_device(http_agents, tmp_path, tiny):
    agent = http_agents()
    db = tmp_path / "m.db"
    result = run("measure", *sample_args(tiny, 2), "--protocol", "jetson_dataset", "--protocol-seconds", "0.3",
                 "--warmup", "2", "--energy", "none", "--qc-every", "0", "--db", str(db), "--json", "--quiet",
                 "--device", agent.url, "--token-file", str(agent.token_file))
    assert result.returncode == 0, result.stderr[-2000:]
    with MeasurementStore(db, readonly=True) as store:
        measurements = [m for _, m in store.measurements()]
        description = store.device_description(measurements[0].device_key)
    assert description["protocol"] == "jetson_dataset" and len(measurements) == 2
    for m in measurements:  # back-to-back calls for 0.3 s: many runs, none dropped, the plain mean
        assert m.runs > 10 and m.trim == 0.0 and m.extra["protocol"]["name"] == "jetson_dataset"
        assert m.latency_ms > 0


def test_remote_energy_from_the_devices_tegrastats(http_agents, tmp_path, tiny):
    """A device with a meter (here a fake ``tegrastats`` replaying a real Jetson Nano log on the agent's PATH):
    ``--energy auto`` over HTTP stores the dataset protocol's GPU-rail energy per inference with its meter."""
    logs = sorted((REPO_ROOT.parent / "shared" / "data" / "jetson_nano" / "tegrastats_samples").glob("stats_*.txt"))
    if not logs:
        pytest.skip("the Jetson Nano tegrastats samples are not beside the repository")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tegrastats").symlink_to(Path(__file__).resolve().parent / "fake_tegrastats.py")
    agent = http_agents(env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                             "FAKE_TEGRASTATS_LOG": str(logs[0])})
    db = tmp_path / "m.db"
    result = run("measure", *sample_args(tiny, 1), "--protocol", "jetson_dataset", "--protocol-seconds", "0.5",
                 "--warmup", "2", "--energy", "auto", "--qc-every", "0", "--db", str(db), "--json", "--quiet",
                 "--device", agent.url, "--token-file", str(agent.token_file))
    assert result.returncode == 0, result.stderr[-2000:]
    with MeasurementStore(db, readonly=True) as store:
        [(_, m)] = store.measurements()
    assert m.energy_meter == "tegrastats" and m.energy_mj is not None and m.energy_mj > 0
    # the GPU rail of the replayed log (2.2-3 W on these models) over the inferences of the window
    assert 0.5 < m.power_w < 20
