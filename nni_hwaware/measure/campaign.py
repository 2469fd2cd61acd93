"""Measuring campaigns with quality control: reference models, drift checks, re-measurement, resumption.

A campaign measures a deterministic list of architectures (same arguments, same list) into the store. A few
fixed *reference architectures* of the space (balanced sample with a fixed seed) are measured at the start and
again every ``qc_every`` models. The first check of a campaign is its baseline; when the median relative
drift of the references from that baseline exceeds ``drift_threshold`` (3 %), the models measured since the
last good check are measured again and the check repeated (at most ``max_remeasure_rounds`` times; models
that still fail are kept with ``qc_status = 'drift'``). Models covered by a good check get ``qc_status='ok'``.

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
from nni_hwaware.measure.progress import Progress
from nni_hwaware.measure.runner import Measurer, ModelResult, measurer_model
from nni_hwaware.measure.store import Measurement, MeasurementStore, space_text, text_hash

logger = logging.getLogger(__name__)

REFERENCE_SEED = 20240101
DEFAULT_REFERENCES = 3
DEFAULT_DRIFT = 0.03
#: More reference models than this would spend more time checking than measuring.
MAX_REFERENCES = 20


def check_quality_control(qc_every: int, references: int, drift_threshold: float) -> None:
    """Check the quality-control settings of a campaign; a one-line error names the parameter."""
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
    """

    def __init__(self, space: Any, archs: Sequence[dict], measurer: Measurer, store: MeasurementStore, *,
                 input_size: int, definition: dict[str, Any] | None = None, qc_every: int = 50,
                 references: int = DEFAULT_REFERENCES, drift_threshold: float = DEFAULT_DRIFT,
                 max_remeasure_rounds: int = 2, progress: Progress | None = None) -> None:
        check_quality_control(qc_every, references, drift_threshold)
        self.space = space
        self.archs = [space.validate(a) for a in archs]
        self.measurer = measurer
        self.store = store
        self.input_size = input_size
        self.qc_every = qc_every
        self.drift_threshold = drift_threshold
        self.max_remeasure_rounds = max_remeasure_rounds
        self.progress = progress
        self.references = reference_architectures(space, references) if qc_every > 0 and references > 0 else []
        self._reference_models: dict[str, Any] = {}
        self.definition = {
            **(definition or {}), "space": space.name, "space_hash": text_hash(space_text(space)),
            "input_size": input_size, "device": measurer.device_key, "backend": measurer.backend.name,
            "precision": measurer.backend.precision,
        }
        self.id = "c" + text_hash(json.dumps(self.definition, sort_keys=True))
        self.report = CampaignReport(self.id, len(self.archs))

    # ---------------------------------------------------------------------------------------- running
    def run(self) -> CampaignReport:
        """Measure everything not yet stored, with QC checks; returns the report."""
        store, m = self.store, self.measurer
        store.start_campaign(self.id, {**self.definition, "qc_every": self.qc_every,
                                       "protocol": m.protocol.to_dict()})
        done = store.measured_hashes(self.space, m.device_key, m.backend.name, self.input_size,
                                     precision=m.backend.precision)
        todo = [a for a in self.archs if self.space.arch_hash(a) not in done]
        self.report.skipped = len(self.archs) - len(todo)
        if self.progress:
            self.progress.total = len(self.archs)
            self.progress.resume(self.report.skipped, note=f"{self.report.skipped} already stored"
                                 if self.report.skipped else "")
        pending = store.measurements(campaign=self.id, qc_status="unchecked")
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

    def _measure_batch(self, archs: list[dict]) -> list[Measurement]:
        """Measure a batch: one model at a time, or all at once on a pool of devices (stored as each ends).

        Results are stored from this (the main) thread, one transaction per model, as they arrive; when a device
        fails, what the others finished is stored before the error goes up.
        """
        m = self.measurer
        if len(archs) == 1 or not hasattr(m, "measure_many"):
            return [self._measure(arch) for arch in archs]
        models = [measurer_model(m, self.space, arch, self.input_size) for arch in archs]
        return [self._record(archs[position], result)
                for position, result in m.measure_many(models)]  # type: ignore[attr-defined]

    def _measure(self, arch: dict, *, remeasure: bool = False) -> Measurement:
        m = self.measurer
        result = m.measure(measurer_model(m, self.space, arch, self.input_size))
        return self._record(arch, result, remeasure=remeasure)

    def _record(self, arch: dict, result: ModelResult, *, remeasure: bool = False) -> Measurement:
        m = self.measurer
        measurement = m.to_measurement(result, space=self.space.name, arch_hash=self.space.arch_hash(arch),
                                       arch_json=self.space.canonical_json(arch), input_size=self.input_size,
                                       campaign=self.id)
        self.store.add_measurement(measurement, space=self.space, device_description=m.device_description,
                                   replace=remeasure, reason="qc drift")
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
