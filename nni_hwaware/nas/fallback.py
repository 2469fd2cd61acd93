"""The benchmark strategy's fallback: measure on the real target when the surrogate cannot decide.

A candidate is scored by the surrogate; when a constrained metric's 90 % interval straddles its effective
limit, or the architecture is out of the predictor's distribution, the candidate is measured for real on the
target (onnxruntime on this CPU; TensorRT with tegrastats/NVML on a Jetson or NVIDIA GPU) and the measured
value decides. Measurements go into the measurement store (a rerun reuses them; the store is what an ESM
predictor is rebuilt from). Estimates carry ``source`` / ``energy_source`` =
``"measured"`` when a measurement decided.

The target must be the predictor's device: each predictor's ``check_measurer`` refuses a measurer of another
device (an ESM predictor records the device it was built on; the Jetson Nano predictor needs ``tensorrt`` on
the board).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.constraints import Budget, Verdict
from nni_hwaware.nas.hardware import HardwareEstimate, HardwarePredictor
from nni_hwaware.spaces.schema import Architecture


class MeasuredFallback:
    """Measures undecided candidates on the target device, through the measurement store.

    Parameters
    ----------
    predictor
        The :class:`HardwarePredictor` whose undecided estimates are checked.
    db
        SQLite measurement store (created if missing).
    backend
        Measuring backend (``onnxruntime``, ``torch``, ``tensorrt``).
    runs, threads, energy
        Timing protocol runs, backend threads and energy meter (``auto`` / ``none`` / a meter name).
    check_device
        Refuse to measure on another device than the predictor's (default True).
    refit_every
        Refit an ESM surrogate on its build data plus every measurement of this target in the store after
        this many fallback measurements (0: never; :meth:`refit` does it on demand).

    Examples
    --------
    >>> fallback = MeasuredFallback(predictor, "runs/fallback.db", runs=30)   # doctest: +SKIP
    >>> verdict = fallback.decide(arch, budget.check(predictor.estimate(arch)), budget)  # doctest: +SKIP
    """

    def __init__(self, predictor: HardwarePredictor, db: str | Path, *, backend: str = "onnxruntime",
                 runs: int = 50, threads: int = 1, energy: str = "none", check_device: bool = True,
                 refit_every: int = 0) -> None:
        from nni_hwaware.measure.protocol import Protocol
        from nni_hwaware.measure.runner import make_measurer

        if refit_every and not predictor.refittable:
            raise HwAwareError(f"refit_every needs a predictor that learns from measurements (an ESM predictor); "
                               f"the {predictor.kind} predictor is rebuilt instead")
        self.predictor = predictor
        self.measurer = make_measurer(backend, threads=threads, protocol=Protocol(runs=runs), energy=energy)
        if check_device:
            try:
                predictor.check_measurer(self.measurer)
            except BaseException:
                self.measurer.close()
                raise
        self.db = Path(db)
        self.refit_every = refit_every
        self.measured: list[HardwareEstimate] = []
        self.refits: list[dict[str, Any]] = []

    def measure(self, arch: Architecture, estimate: HardwareEstimate) -> HardwareEstimate:
        """The estimate with measured latency (and energy when the device meters it)."""
        from nni_hwaware.measure.runner import measure_architectures
        from nni_hwaware.store import MeasurementStore

        self.db.parent.mkdir(parents=True, exist_ok=True)
        with MeasurementStore(self.db) as store:
            m = measure_architectures(self.predictor.space, [arch], self.measurer, store,
                                      input_size=self.predictor.input_size, campaign="nas-fallback")[0]
        changes: dict[str, Any] = {"latency_ms": float(m.latency_ms),
                                   "latency_interval": (float(m.latency_ms), float(m.latency_ms)),
                                   "source": "measured",
                                   "notes": [*estimate.notes,
                                             f"surrogate said {estimate.latency_ms:.3f} ms "
                                             f"[{estimate.latency_interval[0]:.3f}, {estimate.latency_interval[1]:.3f}]"]}
        if m.energy_mj is not None:
            changes.update(energy_mj=float(m.energy_mj), energy_interval=(float(m.energy_mj),) * 2,
                           energy_source="measured")
        measured = dataclasses.replace(estimate, **changes)
        self.measured.append(measured)
        if self.refit_every and len(self.measured) % self.refit_every == 0:
            self.refit()
        return measured

    def refit(self) -> dict[str, Any]:
        """Refit the ESM surrogate on its build data plus this target's measurements in the store.

        Every later estimate comes from the refitted surrogate; returns the refit record (measurements added,
        held-out accuracy before and after).
        """
        from nni_hwaware.store import MeasurementStore

        space = self.predictor.space
        with MeasurementStore(self.db) as store:
            rows = store.dataset(space=space, device=self.measurer.device_key, backend=self.measurer.backend.name,
                                 input_size=self.predictor.input_size, include_outliers=False)
        record = self.predictor.refit([json.loads(a) for a in rows["arch"]], rows["latency_ms"].to_numpy())
        self.refits.append(record)
        return record

    def decide(self, arch: Architecture, verdict: Verdict, budget: Budget) -> Verdict:
        """A verdict the measurement decides, when the surrogate's is undecided (else ``verdict`` itself)."""
        if verdict.decided:
            return verdict
        return budget.check(self.measure(arch, verdict.estimate))
