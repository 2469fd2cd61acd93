"""Run a hardware-aware nnictl experiment from its YAML file, wait for it and report what it found.

This is the main job (``./run.sh main`` runs ``experiments/quickstart.yml``) and ``nni-hwaware nas run``:

1. :func:`preflight` checks the config before NNI starts anything: the tuner's ``classArgs`` (types, ranges and
   keys; they state the space, predictor, input size and budget once, for the tuner and its trials), that the
   ``trialCommand`` parses and states none of them again, that the predictor exists and fits the space, that the
   search-space file is the space's ``nni-hpo`` export, and that some architectures can meet the budget (a
   budget nothing meets ends here with a clear message);
2. :func:`run_experiment` starts it with ``nnictl create`` on a free port and a working directory of its
   own, follows the trials through NNI's REST API (progress with ETA), and when the experiment is done
   writes ``results.json``, ``trials.csv`` and ``pareto.png`` and prints the best architectures within the
   budget. A successful experiment is left running for its web UI unless ``stop=True``; the report says how
   to stop it. An experiment that fails (ERROR, no trial succeeded, the tuner gave up), is interrupted, or
   meets any exception after ``nnictl create`` is stopped, and its processes are checked to be gone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nni_hwaware.artifacts import atomic_path, write_json_atomically, write_text_atomically
from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.progress import progress_bar
from nni_hwaware.nas.constraints import HARDWARE_KEY, HardwareSettings

logger = logging.getLogger(__name__)

TUNER_CLASS = "nni_hwaware.nas.tuner.HardwareAwareTuner"
TRIAL_MODULE = "nni_hwaware.nas.trial"
FINAL_STATES = ("DONE", "STOPPED", "ERROR")
#: States in which NNI starts no more trials: the trial budget is spent, or the tuner said it has no more.
NO_MORE_STATES = ("NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL")
TRIAL_FINAL_STATES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
MAX_SAMPLES = 10_000
_SHELL_OPERATORS = ("&&", "||", ";", "|", "&")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_config(path: str | Path) -> dict[str, Any]:
    """An experiment YAML as a dict (a mapping; :func:`preflight` and NNI's schema check the rest)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HwAwareError(f"experiment config {path} not found; pass an nnictl YAML such as experiments/quickstart.yml")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HwAwareError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise HwAwareError(f"{path} is not an nnictl experiment config (expected a mapping)")
    return config


def _resolve(config_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()


def _trial_tokens(command: Any) -> list[str] | None:
    """The arguments a trial command passes to our trial module, or ``None`` when it runs something else."""
    if not isinstance(command, str) or not command.strip():
        raise HwAwareError(f"trialCommand must be a command line such as `python3 -m {TRIAL_MODULE} --accuracy "
                           f"digits`, got {command!r}")
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        raise HwAwareError(f"trialCommand is not a valid command line ({exc}); check its quotes") from None
    starts = [i for i, t in enumerate(tokens) if t == TRIAL_MODULE or t.endswith("nni_hwaware/nas/trial.py")]
    if not starts:
        return None
    rest = tokens[starts[0] + 1:]
    ends = [i for i, t in enumerate(rest) if t in _SHELL_OPERATORS]
    return rest[:ends[0]] if ends else rest


def check_trial_command(config: Mapping[str, Any], settings: HardwareSettings | None = None) -> None:
    """Refuse a ``trialCommand`` that does not parse, or that states hardware settings the tuner states.

    The trial takes the space, predictor, input size and budget from the tuner (with its parameters), so
    ``--space``, ``--predictor``, ``--input-size``, ``--latency-budget-ms``, ``--energy-budget-mj``, ``--margin``
    and ``--trust-pickles`` belong in the tuner's ``classArgs`` only.
    """
    from nni_hwaware.nas.trial import (
        build_parser,
        check_trial_options,
        hardware_options_given,
        state_once_message,
    )

    tokens = _trial_tokens(config.get("trialCommand"))
    if tokens is None:  # not our trial: its options are not ours to judge
        return
    if "-h" in tokens or "--help" in tokens:
        raise HwAwareError("trialCommand asks the trial for --help; remove it")
    try:
        args = build_parser().parse_args(tokens)
        check_trial_options(args)
    except HwAwareError as exc:
        raise HwAwareError(f"trialCommand: {exc}") from None
    given = hardware_options_given(args)
    if given:
        raise HwAwareError(state_once_message(given))
    if settings is not None and settings.backend and args.fallback not in ("none", settings.backend):
        raise HwAwareError(f"trialCommand gives --fallback {args.fallback} and classArgs backend is "
                           f"{settings.backend}: state the backend once, in the tuner's classArgs (backend)")
    if args.params is not None:
        raise HwAwareError("trialCommand gives --params; under nnictl the tuner sends each trial its parameters")
    if args.nn_meter and settings is not None and not settings.trust_nn_meter_pickles:
        raise HwAwareError(f"trialCommand gives --nn-meter {args.nn_meter}, whose regressors are pickles (they run "
                           "code when loaded): set trust_nn_meter_pickles: true in the tuner's classArgs if you "
                           "built or trust that folder")


def _check_samples(samples: Any) -> None:
    if not (isinstance(samples, int) and not isinstance(samples, bool) and 1 <= samples <= MAX_SAMPLES):
        raise ParameterError(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}",
                             parameter="samples")


def _tuner_section(config: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any]:
    """The ``tuner`` mapping of a hardware-aware config and its ``classArgs``."""
    tuner = config.get("tuner")
    if not isinstance(tuner, Mapping) or tuner.get("className") != TUNER_CLASS:
        raise HwAwareError(f"the config's tuner is not {TUNER_CLASS} (tuner: className: {TUNER_CLASS}); "
                           "nothing hardware-aware to check")
    if tuner.get("classArgs") is None:
        raise HwAwareError("the tuner has no classArgs; they state the space, predictor and budget: see "
                           "experiments/quickstart.yml")
    return tuner, tuner["classArgs"]


def _predictor_source(predictor: str, tuner: Mapping[str, Any], config_dir: Path) -> str:
    """A relative predictor path as found from the tuner's code directory, else as given (see the tuner)."""
    if Path(predictor).expanduser().is_absolute() or not isinstance(tuner.get("codeDirectory"), str):
        return predictor
    candidate = _resolve(config_dir, tuner["codeDirectory"]) / predictor
    return str(candidate) if (candidate / "predictor.json").is_file() else predictor


def _check_search_space(config: Mapping[str, Any], config_dir: Path, space: Any) -> None:
    from nni_hwaware.spaces.nni_space import hpo_search_space

    fix = f"write it with `nni-hwaware spaces export {space.name} --format nni-hpo`"
    if "searchSpaceFile" in config:
        ss_path = _resolve(config_dir, str(config["searchSpaceFile"]))
        try:
            search_space = json.loads(ss_path.read_text())
        except (OSError, ValueError):
            raise HwAwareError(f"search space file {ss_path} is missing or not JSON; {fix}") from None
        if search_space != hpo_search_space(space):
            raise HwAwareError(f"{ss_path} is not the nnictl search space of {space.name!r}; re{fix}")
    elif "searchSpace" in config and config["searchSpace"] != hpo_search_space(space):
        raise HwAwareError(f"the config's searchSpace is not the nnictl search space of {space.name!r}; use "
                           f"searchSpaceFile and {fix}")


def _check_fallback_files(settings: HardwareSettings, source: str, predictor: Any) -> None:
    """Refuse a ``token_file`` that is missing or empty, found as the tuner will find it (relative paths
    against the folder a relative predictor path was found in, like ``refit_db``)."""
    from nni_hwaware.nas.hardware import sibling_path

    if settings.token_file is None:
        return
    path = sibling_path(source, predictor.folder, settings.token_file).resolve()
    try:
        empty = not path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise HwAwareError(f"classArgs token_file {path} cannot be read; write the HTTP agent's token there "
                           "(give an absolute path or ~/...)") from None
    if empty:
        raise HwAwareError(f"classArgs token_file {path} is empty; write the HTTP agent's token there")


def _feasibility(predictor: Any, budget: Any, samples: int, seed: int) -> float:
    """Share of ``samples`` random architectures within the budget; refuses a budget none of them meets."""
    from nni_hwaware.spaces import sample_architectures

    space = predictor.space
    estimates = predictor.estimate_many(sample_architectures(space, samples, seed=seed))
    passing = [e for e in estimates if budget.check(e).ok]
    if not passing:
        lowest = {m: min(e.value(m) for e in estimates) for m in budget.metrics}  # type: ignore[type-var]
        raise HwAwareError(
            f"no architecture among {samples} random ones of {space.name!r} meets the budget "
            f"{budget.to_dict()} (lowest predicted: "
            + ", ".join(f"{m} {v:.3g}" for m, v in lowest.items())
            + "); relax the budget or the margin")
    return len(passing) / len(estimates)


def preflight(config: dict[str, Any], config_dir: Path, *, samples: int = 100, seed: int = 0,
              trust_pickles: bool = False) -> dict[str, Any]:
    """Check a hardware-aware experiment config; returns what the search will work with.

    A config that trusts nn-Meter's pickles (``trust_nn_meter_pickles: true``) is checked only with
    ``trust_pickles=True`` (``--trust-pickles``): vetting a config must never run code a folder it names holds.

    Raises :class:`~nni_hwaware.errors.HwAwareError` with what to fix when the tuner's ``classArgs`` are of the
    wrong type or out of range, the trial command does not parse or states the hardware settings again, the
    predictor is missing or built for another space, the search-space file is not the space's export, or none
    of ``samples`` random architectures meets the budget.
    """
    from nni_hwaware.nas.hardware import as_hardware_predictor
    from nni_hwaware.nas.tuner import check_can_refit, check_class_args

    _check_samples(samples)
    tuner, class_args = _tuner_section(config)
    settings = check_class_args(class_args)
    if settings.trust_nn_meter_pickles and not trust_pickles:
        raise ParameterError("trust_pickles is off, and the config's classArgs trust nn-Meter pickles "
                             "(trust_nn_meter_pickles: true), which run code when loaded; check the folders it "
                             "names, then turn trust_pickles on to load them", parameter="trust_pickles",
                             mentions=("trust_pickles",))
    check_trial_command(config, settings)
    source = _predictor_source(settings.predictor, tuner, config_dir)
    predictor = as_hardware_predictor(source, settings.space, settings.input_size,
                                      trust_pickles=settings.trust_nn_meter_pickles)
    budget = settings.budget()
    budget.check_predictor(predictor)
    if class_args.get("refit_every"):
        check_can_refit(predictor, settings, "classArgs")
    _check_fallback_files(settings, source, predictor)
    _check_search_space(config, config_dir, predictor.space)
    return {"space": predictor.space.name, "input_size": predictor.input_size,
            "predictor": predictor.describe(), "budget": budget.to_dict(),
            "feasible_share": _feasibility(predictor, budget, samples, seed)}


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on the loopback interface, else a free port chosen by the OS."""
    if preferred:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rest(port: int, path: str, timeout: float = 10) -> Any:
    """GET ``/api/v1/nni/<path>`` of the experiment on ``port``."""
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=timeout) as response:
        return json.loads(response.read().decode())


def read_trials(port: int) -> list[dict[str, Any]]:
    """Every trial of a running experiment from NNI's REST API: id, status, parameters and final result.

    ``parameters`` are the architecture's; the hardware settings the tuner sent with them are left out.
    """
    from nni_hwaware.measure.nni_import import decode_metric

    out = []
    for job in rest(port, "trial-jobs"):
        params = decode_metric((job.get("hyperParameters") or ["{}"])[-1])
        finals = job.get("finalMetricData") or []
        result = decode_metric(finals[-1].get("data")) if finals else None
        params = params.get("parameters", params) if isinstance(params, dict) else params
        if isinstance(params, dict):
            params = {k: v for k, v in params.items() if k != HARDWARE_KEY}
        out.append({"trial": job.get("trialJobId"), "status": job.get("status"), "parameters": params,
                    "result": result if isinstance(result, dict) else (
                        {"default": result} if result is not None else None)})
    return out


def _nnictl() -> list[str]:
    bindir = os.path.dirname(sys.executable)
    exe = shutil.which("nnictl", path=bindir + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "nni.tools.nnictl.nnictl"]


def nnictl_env() -> dict[str, str]:
    """The environment for nnictl: this interpreter's bin first, so trials' ``python3`` is this one."""
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                PYTHONWARNINGS="ignore")


def experiment_processes(experiment_id: str) -> list[Any]:
    """This user's processes of an experiment (``psutil.Process``): NNI's manager, dispatcher and trials.

    The manager has ``--experiment-id ID`` on its command line; the dispatcher and the trials carry the id in
    their ``NNI_*`` environment (log directory, ``NNI_EXP_ID``).
    """
    import psutil

    found, uid = [], os.getuid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if experiment_id in " ".join(proc.info["cmdline"] or []) or any(
                    k.startswith("NNI_") and experiment_id in v for k, v in proc.environ().items()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_experiment(experiment_id: str, wait: float = 60) -> list[int]:
    """``nnictl stop ID``, then make sure the experiment's processes are gone; returns the pids left (none).

    NNI's manager shuts its dispatcher and trials down when it stops; whatever is still there after ``wait``
    seconds (e.g. a manager nnictl no longer knows) is terminated, then killed.
    """
    import psutil

    with contextlib.suppress(subprocess.TimeoutExpired):  # the processes are dealt with below
        subprocess.run([*_nnictl(), "stop", experiment_id], capture_output=True, env=nnictl_env(), timeout=120)
    deadline = time.monotonic() + wait
    left = experiment_processes(experiment_id)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = experiment_processes(experiment_id)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=10)
    return [p.pid for p in alive]


def pareto_front(rows: list[dict[str, Any]], keys: tuple[str, ...] = ("latency_ms", "energy_mj")) -> list[bool]:
    """Whether each row is Pareto-optimal: no other row is at least as accurate and no worse on every key."""
    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        ks = [k for k in keys if a.get(k) is not None and b.get(k) is not None]
        no_worse = a["accuracy"] >= b["accuracy"] and all(a[k] <= b[k] for k in ks)
        better = a["accuracy"] > b["accuracy"] or any(a[k] < b[k] for k in ks)
        return no_worse and better

    return [not any(dominates(o, r) for o in rows if o is not r) for r in rows]


def summarize(trials: list[dict[str, Any]], space_name: str) -> list[dict[str, Any]]:
    """One row per succeeded trial: architecture, accuracy, hardware numbers, their sources, Pareto flag."""
    from nni_hwaware.spaces import load_space
    from nni_hwaware.spaces.nni_space import hpo_params_to_arch

    space = load_space(space_name)
    rows = []
    for t in trials:
        r = t.get("result")
        if t["status"] != "SUCCEEDED" or not isinstance(r, dict) or "latency_ms" not in r:
            continue
        rows.append({"trial": t["trial"], "accuracy": float(r["default"]), "latency_ms": float(r["latency_ms"]),
                     "energy_mj": None if r.get("energy_mj") is None else float(r["energy_mj"]),
                     "source": r.get("latency_source", "surrogate"), "energy_source": r.get("energy_source"),
                     "within_budget": r.get("within_budget"), "in_distribution": r.get("in_distribution"),
                     **({"nn_meter_latency_ms": r["nn_meter_latency_ms"],
                         "nn_meter_within_budget": r.get("nn_meter_within_budget")}
                        if "nn_meter_latency_ms" in r else {}),
                     "arch": hpo_params_to_arch(space, t["parameters"])})
    for row, optimal in zip(rows, pareto_front(rows)):
        row["pareto"] = optimal
    return rows


def _table(rows: list[dict[str, Any]], top: int) -> str:
    nn_meter = any("nn_meter_latency_ms" in r for r in rows)
    lines = [f"{'trial':<8} {'accuracy':>8} {'latency ms':>11} {'energy mJ':>10} {'source':>9} {'in-dist':>7} "
             f"{'pareto':>6}  " + ("nn-Meter ms  " if nn_meter else "") + "architecture"]
    for r in sorted(rows, key=lambda r: -r["accuracy"])[:top]:
        energy = "-" if r["energy_mj"] is None else f"{r['energy_mj']:.2f}"
        arch = json.dumps(r["arch"], separators=(",", ":"))
        lines.append(f"{r['trial']:<8} {r['accuracy']:>8.4f} {r['latency_ms']:>11.3f} {energy:>10} "
                     f"{r['source']:>9} {'no' if r['in_distribution'] is False else 'yes':>7} "
                     f"{'yes' if r['pareto'] else '':>6}  "
                     + (f"{r.get('nn_meter_latency_ms', float('nan')):>11.3f}  " if nn_meter else "")
                     + f"{arch[:90] + ('...' if len(arch) > 90 else '')}")
    return "\n".join(lines)


def _dispatcher_error(experiment_dir: Path) -> str | None:
    """The last thing the tuner said was wrong: its last ``nni-hwaware:`` line, else the last error line."""
    log = experiment_dir / "log" / "dispatcher.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    ours = [line.split("nni-hwaware:", 1)[1].strip() for line in lines if "nni-hwaware:" in line]
    if ours:
        return ours[-1]
    errors = [line.strip() for line in lines if "Error" in line]
    return errors[-1] if errors else None


def _trial_error(experiment_dir: Path) -> str | None:
    """The last line a failed trial wrote to its stderr (NNI keeps ``trial.stderr`` per trial), if any."""
    for path in sorted(experiment_dir.glob("**/trial.stderr"), key=lambda p: p.stat().st_mtime, reverse=True):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"a trial said: {lines[-1]} ({path})"
    return None


def _check_run_options(port: Any, trials: Any, timeout: Any) -> None:
    """Refuse out-of-range options of :func:`run_experiment` before anything starts."""
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if port is not None and not (whole(port) and 1 <= port <= 65535):
        raise ParameterError(f"port must be a port number from 1 to 65535, got {port!r}", parameter="port")
    if trials is not None and not (whole(trials) and trials >= 1):
        raise ParameterError(f"trials must be at least 1, got {trials!r}", parameter="trials")
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isfinite(timeout)
            and timeout > 0):
        raise ParameterError(f"timeout must be a positive number of seconds, got {timeout!r}", parameter="timeout")


def _effective_config(config: dict[str, Any], config_path: Path, out: Path, trials: int | None) -> dict[str, Any]:
    """The config nnictl runs: paths made absolute, its own working directory, ``trials``; checked by NNI."""
    from nni.experiment.config import ExperimentConfig

    config = json.loads(json.dumps(config))  # a copy
    # NNI resolves relative paths against the config's folder; the effective config lives elsewhere
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config:
            config[key] = str(_resolve(config_path.parent, str(config[key])))
    tuner = config["tuner"]
    if tuner.get("codeDirectory"):
        tuner["codeDirectory"] = str(_resolve(config_path.parent, str(tuner["codeDirectory"])))
    config["experimentWorkingDirectory"] = str(out / "nni-experiments")
    if trials is not None:
        config["maxTrialNumber"] = trials
    try:
        ExperimentConfig(**config).validate()
    except Exception as exc:  # NNI raises ValueError/TypeError/AssertionError for a bad config
        raise HwAwareError(f"{config_path} is not a valid NNI experiment config: {str(exc).splitlines()[0]}") from None
    return config


def _output(log: Path) -> str:
    """A command's saved output without terminal colours."""
    return _ANSI.sub("", log.read_text(errors="replace")) if log.is_file() else ""


def _create(effective: Path, port: int) -> str:
    """``nnictl create``; the experiment id. A failed or interrupted start leaves nothing running."""
    log = effective.parent / "nnictl-create.log"  # read back also when interrupted, for the experiment id

    def announced() -> str | None:
        found = re.search(r"Experiment ID:\s*(\w+)", _output(log))
        return found.group(1) if found else None

    try:
        with log.open("w") as sink:
            created = subprocess.run([*_nnictl(), "create", "--config", str(effective), "--port", str(port)],
                                     stdout=sink, stderr=subprocess.STDOUT, env=nnictl_env(), timeout=180)
        if created.returncode != 0:
            tail = _output(log).strip().splitlines()[-1:] or ["no output"]
            raise HwAwareError(f"nnictl create failed: {tail[0]} (output: {log})")
        return str(rest(port, "experiment")["id"])
    except BaseException as exc:
        experiment_id = announced()
        if experiment_id:  # nnictl may have started NNI's manager before failing or being interrupted
            stop_experiment(experiment_id)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise HwAwareError(f"nnictl create did not finish in {exc.timeout:.0f} s (output: {log})") from None
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise HwAwareError(f"NNI's manager on port {port} did not answer after nnictl create ({exc})") from None
        raise


def _follow(port: int, wanted: int, timeout: float,
            show_progress: bool) -> tuple[str, list[str], list[dict[str, Any]], bool]:
    """Poll the experiment until it is over or ``timeout`` seconds pass, with a progress bar of the trials.

    Returns its last status, NNI's error messages, the trials, and whether the time ran out.
    """
    start = time.monotonic()
    status, errors, all_trials, timed_out = "RUNNING", [], [], True
    with progress_bar(wanted or None, "[nas] trials done", enabled=show_progress, unit="trial") as bar:
        while time.monotonic() - start < timeout:
            try:
                checked = rest(port, "check-status")
                status, errors = checked["status"], [str(e) for e in checked.get("errors") or []]
                all_trials = read_trials(port)
                sent = int(rest(port, "experiment").get("nextSequenceId") or 0) if status in NO_MORE_STATES else 0
            except (OSError, ValueError, KeyError) as exc:
                raise HwAwareError(f"lost NNI's manager on port {port} ({exc})") from None
            finished = [t for t in all_trials if t["status"] in TRIAL_FINAL_STATES]
            running = len(all_trials) - len(finished)
            _show_trials(bar, len(finished), running, [t["result"]["default"] for t in finished if t["result"]])
            if status in FINAL_STATES:
                timed_out = False
                break
            # no more trials (spent, or the tuner gave up: TUNER_NO_MORE_TRIAL) and none running or still queued
            # (nextSequenceId counts every trial the tuner sent, also those the manager has not started yet)
            if status in NO_MORE_STATES and running == 0 and sent <= len(all_trials):
                timed_out = False
                break
            time.sleep(2)
    return status, errors, all_trials, timed_out


def _show_trials(bar: Any, finished: int, running: int, accuracies: list[float]) -> None:
    """Advance the trials' progress bar; redraw it at once when a trial starts or ends (news)."""
    postfix = f"running {running}" + (f", best accuracy {max(accuracies):.4f}" if accuracies else "")
    news = postfix != getattr(bar, "postfix", None) or finished != bar.n  # a disabled bar has none
    bar.set_postfix_str(postfix, refresh=False)
    if finished != bar.n:
        bar.update(finished - bar.n)
    if news:
        bar.refresh()


def _outcome(status: str, errors: list[str], rows: list[dict[str, Any]], timed_out: bool, experiment_dir: Path,
             timeout: float) -> str | None:
    """What the report says about how the experiment ended (``None``: nothing to add)."""
    why = _dispatcher_error(experiment_dir) if status in ("ERROR", "TUNER_NO_MORE_TRIAL") else None
    if status == "ERROR":
        said = "; ".join(e.splitlines()[0] for e in errors if e.strip())
        return ("the experiment failed (NNI status ERROR): " + "; ".join(x for x in (said, why) if x)
                + f" (logs: {experiment_dir}/log)")
    if not rows:
        return (f"no trial succeeded (experiment {status}"
                + (f", waited {timeout:.0f} s" if timed_out else "") + "); "
                + (why or _trial_error(experiment_dir) or f"see the trial logs under {experiment_dir}"))
    if timed_out:
        return f"timed out after {timeout:.0f} s with the experiment {status}; the report holds what finished"
    if status == "TUNER_NO_MORE_TRIAL" and why:
        return f"the tuner stopped early: {why}"
    return None


def run_experiment(config_path: str | Path, *, out: str | Path = "runs/quickstart", port: int | None = None,
                   trials: int | None = None, stop: bool = False, timeout: float = 3600, top: int = 5,
                   progress: bool = True, trust_pickles: bool = False) -> dict[str, Any]:
    """Preflight, start, follow and report an nnictl experiment; returns the report written to results.json.

    Parameters
    ----------
    config_path
        The experiment YAML (relative paths in it are relative to its folder, as for nnictl).
    out
        Output folder: the effective config, NNI's working directory, results.json, trials.csv, pareto.png.
    port
        Web UI / REST port; default 8080 when free, else any free port.
    trials
        Override ``maxTrialNumber``.
    stop
        Stop the experiment when done (default: leave a successful one running for the web UI). One that
        fails, ends without a successful trial, or is interrupted is always stopped.
    timeout
        Seconds to wait for the experiment before reporting what finished so far.
    progress
        Show a progress bar of the trials on stderr (the messages go to this module's logger).
    trust_pickles
        Allow a config that trusts nn-Meter's pickles (see :func:`preflight`).
    """
    import yaml

    _check_run_options(port, trials, timeout)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out {out} is a file; pass a folder for the results and NNI's working directory",
                             parameter="out")
    config_path = Path(config_path).resolve()
    config = load_config(config_path)
    info = preflight(config, config_path.parent, trust_pickles=trust_pickles)
    effective_config = _effective_config(config, config_path, out, trials)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HwAwareError(f"cannot create the output folder {out} ({exc.strerror}); pass another out",
                           mentions=("out",)) from None
    effective = out / "experiment.yml"
    write_text_atomically(effective, yaml.safe_dump(effective_config, sort_keys=False))
    port = free_port(port or 8080)
    experiment_id = _create(effective, port)
    web_ui = f"http://localhost:{port}"
    logger.info("[nas] experiment %s started; web UI %s", experiment_id, web_ui)
    stopped = False
    try:
        wanted = int(effective_config.get("maxTrialNumber") or 0)
        with _terminate_as_interrupt():
            status, errors, all_trials, timed_out = _follow(port, wanted, timeout, progress)
        experiment_dir = out / "nni-experiments" / experiment_id
        rows = summarize(all_trials, info["space"])
        report = {
            "experiment_id": experiment_id, "status": status, "web_ui": web_ui, "config": str(config_path),
            "effective_config": str(effective), "experiment_dir": str(experiment_dir), "preflight": info,
            "trials": len(all_trials), "succeeded": len(rows),
            "failed": sum(t["status"] == "FAILED" for t in all_trials),
            "rows": rows,
        }
        message = _outcome(status, errors, rows, timed_out, experiment_dir, timeout)
        if message:
            report["message"] = message
        if stop or status == "ERROR" or not rows:
            if not stop:
                logger.info("[nas] stopping experiment %s: it ended without a result", experiment_id)
            report["stopped"] = True
            report["left_running"] = stop_experiment(experiment_id)
            stopped = True
        _write_outputs(out, report)
        return report
    except BaseException as exc:
        if not stopped:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            logger.info("[nas] %s; stopping experiment %s", what, experiment_id)
            stop_experiment(experiment_id)
        raise


@contextlib.contextmanager
def _terminate_as_interrupt() -> Any:
    """While following an experiment, SIGTERM (a service manager, a CI timeout) interrupts like Ctrl-C does,
    so the experiment is stopped rather than left running. Only the main thread can install handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_outputs(out: Path, report: dict[str, Any]) -> None:
    from nni_hwaware.plots import pareto_accuracy_latency

    rows = report["rows"]
    write_json_atomically(out / "results.json", report, indent=1)
    buffer = io.StringIO()
    fields = ["trial", "accuracy", "latency_ms", "energy_mj", "source", "energy_source", "within_budget",
              "in_distribution", "pareto", "arch"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r, arch=json.dumps(r["arch"], separators=(",", ":"))))
    write_text_atomically(out / "trials.csv", buffer.getvalue())
    if rows:
        budget = report["preflight"].get("budget") or {}
        with atomic_path(out / "pareto.png") as tmp:
            pareto_accuracy_latency(rows, tmp, latency_budget=budget.get("latency_ms"),
                                    energy_budget=budget.get("energy_mj"),
                                    title=f"{report['experiment_id']}: {report['preflight']['space']} "
                                          f"({report['preflight']['predictor']['kind']} predictor)")


def format_report(report: dict[str, Any], top: int = 5) -> str:
    """The human-readable summary of :func:`run_experiment`."""
    lines = [f"experiment {report['experiment_id']}: {report['status']}, {report['succeeded']} of "
             f"{report['trials']} trial(s) succeeded"]
    budget = report["preflight"].get("budget")
    if budget:
        lines.append(f"budget: {budget}; {100 * report['preflight']['feasible_share']:.0f} % of random "
                     "architectures meet it under the surrogate")
    if report["rows"]:
        within = [r for r in report["rows"] if r["within_budget"] is not False]
        lines += [f"best architectures within budget ({len(within)} of {len(report['rows'])}):",
                  _table(within, top)]
    ood = sum(r["in_distribution"] is False for r in report["rows"])
    if ood:
        lines.append(f"{ood} of {len(report['rows'])} trial(s) lie outside the predictor's training data "
                     "(in-dist: no): their hardware numbers are less certain; a trial with --fallback measures them")
    if report.get("message"):
        lines.append(report["message"])
    out = Path(report["effective_config"]).parent
    lines.append(f"results: {out / 'results.json'}, {out / 'trials.csv'}"
                 + (f", Pareto plot {out / 'pareto.png'}" if report["rows"] else ""))
    if report.get("stopped"):
        lines.append("experiment stopped.")
    else:
        lines.append(f"web UI: {report['web_ui']}  (stop it with: nnictl stop {report['experiment_id']})")
    return "\n".join(lines)
