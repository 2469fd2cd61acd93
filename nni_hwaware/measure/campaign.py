"""Measuring campaigns with quality control: reference models, drift checks, re-measurement, resumption.

A campaign measures a deterministic list of architectures (same arguments, same list) into the store. A few
fixed *reference architectures* of the space (balanced sample with a fixed seed) are measured at the start and
again every ``qc_every`` models. The first check of a campaign is its baseline; when the median relative
drift of the references from that baseline exceeds ``drift_threshold`` (3 %), the models measured since the
last good check are measured again and the check repeated (at most ``max_remeasure_rounds`` times; models
that still fail are kept with ``qc_status = 'drift'``). Models covered by a good check get ``qc_status='ok'``.

With ``window`` > 0 (the default, on a measurer that can interleave), the campaign measures in *windows*
instead: each window of ``window`` models is timed interleaved with the references
(:meth:`~nni_hwaware.measure.measurer.Measurer.measure_interleaved`), so drift hits all of them alike, and each
latency is divided by the window's reference factor (:mod:`nni_hwaware.measure.normalize`): the stored
``latency_ms`` is at the speed of the references' first measurement on this device (the baseline every campaign
on the device shares), and ``latency_raw_ms`` keeps the figure as timed. Every window is a check: its references
must move together since the previous check (the median leave-one-out gap of their latency ratios to that check
within ``drift_threshold``), so a shift of the load that hits models unevenly fails it, while a steady load, even
a heavy one, passes once it has been seen. A failing window is measured again (its figures go to the history)
and, if it still fails, kept with ``qc_status = 'drift'``, which no predictor trains on.

The campaign's id is a hash of what defines it, so running the same command again resumes it: stored models
are skipped, and the models of an interrupted run that no check covered yet are checked first.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nni_hwaware.errors import ParameterError
from nni_hwaware.measure.normalize import WindowNormalization
from nni_hwaware.measure.progress import Progress
from nni_hwaware.measure.runner import Measurer, ModelResult, measurer_model
from nni_hwaware.measure.store import Measurement, MeasurementStore, space_text, text_hash

logger = logging.getLogger(__name__)

REFERENCE_SEED = 20240101
DEFAULT_REFERENCES = 3
DEFAULT_DRIFT = 0.03
#: More reference models than this would spend more time checking than measuring.
MAX_REFERENCES = 20
#: Models timed interleaved with the references in one window (0: measure one model at a time).
DEFAULT_WINDOW = 10
#: Every model of a window is open at once; more would hold too many sessions in memory.
MAX_WINDOW = 100


def check_quality_control(qc_every: int, references: int, drift_threshold: float, window: int = 0) -> None:
    """Check the quality-control settings of a campaign; a one-line error names the parameter."""
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= MAX_WINDOW:
        raise ParameterError(f"window must be an integer from 0 (one model at a time) to {MAX_WINDOW}, got "
                             f"{window!r}", parameter="window")
    if isinstance(qc_every, bool) or not isinstance(qc_every, int) or qc_every < 0:
        raise ParameterError(f"qc_every must be an integer >= 0 (0 turns quality control off), got {qc_every!r}",
                             parameter="qc_every")
    if (isinstance(references, bool) or not isinstance(references, int)
            or not 1 <= references <= MAX_REFERENCES):
        raise ParameterError(f"references must be an integer from 1 to {MAX_REFERENCES}, got {references!r}",
                             parameter="references")
    if (isinstance(drift_threshold, bool) or not isinstance(drift_threshold, int | float)
            or not math.isfinite(drift_threshold) or drift_threshold <= 0):
        raise ParameterError(f"drift_threshold must be a positive finite number (relative: 0.03 is 3 %), got "
                             f"{drift_threshold!r}", parameter="drift_threshold")


def reference_architectures(space: Any, count: int = DEFAULT_REFERENCES) -> list[dict]:
    """The space's fixed reference architectures: a balanced sample with a fixed seed, one per depth bin."""
    from nni_hwaware.spaces import sample_architectures

    return sample_architectures(space, count, seed=REFERENCE_SEED, strategy="balanced", bins=max(count, 1))


@dataclass
class CampaignReport:
    """What a campaign did."""

    campaign: str
    total: int
    skipped: int = 0
    measured: int = 0
    remeasured: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    runs_done: int = 0
    runs_max: int = 0
    outliers: int = 0
    drift_flagged: int = 0

    @property
    def runs_saved(self) -> int:
        """Timed runs the adaptive mode did not need."""
        return self.runs_max - self.runs_done

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"campaign": self.campaign, "total": self.total, "skipped": self.skipped, "measured": self.measured,
                "remeasured": self.remeasured, "qc_checks": len(self.checks),
                "max_drift": max((c["drift"] for c in self.checks), default=None),
                "runs_done": self.runs_done, "runs_max": self.runs_max, "runs_saved": self.runs_saved,
                "outliers": self.outliers, "drift_flagged": self.drift_flagged}


class Campaign:
    """Measure a list of architectures of a space with quality control, resumably.

    Parameters
    ----------
    space
        The search space.
    archs
        The architectures to measure (e.g. from :func:`~nni_hwaware.spaces.sample_architectures`).
    measurer
        Backend + protocol + meter.
    store
        Where results go (one transaction per model).
    input_size
        Input resolution.
    definition
        What identifies the campaign (sampling arguments); hashed with the space, device and input size.
    qc_every
        Check the references every this many models (0: no quality control).
    references
        Number of reference architectures.
    drift_threshold
        Relative drift that fails a check (0.03 = 3 %).
    max_remeasure_rounds
        How many times models are re-measured after failed checks before they are kept as ``drift``.
    progress
        Progress line (or ``None``).
    window
        Models per interleaved, normalized window (0, no references, or a measurer that cannot interleave such
        as a remote device: one model at a time, checked every ``qc_every`` models).
    remeasure
        Measure every architecture, stored or not (the stored figures go to the history): the same models at
        another time, as a noise-floor study does.

    Examples
    --------
    >>> import os, tempfile
    >>> from nni_hwaware.measure.protocol import Protocol
    >>> from nni_hwaware.measure.runner import make_measurer
    >>> from nni_hwaware.spaces import load_space, sample_architectures
    >>> space = load_space("mobilenetv3")
    >>> measurer = make_measurer("onnxruntime", energy="none", protocol=Protocol(runs=10, warmup=2))
    >>> store = MeasurementStore(os.path.join(tempfile.mkdtemp(), "m.db"))
    >>> report = Campaign(space, sample_architectures(space, 4, seed=1), measurer, store, input_size=8,
    ...                   window=2, drift_threshold=10.0).run()  # 10 runs are too few for a 3 % check
    >>> report.measured, len(report.checks), store.measurements()[0][1].normalization["method"]
    (4, 3, 'reference-window')
    """

    def __init__(self, space: Any, archs: Sequence[dict], measurer: Measurer, store: MeasurementStore, *,
                 input_size: int, definition: dict[str, Any] | None = None, qc_every: int = 50,
                 references: int = DEFAULT_REFERENCES, drift_threshold: float = DEFAULT_DRIFT,
                 max_remeasure_rounds: int = 2, progress: Progress | None = None,
                 window: int = DEFAULT_WINDOW, remeasure: bool = False) -> None:
        check_quality_control(qc_every, references, drift_threshold, window)
        self.space = space
        self.archs = [space.validate(a) for a in archs]
        self.measurer = measurer
        self.store = store
        self.input_size = input_size
        self.qc_every = qc_every
        self.drift_threshold = drift_threshold
        self.max_remeasure_rounds = max_remeasure_rounds
        self.progress = progress
        self.remeasure = remeasure
        self.references = reference_architectures(space, references) if qc_every > 0 and references > 0 else []
        self._reference_models: dict[str, Any] = {}
        self._baseline: dict[str, float] = {}
        self.window = window if self.references and getattr(measurer, "interleaves", False) else 0
        self.definition = {
            **(definition or {}), "space": space.name, "space_hash": text_hash(space_text(space)),
            "input_size": input_size, "device": measurer.device_key, "backend": measurer.backend.name,
            "precision": measurer.backend.precision, **({"window": self.window} if self.window else {}),
        }
        self.id = "c" + text_hash(json.dumps(self.definition, sort_keys=True))
        self.report = CampaignReport(self.id, len(self.archs))

    # ---------------------------------------------------------------------------------------- running
    def run(self) -> CampaignReport:
        """Measure everything not yet stored, with QC checks; returns the report."""
        store, m = self.store, self.measurer
        store.start_campaign(self.id, {**self.definition, "qc_every": self.qc_every,
                                       "protocol": m.protocol.to_dict()})
        done = set() if self.remeasure else store.measured_hashes(
            self.space, m.device_key, m.backend.name, self.input_size, precision=m.backend.precision)
        todo = [a for a in self.archs if self.space.arch_hash(a) not in done]
        self.report.skipped = len(self.archs) - len(todo)
        if self.progress:
            self.progress.total = len(self.archs)
            self.progress.resume(self.report.skipped, note=f"{self.report.skipped} already stored"
                                 if self.report.skipped else "")
        pending = store.measurements(campaign=self.id, qc_status="unchecked")
        if self.window:
            self._run_windows([json.loads(m.arch_json) for _, m in pending], replace=True, new=False)
            self._run_windows(todo, replace=self.remeasure, new=True)
            store.finish_campaign(self.id)
            return self.report
        if self.references and (todo or pending):  # a finished campaign needs no new check
            self._check_and_fix()
        since_check = 0
        pool = getattr(m, "size", 1) if hasattr(m, "measure_many") else 1
        position = 0
        while position < len(todo):
            room = self.qc_every - since_check if self.references else pool
            batch = todo[position:position + max(1, min(pool, room))]
            position += len(batch)
            for measurement in self._measure_batch(batch):
                self.report.measured += 1
                since_check += 1
                if self.progress:
                    self.progress.update(self.report.skipped + self.report.measured, last_ms=measurement.latency_ms)
            if self.references and since_check >= self.qc_every:
                self._check_and_fix()
                since_check = 0
        if self.references and since_check:
            self._check_and_fix()
        store.finish_campaign(self.id)
        return self.report

    # ------------------------------------------------------------------------ interleaved, normalized windows
    def _run_windows(self, archs: list[dict], *, replace: bool, new: bool) -> None:
        """Measure ``archs`` window by window; ``replace``: they may be stored already, measure them again;
        ``new``: they count as measured by this run (not models of an interrupted run checked again)."""
        if archs and not self._device_baseline():
            self._measure_baseline()
        for start in range(0, len(archs), self.window):
            for measurement in self._measure_window(archs[start:start + self.window], replace=replace):
                if new:
                    self.report.measured += 1
                if self.progress:
                    self.progress.update(self.report.skipped + self.report.measured, last_ms=measurement.latency_ms)

    def _measure_window(self, archs: list[dict], *, replace: bool) -> list[Measurement]:
        """Time one window with the references, normalize it, store it; re-measure it while its check fails."""
        m = self.measurer
        models = [measurer_model(m, self.space, arch, self.input_size) for arch in archs]
        for round_ in range(self.max_remeasure_rounds + 1):
            results = m.measure_interleaved(models + self._reference_model_list())  # type: ignore[attr-defined]
            normalization, index, change = self._window_check(results[len(archs):], models_done=len(archs))
            ok = change <= self.drift_threshold
            last = ok or round_ == self.max_remeasure_rounds
            if not last:
                logger.info("QC: references moved apart by %.1f%% > %.0f%% since the last check; measuring the %d "
                            "model(s) of the window again", 100 * change, 100 * self.drift_threshold, len(archs))
            elif not ok:
                logger.warning("QC: window still drifts %.1f%% > %.0f%% after %d re-measurement round(s); %d "
                               "model(s) kept with qc_status=drift", 100 * change, 100 * self.drift_threshold,
                               round_, len(archs))
                self.report.drift_flagged += len(archs)
            stored = [self._record(arch, result, remeasure=replace or round_ > 0,
                                   normalization=(normalization, index), qc_status="ok" if ok else "drift",
                                   reason="qc drift" if round_ or not self.remeasure else "remeasured")
                      for arch, result in zip(archs, results)]
            if round_:
                self.report.remeasured += len(archs)
            if last:
                return stored
        raise AssertionError("unreachable")  # the last round returns

    def _reference_model_list(self) -> list[Any]:
        """The references' models, exported once per campaign."""
        m = self.measurer
        for arch in self.references:
            arch_hash = self.space.arch_hash(arch)
            if arch_hash not in self._reference_models:
                self._reference_models[arch_hash] = measurer_model(m, self.space, arch, self.input_size)
        return [self._reference_models[self.space.arch_hash(arch)] for arch in self.references]

    def _device_baseline(self) -> dict[str, float]:
        """The references' baseline on this device (every campaign on it shares one); ``{}`` before the first."""
        if self._baseline:  # the oldest check never changes once every reference has one: read it once
            return self._baseline
        m = self.measurer
        baseline = self.store.reference_baseline(self.space, m.device_key, m.backend.name, self.input_size,
                                                 precision=m.backend.precision)
        complete = all(self.space.arch_hash(arch) in baseline for arch in self.references)
        self._baseline = baseline if complete else {}
        return self._baseline

    def _measure_baseline(self) -> None:
        """The device's first check: the references timed interleaved on their own give the baseline."""
        results = self.measurer.measure_interleaved(self._reference_model_list())  # type: ignore[attr-defined]
        self._window_check(results, models_done=0)

    def _window_check(self, results: list[ModelResult], *,
                      models_done: int) -> tuple[WindowNormalization, int, float]:
        """Normalize a window by its references' results against the device's baseline, store the check, and
        return the normalization, the check's index and how far the references moved apart since the last check.
        """
        m, store = self.measurer, self.store
        latencies = {self.space.arch_hash(arch): r.timing.mean_ms for arch, r in zip(self.references, results)}
        baseline = self._device_baseline() or latencies  # the first check is the baseline
        normalization = WindowNormalization.from_references(latencies, baseline)
        previous = store.reference_baseline(self.space, m.device_key, m.backend.name, self.input_size,
                                            precision=m.backend.precision, latest=True)
        change = (WindowNormalization.from_references(latencies, previous).residual
                  if all(key in previous for key in latencies) else normalization.residual)
        ok = change <= self.drift_threshold
        rows = [{"arch_hash": self.space.arch_hash(arch), "arch_json": self.space.canonical_json(arch),
                 "latency_ms": r.timing.mean_ms, "latency_std_ms": r.timing.std_ms,
                 "baseline_ms": baseline[self.space.arch_hash(arch)],
                 "drift": abs(normalization.ratios[self.space.arch_hash(arch)] - 1), "ok": ok,
                 "factor": normalization.factor} for arch, r in zip(self.references, results)]
        index = store.next_check_index(self.id)
        store.add_qc_check(self.id, index, models_done, rows, space=self.space, device=m.device_description,
                           backend=m.backend.name, precision=m.backend.precision, input_size=self.input_size)
        self.report.checks.append({"index": index, "models_done": models_done, "drift": normalization.residual,
                                   "raw_drift": normalization.drift, "change": change,
                                   "factor": normalization.factor, "ok": ok})
        if self.progress:
            self.progress.update(drift=change)
        return normalization, index, change

    # ---------------------------------------------------------------------------- one model at a time
    def _measure_batch(self, archs: list[dict]) -> list[Measurement]:
        """Measure a batch: one model at a time, or all at once on a pool of devices (stored as each ends).

        Results are stored from this (the main) thread, one transaction per model, as they arrive; when a device
        fails, what the others finished is stored before the error goes up.
        """
        m = self.measurer
        if len(archs) == 1 or not hasattr(m, "measure_many"):
            return [self._measure(arch, remeasure=self.remeasure, reason="remeasured") for arch in archs]
        models = [measurer_model(m, self.space, arch, self.input_size) for arch in archs]
        return [self._record(archs[position], result, remeasure=self.remeasure, reason="remeasured")
                for position, result in m.measure_many(models)]  # type: ignore[attr-defined]

    def _measure(self, arch: dict, *, remeasure: bool = False, reason: str = "qc drift") -> Measurement:
        m = self.measurer
        result = m.measure(measurer_model(m, self.space, arch, self.input_size))
        return self._record(arch, result, remeasure=remeasure, reason=reason)

    def _record(self, arch: dict, result: ModelResult, *, remeasure: bool = False,
                normalization: tuple[WindowNormalization, int] | None = None,
                qc_status: str = "unchecked", reason: str = "qc drift") -> Measurement:
        m = self.measurer
        measurement = m.to_measurement(result, space=self.space.name, arch_hash=self.space.arch_hash(arch),
                                       arch_json=self.space.canonical_json(arch), input_size=self.input_size,
                                       campaign=self.id)
        measurement.qc_status = qc_status
        if normalization is not None:
            normalize_measurement(measurement, *normalization, references=len(self.references))
        self.store.add_measurement(measurement, space=self.space, device_description=m.device_description,
                                   replace=remeasure, reason=reason)
        self.report.runs_done += measurement.runs
        self.report.runs_max += max(m.protocol.runs, measurement.runs)
        self.report.outliers += int(measurement.outlier)
        return measurement

    # -------------------------------------------------------------------------------- quality control
    def check_references(self) -> tuple[bool, float]:
        """Measure the references once, store the check, and return ``(ok, median relative drift)``."""
        m, store = self.measurer, self.store
        baseline = store.qc_baseline(self.id)
        results = []
        for arch in self.references:
            arch_hash = self.space.arch_hash(arch)
            model = self._reference_models.get(arch_hash)
            if model is None:
                model = self._reference_models[arch_hash] = measurer_model(m, self.space, arch, self.input_size)
            timing = m.measure(model).timing
            base = baseline.get(arch_hash)
            drift = abs(timing.mean_ms / base - 1) if base else 0.0
            results.append({"arch_hash": arch_hash, "arch_json": self.space.canonical_json(arch),
                            "latency_ms": timing.mean_ms, "latency_std_ms": timing.std_ms,
                            "baseline_ms": base if base else timing.mean_ms, "drift": drift})
        drift = statistics.median(r["drift"] for r in results)
        ok = drift <= self.drift_threshold
        for r in results:
            r["ok"] = ok
        index = store.next_check_index(self.id)
        models_done = len(store.measured_hashes(self.space, m.device_key, m.backend.name, self.input_size,
                                                precision=m.backend.precision))
        store.add_qc_check(self.id, index, models_done, results, space=self.space, device=m.device_description,
                           backend=m.backend.name, precision=m.backend.precision, input_size=self.input_size)
        self.report.checks.append({"index": index, "models_done": models_done, "drift": drift, "ok": ok})
        if self.progress:
            self.progress.update(drift=drift)
        return ok, drift

    def _check_and_fix(self) -> None:
        """Check; on drift, measure the models since the last good check again, then check again."""
        for round_ in range(self.max_remeasure_rounds + 1):
            ok, drift = self.check_references()
            pending = self.store.measurements(campaign=self.id, qc_status="unchecked")
            if ok:
                self.store.set_qc_status([i for i, _ in pending], "ok")
                return
            if round_ == self.max_remeasure_rounds or not pending:
                logger.warning("QC: references drift %.1f%% > %.0f%% after %d re-measurement round(s); %d "
                               "model(s) kept with qc_status=drift", 100 * drift, 100 * self.drift_threshold,
                               round_, len(pending))
                self.store.set_qc_status([i for i, _ in pending], "drift")
                self.report.drift_flagged += len(pending)
                return
            logger.info("QC: references drift %.1f%% > %.0f%%; measuring %d model(s) again", 100 * drift,
                        100 * self.drift_threshold, len(pending))
            for _, measurement in pending:
                self._measure(json.loads(measurement.arch_json), remeasure=True)
                self.report.remeasured += 1


def normalize_measurement(measurement: Measurement, normalization: WindowNormalization, check_index: int, *,
                          references: int) -> None:
    """Express a measurement of a window at the baseline's speed, keeping the raw trimmed mean."""
    measurement.latency_raw_ms = measurement.latency_ms
    for name in ("latency_ms", "latency_std_ms", "latency_median_ms", "latency_min_ms", "ci_half_width_ms"):
        value = getattr(measurement, name)
        if value is not None:
            setattr(measurement, name, normalization.normalize(value))
    measurement.normalization = normalization.describe(check_index, references)
