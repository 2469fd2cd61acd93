"""The device agent (nni_hwaware/measure/agent.py): HTTP and stdio transports, uploads and refusals, measurement
serialisation, Python 3.6 compatibility, the tegrastats meter against the real Jetson Nano logs, TensorRT (GPU)."""

from __future__ import annotations

import base64
import contextlib
import csv
import glob
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nni_hwaware.measure import agent as agent_mod
from nni_hwaware.measure.agent import Agent, AgentError, TegrastatsMeter

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "nni_hwaware" / "measure" / "agent.py"
FAKE_TEGRASTATS = Path(__file__).resolve().parent / "fake_tegrastats.py"
NANO = REPO.parent / "shared" / "data" / "jetson_nano"
TOKEN = "s3cret-token-for-tests"
FAST_ESM = {"name": "esm", "runs": 20, "warmup": 2}


def tiny_onnx(channels: int = 8, size: int = 16, opset: int = 13, fp16: bool = False) -> bytes:
    """Conv 3x3 + ReLU + global average pool on a 1x3xSxS input: microseconds per inference. ``fp16``: the
    convolution computes in fp16 between two casts (what TensorRT 11, strongly typed, needs for fp16)."""
    rng = np.random.RandomState(0)
    dtype = np.float16 if fp16 else np.float32
    weight = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(dtype), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])
    first, last = ("x", "p") if not fp16 else ("xh", "ph")
    nodes = [helper.make_node("Conv", [first, "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], [last])]
    if fp16:
        nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16), *nodes,
                 helper.make_node("Cast", ["ph"], ["p"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("Identity", ["p"], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------- HTTP helpers
@contextlib.contextmanager
def serve_http(tmp: Path, *extra: str, token: str = TOKEN, python: str = sys.executable
               ) -> Iterator[tuple[subprocess.Popen, str, int]]:
    """Run ``agent.py serve-http`` on port 0; yields the process and the printed host and port."""
    tmp.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    log = tmp / "agent.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([python, str(AGENT), "serve-http", "--port", "0", "--token-file",
                                 str(token_file), "--cache", str(tmp / "cache"), *extra],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            match = re.search(r"listening on http://(\S+):(\d+)", log.read_text())
            if match:
                break
            if proc.poll() is not None:
                pytest.fail(f"the agent exited with {proc.returncode} before listening: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the agent did not print its address within 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc, match.group(1), int(match.group(2))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def call(port: int, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
         headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        sent = {} if token is None else {"Authorization": f"Bearer {token}"}
        sent.update(headers or {})
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def measure_http(port: int, model_sha: str, **fields) -> tuple[int, dict]:
    request = {"sha256": model_sha, "backend": "onnxruntime", "threads": 1, "protocol": FAST_ESM,
               "energy": {"meter": "none"}, **fields}
    return call(port, "POST", "/measure", json.dumps(request).encode())


@pytest.fixture(scope="module")
def http_agent(tmp_path_factory) -> Iterator[tuple[subprocess.Popen, str, int]]:
    with serve_http(tmp_path_factory.mktemp("http-agent"), "--max-upload-mb", "1") as served:
        yield served


@pytest.fixture(scope="module")
def uploaded(http_agent) -> str:
    model = tiny_onnx()
    status, reply = call(http_agent[2], "PUT", f"/models/{sha(model)}", model)
    assert status == 200 and reply == {"ok": True, "result": {"sha256": sha(model), "bytes": len(model)}}
    return sha(model)


# ------------------------------------------------------------------------------------------------ HTTP
def test_http_binds_loopback_by_default_and_serves_info(http_agent):
    _proc, host, port = http_agent
    assert host == "127.0.0.1"
    status, reply = call(port, "GET", "/info")
    assert status == 200 and reply["ok"]
    fingerprint = reply["result"]
    assert set(fingerprint) == {"agent_version", "python", "host", "machine", "os", "cpu", "cores", "board", "l4t",
                                "gpu", "cuda", "power_mode", "clocks_locked", "runtimes", "meters",
                                "max_onnx_opset"}
    assert fingerprint["agent_version"] == agent_mod.AGENT_VERSION
    assert fingerprint["runtimes"]["onnxruntime"] == __import__("onnxruntime").__version__
    assert fingerprint["max_onnx_opset"]["onnxruntime"] >= 13


def test_http_upload_then_measure_with_the_esm_protocol(http_agent, uploaded):
    port = http_agent[2]
    assert call(port, "GET", f"/models/{uploaded}") == (200, {"ok": True, "result": {"present": True}})
    assert call(port, "GET", f"/models/{'0' * 64}") == (200, {"ok": True, "result": {"present": False}})
    status, reply = measure_http(port, uploaded, protocol={"name": "esm", "runs": 30, "warmup": 3, "trim": 0.2})
    assert status == 200, reply
    result = reply["result"]
    samples = result["samples_ms"]
    assert len(samples) == 30 and result["runs"] == 30 and result["protocol"] == "esm"
    assert all(0 < s < 1000 for s in samples)
    middle = sorted(samples)[6:24]
    assert result["latency_ms"] == pytest.approx(sum(middle) / len(middle))
    assert result["build_time_s"] > 0 and result["engine_cached"] is False and result["energy"] is None
    assert result["started_at"] <= result["finished_at"] <= time.time()


def test_http_measure_with_the_jetson_dataset_protocol(http_agent):
    port = http_agent[2]
    model = tiny_onnx(channels=32, size=32)  # about 0.1 ms a call: all calls' samples come back
    assert call(port, "PUT", f"/models/{sha(model)}", model)[0] == 200
    status, reply = measure_http(port, sha(model), protocol={"name": "jetson_dataset", "seconds": 0.3, "warmup": 2})
    assert status == 200, reply
    result = reply["result"]
    assert result["protocol"] == "jetson_dataset" and result["runs"] == len(result["samples_ms"]) > 10
    assert result["latency_ms"] == pytest.approx(sum(result["samples_ms"]) / result["runs"])
    assert sum(result["samples_ms"]) / 1e3 <= result["finished_at"] - result["started_at"]


def test_http_bad_measure_requests_are_one_line_errors(http_agent, uploaded):
    port = http_agent[2]
    status, reply = measure_http(port, "a" * 64)
    assert status == 404 and "upload it first" in reply["error"]
    status, reply = measure_http(port, uploaded, protocol={"name": "fastest"})
    assert status == 400 and "unknown protocol" in reply["error"]
    status, reply = measure_http(port, uploaded, precision="fp16")
    assert status == 400 and "precision" in reply["error"]
    status, reply = call(port, "POST", "/measure", b"{not json")
    assert status == 400 and "not JSON" in reply["error"]
    status, reply = call(port, "GET", "/nothing")
    assert status == 404 and "/measure" in reply["error"]


def test_http_wrong_or_missing_token_is_401(http_agent, uploaded):
    port = http_agent[2]
    for token in (None, "wrong", ""):
        status, reply = call(port, "GET", "/info", token=token)
        assert status == 401 and reply["ok"] is False
        assert "token" in reply["error"] and "Authorization: Bearer" in reply["error"]
    status, reply = call(port, "GET", "/info", token=None, headers={"Authorization": TOKEN})  # no "Bearer "
    assert status == 401
    status, reply = call(port, "PUT", f"/models/{uploaded}", tiny_onnx(), token="wrong")
    assert status == 401


def test_http_oversized_upload_is_refused_before_the_body_is_read(http_agent):
    port = http_agent[2]
    body = b"\0" * (2 << 20)
    # headers only: the agent answers 413 without waiting for a single byte of the body
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("PUT", f"/models/{sha(body)}")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    response = conn.getresponse()
    reply = json.loads(response.read())
    conn.close()
    assert response.status == 413 and "limit of 1 MiB" in reply["error"] and "--max-upload-mb" in reply["error"]
    # a client that sends the whole body still gets the reply
    status, reply = call(port, "PUT", f"/models/{sha(body)}", body)
    assert status == 413
    assert call(port, "GET", f"/models/{sha(body)}")[1]["result"]["present"] is False


def test_http_non_onnx_sha_mismatch_and_missing_length_are_refused(http_agent):
    port = http_agent[2]
    junk = b"this is not an onnx model at all" * 10
    status, reply = call(port, "PUT", f"/models/{sha(junk)}", junk)
    assert status == 415 and "not an ONNX model" in reply["error"]
    model = tiny_onnx(channels=4)
    status, reply = call(port, "PUT", f"/models/{sha(model + b'x')}", model)
    assert status == 400 and "sha256" in reply["error"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("PUT", f"/models/{sha(model)}")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    conn.close()
    for bad in (model, junk):
        assert call(port, "GET", f"/models/{sha(bad)}")[1]["result"]["present"] is False


def test_two_clients_are_never_timed_concurrently(http_agent, uploaded):
    port = http_agent[2]
    results: list = []

    def client() -> None:
        results.append(measure_http(port, uploaded, protocol={"name": "esm", "runs": 300, "warmup": 5}))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    # uploads and info are not blocked by a running measurement
    assert call(port, "GET", "/info")[0] == 200
    for t in threads:
        t.join(120)
    assert [status for status, _ in results] == [200, 200]
    (a, b) = sorted((r["result"]["started_at"], r["result"]["finished_at"]) for _, r in results)
    assert a[0] < a[1] <= b[0] < b[1]


def test_serve_http_refuses_to_start_without_a_token(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    for token_file in (tmp_path / "missing", empty):
        proc = subprocess.run([sys.executable, str(AGENT), "serve-http", "--port", "0", "--token-file",
                               str(token_file)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(token_file) in lines[0]


def test_serve_http_stops_cleanly_on_sigterm(tmp_path):
    with serve_http(tmp_path) as (proc, _host, port):
        assert call(port, "GET", "/ping") == (200, {"ok": True, "result": {}})
        proc.terminate()
        assert proc.wait(timeout=30) == 0


# ----------------------------------------------------------------------------------------------- stdio
def _stdio_session(python: str, requests: list, cache: Path) -> tuple[dict, list[dict], int]:
    """Run ``agent.py serve-stdio``, send each request line, read each reply; the exit status at the end."""
    proc = subprocess.Popen([python, str(AGENT), "serve-stdio", "--cache", str(cache)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        hello = json.loads(proc.stdout.readline())
        replies = []
        for request in requests:
            proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
            proc.stdin.flush()
            replies.append(json.loads(proc.stdout.readline()))
        return hello, replies, proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_serve_stdio_speaks_json_lines_and_exits_on_shutdown(tmp_path):
    model = tiny_onnx()
    requests = [{"id": 1, "op": "ping"},
                {"id": 2, "op": "has_model", "sha256": sha(model)},
                {"id": 3, "op": "upload", "sha256": sha(model), "data_b64": base64.b64encode(model).decode()},
                {"id": 4, "op": "has_model", "sha256": sha(model)},
                {"id": 5, "op": "measure", "sha256": sha(model), "backend": "onnxruntime",
                 "protocol": {"name": "esm", "runs": 10, "warmup": 1}, "energy": {"meter": "none"}},
                {"id": 6, "op": "upload", "sha256": sha(b"junk"), "data_b64": base64.b64encode(b"junk").decode()},
                {"id": 7, "op": "teleport"},
                "{broken json",
                {"id": 8, "op": "shutdown"}]
    hello, replies, code = _stdio_session(sys.executable, requests, tmp_path / "cache")
    assert hello == {"agent": "nni-hwaware-device-agent", "version": 1, "python": sys.version.split()[0]}
    assert replies[0] == {"id": 1, "ok": True, "result": {}}
    assert replies[1]["result"] == {"present": False} and replies[3]["result"] == {"present": True}
    assert replies[2]["result"] == {"sha256": sha(model), "bytes": len(model)}
    assert replies[4]["ok"] and len(replies[4]["result"]["samples_ms"]) == 10 and replies[4]["result"]["latency_ms"] > 0
    assert replies[5]["ok"] is False and "not an ONNX model" in replies[5]["error"]
    assert replies[6]["ok"] is False and "unknown op" in replies[6]["error"]
    assert replies[7]["ok"] is False and replies[7]["id"] is None
    assert replies[8] == {"id": 8, "ok": True, "result": {}}
    assert code == 0
    assert (tmp_path / "cache" / "models" / f"{sha(model)}.onnx").read_bytes() == model


def _python36() -> str | None:
    """A working Python 3.6 interpreter (a pyenv shim that cannot run does not count)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    candidates += [p for p in [shutil.which("python3.6")] if p]
    for python in candidates:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                   text=True, timeout=30)
            if probe.returncode == 0 and probe.stdout.strip() == "(3, 6)":
                return python
    return None


def test_agent_source_needs_at_most_python_3_6():
    if importlib.util.find_spec("vermin") is None:
        pytest.skip("vermin is not installed (pip install -e '.[dev]')")
    script = Path(sys.executable).parent / "vermin"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import sys, vermin; "
                                                     "sys.exit(vermin.main())"]
    proc = subprocess.run([*command, "-t=3.6-", "--no-tips", "--violations", str(AGENT)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_agent_runs_on_a_real_python_3_6_when_one_is_here(tmp_path):
    python = _python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter here (vermin checks the syntax regardless)")
    model = tiny_onnx()
    hello, replies, code = _stdio_session(python, [
        {"id": 1, "op": "upload", "sha256": sha(model), "data_b64": base64.b64encode(model).decode()},
        {"id": 2, "op": "has_model", "sha256": sha(model)}, {"id": 3, "op": "info"}, {"id": 4, "op": "shutdown"},
    ], tmp_path / "cache")
    assert hello["python"].startswith("3.6.") and code == 0
    assert replies[1]["result"] == {"present": True} and replies[2]["result"]["python"].startswith("3.6.")
    with serve_http(tmp_path / "http", "--max-upload-mb", "1", python=python) as (proc, _host, port):
        status, reply = call(port, "GET", "/info")
        assert status == 200 and reply["result"]["python"].startswith("3.6.")
        assert call(port, "GET", "/info", token="wrong")[0] == 401
        assert call(port, "PUT", f"/models/{sha(model)}", model)[0] == 200
        assert call(port, "PUT", f"/models/{sha(b'junk')}", b"junk")[0] == 415
        proc.terminate()
        assert proc.wait(timeout=30) == 0


# ------------------------------------------------------------------------------------- pieces in-process
def test_onnx_wire_check_accepts_models_and_refuses_everything_else():
    model = tiny_onnx()
    assert agent_mod.is_onnx(model)
    assert not agent_mod.is_onnx(model[:-7])  # truncated
    assert not agent_mod.is_onnx(b"")
    assert not agent_mod.is_onnx(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert not agent_mod.is_onnx(np.random.RandomState(1).bytes(4096))
    assert not agent_mod.is_onnx(bytes([0x08, 0x07]))  # ir_version without a graph


def test_t_quantile_and_trimmed_stats_match_scipy_and_the_package():
    from scipy.stats import t

    from nni_hwaware.measure.protocol import trimmed_stats

    for confidence in (0.9, 0.95, 0.99):
        for dof in (1, 2, 3, 5, 10, 29, 100, 1000):
            assert agent_mod.t_quantile(confidence, dof) == pytest.approx(t.ppf(0.5 + confidence / 2, dof),
                                                                          rel=1e-8)
    samples = list(np.random.RandomState(0).lognormal(0, 0.3, 57))
    ours, theirs = agent_mod.trimmed_stats(samples, 0.2, 0.95), trimmed_stats(samples, 0.2, 0.95)
    assert ours["mean_ms"] == pytest.approx(theirs.mean_ms) and ours["kept"] == theirs.kept
    assert ours["ci_half_width_ms"] == pytest.approx(theirs.ci_half_width_ms, rel=1e-8)


def test_adaptive_esm_stops_early_on_steady_timings():
    protocol = agent_mod.parse_protocol({"name": "esm", "runs": 150, "warmup": 0, "adaptive": True,
                                         "ci_rel_width": 0.05, "min_runs": 20, "check_every": 5})
    values = iter(1.0 + 0.001 * (i % 3) for i in range(1000))
    assert len(agent_mod.run_esm(lambda: next(values), protocol)) == 20
    with pytest.raises(AgentError, match="min_runs"):
        agent_mod.parse_protocol({"name": "esm", "runs": 10, "adaptive": True, "min_runs": 20})


def test_info_and_check_commands():
    proc = subprocess.run([sys.executable, str(AGENT), "info"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["agent_version"] == 1
    proc = subprocess.run([sys.executable, str(AGENT), "check", "--backend", "onnxruntime"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "backend onnxruntime: usable" in proc.stdout
    lines, usable = agent_mod.check_runtime("tensorrt")
    if importlib.util.find_spec("tensorrt") is None:
        assert not usable and any("tensorrt: MISSING; install with:" in line for line in lines)


# ------------------------------------------------------------------------------------------- tegrastats
def _dataset_rows(names: set[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for path in sorted(NANO.glob("*/*.csv")):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row["Model Name"] in rows and row.get("GPU_energy_per_inference"):
                    rows[row["Model Name"]].append(row)
    return rows


def _logs_with_rows() -> list[tuple[Path, dict]]:
    samples = NANO / "tegrastats_samples"
    if not samples.is_dir():
        return []
    logs = {p.name[len("stats_"):-len("_mode0_60.txt")]: p for p in sorted(samples.glob("stats_*_mode0_60.txt"))}
    rows = _dataset_rows(set(logs))
    return [(logs[name], found[0]) for name, found in sorted(rows.items()) if found]


LOGS = _logs_with_rows()
# four logs: plain stacks, a mixed-kernel stack and a depthwise-separable one
CHOSEN = [item for item in LOGS if item[0].name in {
    "stats_convnet_L2_F512_K3x3_W45_mode0_60.txt", "stats_convnet_L5_F512_K4x4_W30_mode0_60.txt",
    "stats_convnet_L2_F128_K3x3_1_K7x7_1_W65_mode0_60.txt", "stats_convnet_L10_F256_K5x5_W20_DWS_mode0_60.txt"}]


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """``tegrastats`` on PATH replays the log given to the returned function."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tegrastats").symlink_to(FAKE_TEGRASTATS)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def use(log: Path) -> None:
        monkeypatch.setenv("FAKE_TEGRASTATS_LOG", str(log))

    return use


def test_rail_totals_of_every_real_log_are_the_datasets_totals():
    if not LOGS:
        pytest.skip(f"the Jetson Nano dataset is not beside the repository ({NANO})")
    assert len(LOGS) >= 10
    for log, row in LOGS:
        totals, count = agent_mod.tegrastats_rail_totals(log.read_text().splitlines(), 1.0)
        assert count == len(log.read_text().splitlines())
        for rail in ("POM_5V_GPU", "POM_5V_CPU"):
            assert totals[rail] == float(row[f"Total_{rail}"]), (log.name, rail)
        assert totals["POM_5V_GPU"] / float(row["num_inferences"]) == pytest.approx(
            float(row["GPU_energy_per_inference"]), rel=1e-9)


@pytest.mark.parametrize("log,row", CHOSEN, ids=[log.name[6:-14] for log, _ in CHOSEN])
def test_tegrastats_meter_on_replayed_logs_reproduces_the_datasets_gpu_energy(fake_tegrastats, log, row):
    fake_tegrastats(log)
    lines = log.read_text().splitlines()
    interval_ms = 5
    meter = TegrastatsMeter(interval_ms)
    meter.start()
    deadline = time.monotonic() + 30
    while meter.samples_seen < len(lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(10 * interval_ms / 1e3)  # a line too many would show up here
    reading = meter.stop()
    assert reading["samples"] == len(lines)
    gpu_total = reading["rails_mj"]["POM_5V_GPU"]
    assert gpu_total == pytest.approx(float(row["Total_POM_5V_GPU"]) * interval_ms / 1e3, rel=1e-12)
    per_inference = gpu_total / (interval_ms / 1e3) / float(row["num_inferences"])
    assert per_inference == pytest.approx(float(row["GPU_energy_per_inference"]), rel=1e-9)
    assert reading["duration_s"] == pytest.approx(len(lines) * interval_ms / 1e3)


def test_measure_with_tegrastats_energy_on_both_protocols(fake_tegrastats, tmp_path):
    if not CHOSEN:
        pytest.skip(f"the Jetson Nano dataset is not beside the repository ({NANO})")
    log, _row = CHOSEN[0]
    fake_tegrastats(log)
    mw = [rails["POM_5V_GPU"][0] for rails in map(agent_mod.parse_tegrastats_line, log.read_text().splitlines())]
    agent = Agent(str(tmp_path / "cache"))
    model = tiny_onnx()
    agent.store_model(sha(model), model)
    energy = {"meter": "tegrastats", "tegrastats_interval_ms": 20, "seconds": 0.4, "idle_seconds": 0.2}
    result = agent.measure({"sha256": sha(model), "protocol": {"name": "jetson_dataset", "seconds": 0.4},
                            "energy": energy})
    e = result["energy"]
    assert e["meter"] == "tegrastats" and e["rail"] == "POM_5V_GPU" and e["idle_power_w"] is None
    assert e["inferences"] == result["runs"] and 5 <= e["samples"] <= len(mw)
    assert e["rails_total_mj"]["POM_5V_GPU"] == pytest.approx(sum(mw[:e["samples"]]) * 0.02)
    assert e["energy_mj"] == pytest.approx(e["rails_total_mj"]["POM_5V_GPU"] / e["inferences"])
    assert min(mw) / 1e3 <= e["power_w"] <= max(mw) / 1e3
    result = agent.measure({"sha256": sha(model), "protocol": FAST_ESM, "energy": energy})
    e = result["energy"]
    assert e["rail"] == "POM_5V_IN" and e["idle_power_w"] > 0 and e["inferences"] > 0
    above = e["rails_total_mj"]["POM_5V_IN"] - e["idle_power_w"] * e["samples"] * 0.02 * 1e3
    assert e["energy_mj"] == pytest.approx(above / e["inferences"])
    assert not agent_mod._CHILDREN  # every tegrastats the meter started has ended


def test_tegrastats_parser_reads_orin_rails_and_the_meter_needs_tegrastats(monkeypatch, tmp_path):
    line = "RAM 2300/7620MB CPU [2%@729] VDD_GPU_SOC 2000mW/2000mW VDD_CPU_CV 400mW/410mW VIN_SYS_5V0 2800mW/2800mW"
    totals, count = agent_mod.tegrastats_rail_totals([line, line], 0.5)
    assert count == 2 and totals == {"VDD_GPU_SOC": 2000.0, "VDD_CPU_CV": 400.0, "VIN_SYS_5V0": 2800.0}
    assert agent_mod.pick_rail(totals, agent_mod.GPU_RAILS) == "VDD_GPU_SOC"
    # the fake itself: one line per interval, then it waits; SIGTERM ends it with status 0
    log = tmp_path / "log.txt"
    log.write_text(f"{line}\n{line}\n")
    fake = subprocess.Popen([sys.executable, str(FAKE_TEGRASTATS), "--interval", "10"], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "FAKE_TEGRASTATS_LOG": str(log)})
    assert [fake.stdout.readline(), fake.stdout.readline()] == [f"{line}\n"] * 2
    time.sleep(0.1)
    assert fake.poll() is None
    fake.terminate()
    assert fake.wait(timeout=10) == 0
    fake.stdout.close()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AgentError, match="tegrastats is not on PATH"):
        agent_mod.create_meter("tegrastats", "onnxruntime")


# ---------------------------------------------------------------------------------------------- TensorRT
def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


gpu = pytest.mark.skipif(not _tensorrt_importable(), reason="needs tensorrt (an NVIDIA GPU machine)")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_measure_builds_caches_and_releases_the_context(tmp_path, precision):
    model = tiny_onnx(channels=16, size=32, fp16=precision == "fp16")
    request = {"sha256": sha(model), "backend": "tensorrt", "precision": precision, "input_shape": [1, 3, 32, 32],
               "protocol": {"name": "esm", "runs": 30, "warmup": 5}, "energy": {"meter": "none"}}
    dataset = dict(request, protocol={"name": "jetson_dataset", "seconds": 0.5, "warmup": 5})
    _hello, replies, code = _stdio_session(sys.executable, [
        {"id": 1, "op": "upload", "sha256": sha(model), "data_b64": base64.b64encode(model).decode()},
        dict(request, id=2), dict(request, id=3), dict(dataset, id=4), {"id": 5, "op": "shutdown"},
    ], tmp_path / "cache")
    assert code == 0  # the CUDA context was popped and released: the process exits cleanly
    first, second, host = (replies[i] for i in (1, 2, 3))
    assert first["ok"] and second["ok"] and host["ok"], (first, second, host)
    assert first["result"]["engine_cached"] is False and second["result"]["engine_cached"] is True
    assert 0 < first["result"]["latency_ms"] < 100
    assert host["result"]["latency_ms"] >= 0.5 * first["result"]["latency_ms"]  # copies + sync on top
    engines = list((tmp_path / "cache" / "engines").glob(f"{sha(model)}-{precision}-trt*.engine"))
    assert len(engines) == 1


@pytest.mark.gpu
@gpu
def test_tensorrt_fp16_of_an_fp32_model_is_built_or_refused_in_one_line(tmp_path):
    import tensorrt as trt

    agent = Agent(str(tmp_path / "cache"))
    model = tiny_onnx()
    agent.store_model(sha(model), model)
    request = {"sha256": sha(model), "backend": "tensorrt", "precision": "fp16",
               "protocol": {"name": "esm", "runs": 10, "warmup": 2}}
    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT <= 10: the builder flag
        assert agent.measure(request)["latency_ms"] > 0
    else:  # TensorRT 11: strongly typed only
        with pytest.raises(AgentError, match="fp16 ONNX model"):
            agent.measure(request)


@pytest.mark.gpu
@gpu
def test_tensorrt_runner_in_process_with_the_api_this_version_has():
    import tensorrt as trt

    cuda = agent_mod.CudaApi.load(0)
    try:
        engine, dynamic = agent_mod.build_trt_engine(trt, tiny_onnx(), "fp32")
        assert not dynamic
        runner = agent_mod.TrtRunner(trt, cuda, engine)
        try:
            assert runner._named == hasattr(trt.ICudaEngine, "num_io_tensors")
            assert runner.time_compute() > 0 and runner.time_host_call() > 0
            runner.run_untimed(5)
        finally:
            runner.close()
    finally:
        cuda.close()


@pytest.mark.gpu
@gpu
def test_tensorrt_over_http_on_loopback(tmp_path):
    model = tiny_onnx(channels=16, size=32)
    with serve_http(tmp_path) as (_proc, _host, port):
        assert call(port, "PUT", f"/models/{sha(model)}", model)[0] == 200
        status, reply = measure_http(port, sha(model), backend="tensorrt", energy={"meter": "auto", "seconds": 1.0,
                                                                                 "idle_seconds": 1.0})
        assert status == 200, reply
        assert reply["result"]["latency_ms"] > 0
        energy = reply["result"]["energy"]
        assert energy is None or (energy["meter"] == "nvml" and energy["power_w"] > 0)


def _nvml_ready() -> bool:
    try:
        agent_mod.NvmlMeter(0).close()
    except AgentError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _nvml_ready(), reason="needs an NVIDIA GPU with an NVML energy counter")
def test_nvml_meter_reads_a_positive_energy():
    meter = agent_mod.NvmlMeter(0)
    try:
        meter.start()
        time.sleep(0.5)
        reading = meter.stop()
    finally:
        meter.close()
    assert reading["rails_mj"]["GPU"] > 0 and 1 < reading["rails_mj"]["GPU"] / 1e3 / reading["duration_s"] < 2000
