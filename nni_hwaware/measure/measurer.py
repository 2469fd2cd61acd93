"""One model timed on one backend with one protocol, and its energy metered: :class:`Measurer`.

The measuring core every path shares: :mod:`nni_hwaware.measure.runner` (architectures and ONNX files into the
store), :mod:`nni_hwaware.measure.campaign` (quality control) and :mod:`nni_hwaware.measure.remote` (the same
interface over a device agent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from nni_hwaware.errors import ParameterError
from nni_hwaware.measure.backends import Backend, ModelToMeasure, host_description
from nni_hwaware.measure.energy import EnergyMeter
from nni_hwaware.measure.protocol import Protocol, TimingResult, run_interleaved, run_protocol
from nni_hwaware.measure.store import Measurement, device_key

#: a measurement whose kept runs vary more than this (std / mean) is flagged as an outlier
DEFAULT_OUTLIER_CV = 0.10


@dataclass
class ModelResult:
    """Timing (and energy) of one model, before it becomes a stored :class:`Measurement`."""

    timing: TimingResult
    build_time_s: float
    energy_mj: float | None = None
    power_w: float | None = None
    idle_power_w: float | None = None
    energy_extra: dict[str, Any] | None = None


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number above 0, else a one-line error naming the parameter ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {value!r}", parameter=name)
    return float(value)


class Measurer:
    """Times models on one backend with one protocol, and meters their energy where possible.

    Parameters
    ----------
    backend
        The backend (see :func:`nni_hwaware.measure.backends.get_backend`).
    protocol
        Timing protocol.
    meter
        Energy meter or ``None`` (energy is then ``None``).
    energy_seconds
        Length of the energy window (inferences back to back); at least the meter's minimum.
    idle_seconds
        Length of the idle-power window, measured once when the first model is metered.
    outlier_cv
        Relative std above which a measurement is flagged as an outlier.

    Examples
    --------
    >>> from nni_hwaware.measure.backends import get_backend
    >>> measurer = Measurer(get_backend("onnxruntime"), Protocol(runs=20, warmup=2))
    >>> sorted(measurer.device_description)[:3]
    ['accelerator', 'backend', 'backend_version']
    """

    #: ONNX opset architectures are exported at for this measurer (``None``: the package's default)
    onnx_opset: int | None = None
    #: whether :meth:`measure_interleaved` can time several models at once here (a campaign's windows need it)
    interleaves: bool = True

    def __init__(self, backend: Backend, protocol: Protocol | None = None, meter: EnergyMeter | None = None, *,
                 energy_seconds: float = 2.0, idle_seconds: float = 2.0,
                 outlier_cv: float = DEFAULT_OUTLIER_CV) -> None:
        check_positive(energy_seconds, "energy_seconds")
        check_positive(idle_seconds, "idle_seconds")
        check_positive(outlier_cv, "outlier_cv")
        self.backend = backend
        self.protocol = protocol or Protocol()
        self.meter = meter
        self.energy_seconds = max(energy_seconds, meter.min_window_s if meter else 0.0)
        self.idle_seconds = max(idle_seconds, meter.min_window_s if meter else 0.0)
        self.outlier_cv = outlier_cv
        self.idle_power_w: float | None = None
        self.device_description = {**host_description(), **local_fingerprint(), **backend.describe(),
                                   "precision": backend.precision, "protocol": "esm"}
        self.device_key = device_key(self.device_description)

    def measure_idle(self) -> float:
        """Idle power in watts over ``idle_seconds`` (nothing running)."""
        assert self.meter is not None
        self.meter.start()
        time.sleep(self.idle_seconds)
        self.idle_power_w = self.meter.stop().power_w
        return self.idle_power_w

    def measure(self, model: ModelToMeasure) -> ModelResult:
        """Open the model, time it with the protocol, meter its energy, close it."""
        with self.backend.open(model) as session:
            return self._with_energy(session, run_protocol(session.run_once, self.protocol))

    def measure_interleaved(self, models: Sequence[ModelToMeasure]) -> list[ModelResult]:
        """Open every model, time them interleaved (:func:`~nni_hwaware.measure.protocol.run_interleaved`), then
        meter each one's energy; results in the order given.

        Every model of the window is open at once, so a window is as large as memory allows (tens of small
        models, not hundreds).
        """
        with ExitStack() as stack:
            sessions = [stack.enter_context(self.backend.open(model)) for model in models]
            timings = run_interleaved([s.run_once for s in sessions], self.protocol)
            return [self._with_energy(session, timing) for session, timing in zip(sessions, timings)]

    def _with_energy(self, session: Any, timing: TimingResult) -> ModelResult:
        """The result of a timed session, with its energy per inference where a meter exists."""
        result = ModelResult(timing=timing, build_time_s=session.build_time_s)
        if self.meter is None:
            return result
        if self.idle_power_w is None:
            self.measure_idle()
        chunk = max(1, int(0.05 / max(timing.mean_ms / 1e3, 1e-6)))
        count = 0
        self.meter.start()
        start = time.monotonic()
        while time.monotonic() - start < self.energy_seconds:
            session.run_untimed(chunk)
            count += chunk
        reading = self.meter.stop()
        idle = self.idle_power_w or 0.0
        dynamic_mj = reading.energy_mj - idle * 1e3 * reading.duration_s
        result.energy_mj = dynamic_mj / count
        result.power_w = reading.power_w
        result.idle_power_w = idle
        result.energy_extra = {
            "energy_inferences": count, "energy_window_s": reading.duration_s,
            "energy_total_per_inference_mj": reading.energy_mj / count,
            **({"rails_mj_per_inference": {k: v / count for k, v in reading.rails_mj.items()}}
               if reading.rails_mj else {}),
        }
        return result

    def to_measurement(self, result: ModelResult, *, space: str, arch_hash: str, arch_json: str, input_size: int,
                       campaign: str | None = None, extra: dict[str, Any] | None = None) -> Measurement:
        """Turn a result into a storable :class:`Measurement` recording the protocol and the configuration."""
        t = result.timing
        return Measurement(
            space=space, arch_hash=arch_hash, arch_json=arch_json, device_key=self.device_key,
            backend=self.backend.name, precision=self.backend.precision, input_size=input_size, batch_size=1,
            latency_ms=t.mean_ms, latency_std_ms=t.std_ms, latency_median_ms=t.median_ms, latency_min_ms=t.min_ms,
            ci_half_width_ms=t.ci_half_width_ms if t.ci_half_width_ms != float("inf") else None,
            runs=t.runs, warmup=self.protocol.warmup, trim=self.protocol.trim, adaptive=self.protocol.adaptive,
            threads=self.backend.threads, energy_mj=result.energy_mj, power_w=result.power_w,
            idle_power_w=result.idle_power_w, energy_meter=self.meter.name if self.meter else None,
            build_time_s=result.build_time_s, outlier=bool(t.cv > self.outlier_cv), campaign=campaign,
            extra={"protocol": self.protocol.to_dict(), "max_runs": self.protocol.runs, "cv": t.cv,
                   **(result.energy_extra or {}), **(extra or {})},
        )

    def close(self) -> None:
        """Release the meter."""
        if self.meter is not None:
            self.meter.close()


def local_fingerprint() -> dict[str, Any]:
    """This machine's comparable fingerprint fields the host description lacks (board, L4T, GPU, CUDA, power
    mode, clocks), collected the way the device agent collects them on a remote device."""
    from nni_hwaware.measure.agent import device_identity

    return device_identity()
