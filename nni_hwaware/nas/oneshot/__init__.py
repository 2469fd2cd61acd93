"""One-shot hardware-aware NAS on NNI 3.0: supernets of the spaces, a differentiable hardware cost, SPOS +
evolution and differentiable searches (``nni-hwaware nas oneshot``).

* :mod:`~nni_hwaware.nas.oneshot.supernet`: :class:`HwSupernet`, NNI mutables derived from the space file;
* :mod:`~nni_hwaware.nas.oneshot.cost`: marginal per-choice costs, :class:`HardwareCostPenalty` for DARTS,
  GumbelDARTS and Proxyless, profilers and the hardware filter for supernet samples;
* :mod:`~nni_hwaware.nas.oneshot.search` and :mod:`~nni_hwaware.nas.oneshot.config`: the search and its config.

The names below are imported on first use (PEP 562), as in :mod:`nni_hwaware.nas`.
"""

from __future__ import annotations

from nni_hwaware.lazy import lazy_exports

_EXPORTS = {
    "HwSupernet": "nni_hwaware.nas.oneshot.supernet",
    "MarginalCostTable": "nni_hwaware.nas.oneshot.cost",
    "HardwareCostPenalty": "nni_hwaware.nas.oneshot.cost",
    "SupernetProfiler": "nni_hwaware.nas.oneshot.cost",
    "SupernetHardwareFilter": "nni_hwaware.nas.oneshot.cost",
    "ExpectedCostProfiler": "nni_hwaware.nas.oneshot.cost",
    "run_oneshot": "nni_hwaware.nas.oneshot.search",
    "load_config": "nni_hwaware.nas.oneshot.config",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
