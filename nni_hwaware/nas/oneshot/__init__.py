"""One-shot hardware-aware NAS on NNI 3.0: supernets of the spaces, a differentiable hardware cost, SPOS +
evolution and differentiable searches (``nni-hwaware nas oneshot``).

* :mod:`~nni_hwaware.nas.oneshot.supernet`: :class:`HwSupernet`, NNI mutables derived from the space file;
* :mod:`~nni_hwaware.nas.oneshot.cost`: marginal per-choice costs, :class:`HardwareCostPenalty` for DARTS,
  GumbelDARTS and Proxyless, profilers and the hardware filter for supernet samples;
* :mod:`~nni_hwaware.nas.oneshot.search` and :mod:`~nni_hwaware.nas.oneshot.config`: the search and its config.

The names below are imported on first use (PEP 562), as in :mod:`nni_hwaware.nas`.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
