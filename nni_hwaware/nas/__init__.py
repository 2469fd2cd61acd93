"""NNI 3.0 integration: surrogate profilers, hardware-constraint filters, the nnictl tuner and trial entry point.

* :mod:`~nni_hwaware.nas.hardware` loads a predictor folder (an ESM predictor of a space, or the Jetson Nano
  predictor through graph features) and estimates latency/energy of architectures with intervals.
* :mod:`~nni_hwaware.nas.profiler` wraps it as an ``nni.nas.profiler.Profiler``.
* :mod:`~nni_hwaware.nas.constraints` holds budgets and the ``nni.nas.strategy.middleware.Filter`` that keeps
  multi-trial strategies within them.
* :mod:`~nni_hwaware.nas.fallback` measures on the real target when the surrogate cannot decide.
* :mod:`~nni_hwaware.nas.tuner` and :mod:`~nni_hwaware.nas.trial` are the nnictl path;
  :mod:`~nni_hwaware.nas.accuracy` the offline accuracy estimates the trials report.
"""

from nni_hwaware.nas.constraints import Budget, HardwareFilter, Verdict
from nni_hwaware.nas.hardware import HardwareEstimate, HardwarePredictor, resolve_predictor_dir
from nni_hwaware.nas.profiler import SurrogateProfiler

__all__ = [
    "Budget",
    "HardwareEstimate",
    "HardwareFilter",
    "HardwarePredictor",
    "SurrogateProfiler",
    "Verdict",
    "resolve_predictor_dir",
]
