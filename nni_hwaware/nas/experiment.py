"""Run a hardware-aware nnictl experiment from its YAML file, wait for it and report what it found.

This is the main job (``./run.sh main`` runs ``experiments/quickstart.yml``) and ``nni-hwaware nas run``:

1. :func:`preflight` checks the config before NNI starts anything: the predictor exists and fits the space,
   the tuner's and the trials' settings agree, the search-space file is the space's ``nni-hpo`` export, and
   some architectures can meet the budget (a budget nothing meets ends here with a clear message);
2. :func:`run_experiment` starts it with ``nnictl create`` on a free port and a working directory of its
   own, follows the trials through NNI's REST API (progress with ETA), and when the experiment is done
   writes ``results.json``, ``trials.csv`` and ``pareto.png`` and prints the best architectures within the
   budget. The experiment is left running for its web UI unless ``stop=True``; the report says how to stop it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError

TUNER_CLASS = "nni_hwaware.nas.tuner.HardwareAwareTuner"
FINAL_STATES = ("DONE", "STOPPED", "ERROR")
TRIAL_FINAL_STATES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


def load_config(path: str | Path) -> dict[str, Any]:
    """An experiment YAML as a dict, checked by NNI's own v2 config schema."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HwAwareError(f"experiment config {path} not found; pass an nnictl YAML such as experiments/quickstart.yml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HwAwareError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise HwAwareError(f"{path} is not an nnictl experiment config (expected a mapping)")
    return config


def _trial_options(command: str) -> dict[str, str]:
    """``--name value`` pairs of a trial command."""
    tokens = shlex.split(command)
    return {tokens[i][2:]: tokens[i + 1] for i in range(len(tokens) - 1)
            if tokens[i].startswith("--") and not tokens[i + 1].startswith("--")}


def _resolve(config_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()


def preflight(config: dict[str, Any], config_dir: Path, *, samples: int = 100, seed: int = 0) -> dict[str, Any]:
    """Check a hardware-aware experiment config; returns what the search will work with.

    Raises :class:`~nni_hwaware.errors.HwAwareError` with what to fix when the predictor is missing or built
    for another space, the trial command disagrees with the tuner, the search-space file is not the space's
    export, or none of ``samples`` random architectures meets the budget.
    """
    from nni_hwaware.nas.constraints import Budget
    from nni_hwaware.nas.hardware import as_hardware_predictor, nn_meter_folder
    from nni_hwaware.spaces import sample_architectures
    from nni_hwaware.spaces.nni_space import hpo_search_space

    tuner = config.get("tuner") or {}
    if tuner.get("className") != TUNER_CLASS:
        raise HwAwareError(f"the config's tuner is not {TUNER_CLASS}; nothing hardware-aware to check")
    args = dict(tuner.get("classArgs") or {})
    for key in ("space", "predictor"):
        if key not in args:
            raise HwAwareError(f"tuner classArgs lack {key!r}; see experiments/quickstart.yml")
    code_dir = _resolve(config_dir, str(config.get("trialCodeDirectory", ".")))
    predictor_arg = args["predictor"]
    # the tuner and the trials resolve relative predictor paths from the code directory
    if not Path(predictor_arg).is_absolute() and ((code_dir / predictor_arg / "predictor.json").is_file()
                                                  or nn_meter_folder(code_dir / predictor_arg) is not None):
        predictor_arg = str(code_dir / predictor_arg)
    predictor = as_hardware_predictor(predictor_arg, args["space"], args.get("input_size"))
    budget = None
    if args.get("latency_budget_ms") is not None or args.get("energy_budget_mj") is not None:
        budget = Budget(args.get("latency_budget_ms"), args.get("energy_budget_mj"), float(args.get("margin", 0.0)))
        budget.check_predictor(predictor)

    trial = _trial_options(str(config.get("trialCommand", "")))
    pairs = [("space", "space"), ("predictor", "predictor"), ("latency-budget-ms", "latency_budget_ms"),
             ("energy-budget-mj", "energy_budget_mj"), ("margin", "margin"), ("input-size", "input_size")]
    for option, key in pairs:
        if option not in trial or args.get(key) is None:
            continue
        given, expected = trial[option], args[key]
        try:
            same = str(given) == str(expected) if key in ("space", "predictor") else float(given) == float(expected)
        except ValueError:
            same = False
        if not same:
            raise HwAwareError(f"trialCommand has --{option} {given} but the tuner's classArgs have {key}: "
                               f"{expected}; keep them in step")

    space = predictor.space
    if "searchSpaceFile" in config:
        ss_path = _resolve(config_dir, str(config["searchSpaceFile"]))
        try:
            search_space = json.loads(ss_path.read_text())
        except (OSError, ValueError):
            raise HwAwareError(f"search space file {ss_path} is missing or not JSON; write it with "
                               f"`nni-hwaware spaces export {space.name} --format nni-hpo`") from None
        if search_space != hpo_search_space(space):
            raise HwAwareError(f"{ss_path} is not the nnictl search space of {space.name!r}; rewrite it with "
                               f"`nni-hwaware spaces export {space.name} --format nni-hpo`")

    info: dict[str, Any] = {"space": space.name, "input_size": predictor.input_size,
                            "predictor": predictor.describe(), "budget": budget.to_dict() if budget else None}
    if budget is not None:
        estimates = predictor.estimate_many(sample_architectures(space, samples, seed=seed))
        passing = [e for e in estimates if budget.check(e).ok]
        info["feasible_share"] = len(passing) / len(estimates)
        if not passing:
            lowest = {m: min(e.value(m) for e in estimates) for m in budget.metrics}  # type: ignore[type-var]
            raise HwAwareError(
                f"no architecture among {samples} random ones of {space.name!r} meets the budget "
                f"{budget.to_dict()} (lowest predicted: "
                + ", ".join(f"{m} {v:.3g}" for m, v in lowest.items())
                + "); relax the budget or the margin")
    return info


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free, else a free port chosen by the OS."""
    if preferred:
        with socket.socket() as sock:
            try:
                sock.bind(("", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def rest(port: int, path: str, timeout: float = 10) -> Any:
    """GET ``/api/v1/nni/<path>`` of the experiment on ``port``."""
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=timeout) as response:
        return json.loads(response.read().decode())


def read_trials(port: int) -> list[dict[str, Any]]:
    """Every trial of a running experiment from NNI's REST API: id, status, parameters and final result."""
    from nni_hwaware.measure.nni_import import decode_metric

    out = []
    for job in rest(port, "trial-jobs"):
        params = decode_metric((job.get("hyperParameters") or ["{}"])[-1])
        finals = job.get("finalMetricData") or []
        result = decode_metric(finals[-1].get("data")) if finals else None
        out.append({"trial": job.get("trialJobId"), "status": job.get("status"),
                    "parameters": params.get("parameters", params) if isinstance(params, dict) else params,
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


def stop_experiment(experiment_id: str) -> None:
    """``nnictl stop ID``."""
    subprocess.run([*_nnictl(), "stop", experiment_id], capture_output=True, env=nnictl_env(), timeout=120)


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
    log = experiment_dir / "log" / "dispatcher.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    ours = [line for line in lines if "nni-hwaware:" in line or "Error" in line]
    return ours[-1].split("nni-hwaware:", 1)[-1].strip() if ours else None


def run_experiment(config_path: str | Path, *, out: str | Path = "runs/quickstart", port: int | None = None,
                   trials: int | None = None, stop: bool = False, timeout: float = 3600, top: int = 5,
                   progress: bool = True) -> dict[str, Any]:
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
        Stop the experiment when done (default: leave it running for the web UI).
    timeout
        Seconds to wait for the experiment before reporting what finished so far.
    """
    from nni.experiment.config import ExperimentConfig

    config_path = Path(config_path).resolve()
    config = load_config(config_path)
    info = preflight(config, config_path.parent)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # NNI resolves relative paths against the config's folder; the effective config lives elsewhere
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config:
            config[key] = str(_resolve(config_path.parent, str(config[key])))
    tuner = config.get("tuner") or {}
    if tuner.get("codeDirectory"):
        tuner["codeDirectory"] = str(_resolve(config_path.parent, str(tuner["codeDirectory"])))
    config["experimentWorkingDirectory"] = str(out / "nni-experiments")
    if trials is not None:
        if trials < 1:
            raise HwAwareError(f"--trials must be at least 1, got {trials}")
        config["maxTrialNumber"] = trials
    try:
        ExperimentConfig(**config).validate()
    except Exception as exc:  # NNI raises ValueError/TypeError/AssertionError for a bad config
        raise HwAwareError(f"{config_path} is not a valid NNI experiment config: {str(exc).splitlines()[0]}") from None
    import yaml

    effective = out / "experiment.yml"
    effective.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port(port or 8080)
    created = subprocess.run([*_nnictl(), "create", "--config", str(effective), "--port", str(port)],
                             capture_output=True, text=True, env=nnictl_env(), timeout=180)
    if created.returncode != 0:
        tail = (created.stdout + created.stderr).strip().splitlines()[-1:] or ["no output"]
        raise HwAwareError(f"nnictl create failed: {tail[0]}")
    experiment_id = rest(port, "experiment")["id"]
    web_ui = f"http://localhost:{port}"
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"[nas] experiment {experiment_id} started; web UI {web_ui}")
    wanted = int(config.get("maxTrialNumber") or 0)
    start = time.monotonic()
    status, all_trials, last_line = "RUNNING", [], ""
    try:
        while time.monotonic() - start < timeout:
            status = rest(port, "check-status")["status"]
            all_trials = read_trials(port)
            finished = [t for t in all_trials if t["status"] in TRIAL_FINAL_STATES]
            running = len(all_trials) - len(finished)
            elapsed = time.monotonic() - start
            eta = f"{elapsed / len(finished) * (wanted - len(finished)):.0f} s" if finished and wanted else "?"
            accs = [t["result"]["default"] for t in finished if t["result"]]
            line = (f"[nas] trials done {len(finished)}/{wanted or '?'} (running {running}), "
                    f"best accuracy {max(accs):.4f}, " if accs else
                    f"[nas] trials done {len(finished)}/{wanted or '?'} (running {running}), ") + \
                f"elapsed {elapsed:.0f} s, ETA {eta}"
            if line != last_line:
                say(line)
                last_line = line
            if status in FINAL_STATES or (status == "NO_MORE_TRIAL" and running == 0):
                break
            time.sleep(2)
    except KeyboardInterrupt:
        say(f"[nas] interrupted; the experiment keeps running: nnictl stop {experiment_id}")
        raise
    experiment_dir = out / "nni-experiments" / experiment_id
    rows = summarize(all_trials, info["space"])
    report = {
        "experiment_id": experiment_id, "status": status, "web_ui": web_ui, "config": str(config_path),
        "effective_config": str(effective), "experiment_dir": str(experiment_dir), "preflight": info,
        "trials": len(all_trials), "succeeded": len(rows),
        "failed": sum(t["status"] == "FAILED" for t in all_trials),
        "rows": rows,
    }
    if not rows:
        why = _dispatcher_error(experiment_dir) if status != "RUNNING" else None
        report["message"] = (f"no trial succeeded (experiment {status}); "
                             + (why if why else f"see the trial logs under {experiment_dir}/trials"))
    _write_outputs(out, report)
    if stop:
        stop_experiment(experiment_id)
        report["stopped"] = True
    return report


def _write_outputs(out: Path, report: dict[str, Any]) -> None:
    from nni_hwaware.plots import pareto_accuracy_latency
    from nni_hwaware.spaces.export import write_atomically

    rows = report["rows"]
    write_atomically(out / "results.json", json.dumps(report, indent=1).encode())
    buffer = io.StringIO()
    fields = ["trial", "accuracy", "latency_ms", "energy_mj", "source", "energy_source", "within_budget",
              "in_distribution", "pareto", "arch"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r, arch=json.dumps(r["arch"], separators=(",", ":"))))
    write_atomically(out / "trials.csv", buffer.getvalue().encode())
    if rows:
        budget = report["preflight"].get("budget") or {}
        tmp = out / ".pareto.tmp.png"
        pareto_accuracy_latency(rows, tmp, latency_budget=budget.get("latency_ms"),
                                energy_budget=budget.get("energy_mj"),
                                title=f"{report['experiment_id']}: {report['preflight']['space']} "
                                      f"({report['preflight']['predictor']['kind']} predictor)")
        tmp.replace(out / "pareto.png")


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
