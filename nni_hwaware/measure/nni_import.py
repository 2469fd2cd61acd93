"""Collect the results of an nnictl measuring experiment (``experiments/measure.yml``) into a store.

Results are read from the experiment's own database (``<working dir>/<ID>/db/nni.sqlite``, final metrics),
which works for running and stopped experiments alike, or from the REST API of a running experiment
(``--port``). The working directory is looked up in NNI's experiment registry (``~/nni-experiments/.experiment``)
unless given. Each result carries its device description, so measurements from a farm of remote boards land
under their own devices. Importing twice adds nothing.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.nni_trial import RESULT_FORMAT
from nni_hwaware.measure.store import (
    Measurement,
    MeasurementStore,
    device_key,
    open_snapshot,
    space_text,
    text_hash,
)

NNI_HOME = Path.home() / "nni-experiments"


@dataclass
class ImportReport:
    """What an import did."""

    trials: int = 0
    imported: int = 0
    already_stored: int = 0


def find_experiment_dir(experiment_id: str, working_dir: str | Path | None = None) -> Path:
    """The folder of an experiment: ``working_dir/ID``, else from NNI's registry, else ``~/nni-experiments/ID``."""
    candidates = []
    if working_dir is not None and not Path(working_dir).is_dir():
        raise ParameterError(f"working_dir {working_dir} is not a folder", parameter="working_dir")
    if not experiment_id or "/" in experiment_id or experiment_id in (".", ".."):
        raise HwAwareError(f"{experiment_id!r} is not an NNI experiment id")
    if working_dir is not None:
        candidates.append(Path(working_dir) / experiment_id)
        candidates.append(Path(working_dir))
    registry = Path.home() / "nni-experiments" / ".experiment"
    try:
        entry = json.loads(registry.read_text()).get(experiment_id)
        if entry and entry.get("logDir"):
            candidates.append(Path(entry["logDir"]) / experiment_id)
    except (OSError, ValueError):
        pass
    candidates.append(NNI_HOME / experiment_id)
    for folder in candidates:
        if (folder / "db" / "nni.sqlite").is_file():
            return folder
    raise HwAwareError(f"no NNI experiment {experiment_id!r} found (looked in {', '.join(map(str, candidates))}); "
                       "give working_dir, or the port of the running experiment (read_results_from_rest)",
                       mentions=("working_dir", "port"))


def decode_metric(data: Any) -> Any:
    """NNI stores a final metric as JSON text, sometimes JSON-encoded twice."""
    for _ in range(3):
        if not isinstance(data, str):
            return data
        try:
            data = json.loads(data)
        except ValueError:
            return None
    return data


def read_results_from_dir(folder: Path) -> list[dict[str, Any]]:
    """Final results of every trial, from the experiment database (read-only)."""
    db = folder / "db" / "nni.sqlite"
    try:
        conn = open_snapshot(db)  # NNI may be writing it: read without leaving or changing a file
        try:
            rows = conn.execute("SELECT trialJobId, data FROM MetricData WHERE type='FINAL' "
                                "ORDER BY timestamp").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise HwAwareError(f"cannot read NNI experiment database {db}: {exc}") from None
    return [{"trial": trial, "result": decode_metric(data)} for trial, data in rows]


def read_results_from_rest(port: int, host: str = "localhost") -> list[dict[str, Any]]:
    """Final results of every trial, from a running experiment's REST API."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ParameterError(f"port must be a TCP port from 1 to 65535, got {port!r}", parameter="port")
    url = f"http://{host}:{port}/api/v1/nni/metric-data"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            rows = json.loads(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise HwAwareError(f"cannot read {url} ({exc}); is the experiment running on port {port}?") from None
    return [{"trial": r.get("trialJobId"), "result": decode_metric(r.get("data"))}
            for r in rows if r.get("type") == "FINAL"]


@dataclass
class TrialMeasurement:
    """One measurement of a trial's result, checked and ready to store."""

    space: Any
    measurement: Measurement
    device_description: dict[str, Any]


def parse_results(results: list[dict[str, Any]], experiment_id: str) -> tuple[int, list[TrialMeasurement]]:
    """Check every measuring trial's result before anything is stored.

    Returns
    -------
    tuple
        The number of measuring trials and their measurements. Results of other kinds of trials are skipped.

    Raises
    ------
    HwAwareError
        If a measuring trial's result is malformed or measured another version of its space.
    """
    from nni_hwaware.measure.store import space_fingerprint
    from nni_hwaware.spaces import load_space

    trials, out = 0, []
    spaces: dict[str, Any] = {}
    for item in results:
        result = item.get("result")
        if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
            continue  # a trial of another kind of experiment, or a failed one
        trials += 1
        where = f"the result of trial {item.get('trial')} of {experiment_id}"
        name, device, measurements = result.get("space"), result.get("device_description"), result.get("measurements")
        if not isinstance(name, str) or not isinstance(device, dict) or not isinstance(measurements, list):
            raise HwAwareError(f"{where} is malformed (needs space, device_description and measurements)")
        if name not in spaces:
            space = load_space(name)
            if "space_fingerprint" in result:  # trials of this version: compared by content
                same = space_fingerprint(space) == result["space_fingerprint"]
            else:
                same = text_hash(space_text(space)) == result.get("space_hash")
            if not same:
                raise HwAwareError(f"the trials measured a different version of space {name!r} than the space "
                                   "file here; import with the same nni-hwaware version as the trials")
            spaces[name] = space
        for data in measurements:
            try:
                m = Measurement.from_dict(data)
            except (TypeError, ValueError, AttributeError):
                raise HwAwareError(f"{where} holds a malformed measurement") from None
            if not isinstance(m.latency_ms, int | float) or not isinstance(m.extra, dict):
                raise HwAwareError(f"{where} holds a malformed measurement")
            if m.device_key != device_key(device):
                raise HwAwareError(f"{where} holds a measurement whose device key does not match its device")
            m.campaign = f"nni:{experiment_id}"
            m.extra = {**m.extra, "nni_trial": item.get("trial")}
            out.append(TrialMeasurement(spaces[name], m, device))
    return trials, out


def import_results(results: list[dict[str, Any]], store: MeasurementStore, experiment_id: str) -> ImportReport:
    """Store the measurements of the trials' final results (one transaction per measurement)."""
    trials, measurements = parse_results(results, experiment_id)
    return store_measurements(trials, measurements, store)


def store_measurements(trials: int, measurements: list[TrialMeasurement], store: MeasurementStore) -> ImportReport:
    """Store measurements checked by :func:`parse_results`; those already stored are counted, not changed."""
    report = ImportReport(trials=trials)
    for item in measurements:
        if store.add_measurement(item.measurement, space=item.space, device_description=item.device_description):
            report.imported += 1
        else:
            report.already_stored += 1
    return report
