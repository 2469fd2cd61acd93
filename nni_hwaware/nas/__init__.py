"""NNI 3.0 integration: surrogate profilers, hardware-constraint filters, the nnictl tuner and trial entry point.

* :mod:`~nni_hwaware.nas.hardware` loads a predictor folder (an ESM predictor of a space, or the Jetson Nano
  predictor through graph features) and estimates latency/energy of architectures with intervals.
* :mod:`~nni_hwaware.nas.profiler` wraps it as an ``nni.nas.profiler.Profiler``.
* :mod:`~nni_hwaware.nas.constraints` holds budgets and the ``nni.nas.strategy.middleware.Filter`` that keeps
  multi-trial strategies within them.
* :mod:`~nni_hwaware.nas.fallback` measures on the real target when the surrogate cannot decide.
* :mod:`~nni_hwaware.nas.tuner` and :mod:`~nni_hwaware.nas.trial` are the nnictl path;
  :mod:`~nni_hwaware.nas.accuracy` the offline accuracy estimates the trials report.

The names below are imported on first use (PEP 562): NNI imports this package before it can start the tuner
(``nni_hwaware.nas.tuner``), and its manager gives the tuner 10 seconds to connect; importing torch and
``nni.nas`` here would spend most of them.
"""

from __future__ import annotations

from nni_hwaware.lazy import lazy_exports

_EXPORTS = {
    "Budget": "nni_hwaware.nas.constraints",
    "HardwareFilter": "nni_hwaware.nas.constraints",
    "HardwareSettings": "nni_hwaware.nas.constraints",
    "Verdict": "nni_hwaware.nas.constraints",
    "HardwareEstimate": "nni_hwaware.hardware",
    "HardwarePredictor": "nni_hwaware.hardware",
    "load_predictor": "nni_hwaware.hardware",
    "resolve_predictor_dir": "nni_hwaware.hardware",
    "SurrogateProfiler": "nni_hwaware.nas.profiler",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
