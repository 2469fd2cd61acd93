"""Real nnictl experiments: the main job (quickstart, on a loaded machine), local_cpu.yml with fallback
measurement, and experiments that fail, give up or are interrupted (stopped, nothing left running).

Each experiment gets a free port, a working directory and a HOME of its own (NNI's experiment registry lives
in ~/nni-experiments), so two runs never collide.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from test_nas_fallback import BUILD, local_cpu_config
from test_nas_startup import busy_cores

from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.nas.experiment import free_port, read_trials, rest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "experiments" / "quickstart.yml").read_text())


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore")


def _nnictl_stop(experiment_id: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", experiment_id], capture_output=True,
                   env=env, timeout=120)


def _processes_of(experiment_id: str) -> list[str]:
    """Command lines of this user's processes that belong to an experiment (manager, dispatcher, trials)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if experiment_id in cmdline or any(experiment_id in v for v in proc.environ().values()):
                found.append(cmdline)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _config(tmp_path: Path, command: str | None = None, **class_args) -> Path:
    """experiments/quickstart.yml with absolute paths and changed classArgs (``None`` removes a key)."""
    config = yaml.safe_load((REPO / "experiments" / "quickstart.yml").read_text())
    config.update(searchSpaceFile=str(REPO / "experiments" / config["searchSpaceFile"]), trialCodeDirectory=str(REPO))
    config["tuner"]["codeDirectory"] = str(REPO)
    if command is not None:
        config["trialCommand"] = command
    for key, value in class_args.items():
        if value is None:
            config["tuner"]["classArgs"].pop(key, None)
        else:
            config["tuner"]["classArgs"][key] = value
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _nas_run(tmp_path: Path, config: Path, *extra: str, timeout: float = 900,
             env: dict[str, str] | None = None) -> tuple[dict, str, float]:
    """``nni-hwaware nas run --json``: the report, stderr and the seconds it took."""
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config", str(config), "--out",
                          str(tmp_path / "run"), "--port", str(free_port()), "--json", *extra], cwd=REPO,
                         capture_output=True, text=True, env=env or _env(tmp_path), timeout=timeout)
    assert run.stdout.strip(), run.stderr[-3000:]
    return json.loads(run.stdout), run.stderr, time.monotonic() - began


@pytest.mark.slow
def test_main_job_runs_the_quickstart_and_leaves_the_web_ui_up(tmp_path):
    env, port, out = _env(tmp_path), free_port(), tmp_path / "quickstart"
    with busy_cores(2):  # NNI's manager gives the tuner 10 s to connect: it must, on a loaded machine too
        run = subprocess.run([sys.executable, "-m", "nni_hwaware.main", "--trials", "3", "--port", str(port),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
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
            assert "_hardware" not in t["parameters"]  # read_trials leaves the tuner's settings out
            assert 0 <= r["default"] <= 1 and r["accuracy_method"] == "digits"
            assert r["latency_ms"] <= limit_ms and r["energy_mj"] <= limit_mj and r["within_budget"] is True
            assert r["latency_source"] == "surrogate" and r["predictor"] == "jetson_nano"
        assert {t["trial"] for t in succeeded} == {r["trial"] for r in report["rows"]}
        assert (out / "pareto.png").stat().st_size > 0 and (out / "trials.csv").read_text().count("\n") == 4
    finally:
        _nnictl_stop(experiment_id, env)
    with pytest.raises(OSError):
        rest(port, "check-status", timeout=3)
    assert _processes_of(experiment_id) == []


@pytest.mark.slow
def test_nas_run_ends_promptly_when_the_tuner_gives_up(tmp_path):
    from nni_hwaware.nas import load_predictor
    from nni_hwaware.spaces import sample_architectures

    # a latency budget that 2 of nas check's 100 random architectures meet, and a tuner that gives up after 3
    # rejections in a row: NNI's status becomes TUNER_NO_MORE_TRIAL, which must end the command
    predictor = load_predictor("jetson_nano", "convnet")
    latencies = sorted(e.latency_ms for e in predictor.estimate_many(sample_architectures(predictor.space, 100,
                                                                                            seed=0)))
    config = _config(tmp_path, latency_budget_ms=round(latencies[1] * 1.0001, 6), energy_budget_mj=None, margin=0.0,
                     tuner="Random", tuner_args={"seed": 3}, patience=3)
    report, stderr, seconds = _nas_run(tmp_path, config, "--trials", "20", "--timeout", "900", "--stop")
    assert report["status"] == "TUNER_NO_MORE_TRIAL", stderr[-3000:]
    assert seconds < 300 and report["trials"] < 20, (seconds, report["trials"])
    # the reason, from the tuner's log, whether or not a trial got through first
    assert "3 candidates in a row exceeded the hardware budget" in report["message"]
    assert "relax the budget" in report["message"]
    assert report["stopped"] and _processes_of(report["experiment_id"]) == []


@pytest.mark.slow
def test_an_experiment_that_ends_in_error_is_stopped_and_leaves_nothing_running(tmp_path):
    # NNI's dispatcher (SDK_PROCESS=dispatcher) dies at start, like a tuner that cannot connect in time: NNI's
    # manager ends the experiment in ERROR and stays up; nas run must stop it
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text(
        "import os, sys\nif os.environ.get('SDK_PROCESS') == 'dispatcher':\n    sys.exit(3)\n")
    env = dict(_env(tmp_path), PYTHONPATH=os.pathsep.join(filter(None, [str(crash), os.environ.get("PYTHONPATH")])))
    report, stderr, _ = _nas_run(tmp_path, _config(tmp_path), "--trials", "2", "--timeout", "300", env=env)
    assert report["status"] == "ERROR" and report["stopped"] and report["left_running"] == [], stderr[-3000:]
    assert "did not connect" in report["message"], report["message"]
    assert _processes_of(report["experiment_id"]) == []
    with pytest.raises(OSError):
        rest(int(report["web_ui"].rsplit(":", 1)[1]), "check-status", timeout=3)


@pytest.mark.slow
def test_a_failing_tuner_or_failing_trials_end_the_experiment_and_it_is_stopped(tmp_path):
    # nas check cannot know which arguments NNI's TPE takes: the tuner fails while loading, after connecting,
    # logs why, and ends the search (NNI would leave it RUNNING if the tuner raised)
    config = _config(tmp_path, tuner_args={"optimize_mode": "maximize", "optimise_mode": "max"})
    report, stderr, seconds = _nas_run(tmp_path, config, "--trials", "2", "--timeout", "600")
    assert report["status"] == "TUNER_NO_MORE_TRIAL" and report["trials"] == 0, stderr[-3000:]
    assert "not accepted by NNI's TPE tuner" in report["message"] and "optimise_mode" in report["message"]
    assert report["stopped"] and report["left_running"] == [] and seconds < 300
    assert _processes_of(report["experiment_id"]) == []
    # trials that all fail: no result, so the experiment is stopped too
    failing = _config(tmp_path, command="python3 -c 'import sys; sys.exit(\"broken trial\")'")
    report, stderr, _ = _nas_run(tmp_path, failing, "--trials", "2", "--timeout", "600")
    assert report["succeeded"] == 0 and report["failed"] == 2 and report["stopped"], stderr[-3000:]
    assert "no trial succeeded" in report["message"] and "a trial said: broken trial" in report["message"]
    assert _processes_of(report["experiment_id"]) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_its_experiment(tmp_path, signum):
    config = _config(tmp_path)
    # a shell that runs this suite in the background ignores SIGINT for its children; Python then never turns
    # it into KeyboardInterrupt, so the command under test gets the default disposition back
    proc = subprocess.Popen([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config", str(config), "--out",
                             str(tmp_path / "run"), "--port", str(free_port()), "--trials", "3"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    experiment_id, left_behind = None, []
    try:
        for line in proc.stderr:  # "[nas] experiment ID started; web UI ..."
            if line.startswith("[nas] experiment "):
                experiment_id = line.split()[2]
                break
        assert experiment_id, proc.stderr.read()
        time.sleep(5)
        assert _processes_of(experiment_id)  # NNI's manager runs
        proc.send_signal(signum)
        _, rest_of_stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        left_behind = _processes_of(experiment_id) if experiment_id else []
        if left_behind:  # never leave an experiment running behind a failed test
            _nnictl_stop(experiment_id, _env(tmp_path))
    assert proc.returncode == 130, rest_of_stderr[-3000:]
    assert not left_behind, left_behind
    assert f"interrupted; stopping experiment {experiment_id}" in rest_of_stderr
    assert _processes_of(experiment_id) == []


@pytest.mark.slow
def test_local_cpu_experiment_measures_what_the_surrogate_cannot_decide(tmp_path, cli):
    from nni_hwaware.nas import load_predictor
    from nni_hwaware.spaces import sample_architectures

    db, pred = tmp_path / "m.db", tmp_path / "pred"
    built = cli(*BUILD, "--db", str(db), "--out", str(pred), timeout=600)
    assert built.returncode == 0, built.stderr
    predictor = load_predictor(pred, "mobilenetv3")
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
