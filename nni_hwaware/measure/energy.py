"""Energy meters: tegrastats on Jetson boards, NVML energy counters on NVIDIA GPUs, RAPL on Linux CPUs.

Every meter measures the energy of a time window (:meth:`EnergyMeter.start` / :meth:`EnergyMeter.stop`, in mJ).
The measuring code (:class:`nni_hwaware.measure.runner.Measurer`) runs inferences back to back through such a
window, measures the idle power the same way, and reports the energy per inference above idle. Where no meter
exists the energy is ``None``: it is never estimated or invented.

The meters themselves live in the device agent (:mod:`nni_hwaware.measure.agent`), which runs them on remote
boards too; this module gives them the package's interface (:class:`EnergyReading`, one-line
:class:`~nni_hwaware.errors.HwAwareError` messages), so a local and a remote measurement meter the same way.

* **tegrastats** prints one line per interval with the rails' instantaneous/average power: ``POM_5V_GPU
  4307/4307`` on Nano/TX boards, ``VDD_GPU_SOC 2000mW/2000mW`` on Xavier/Orin. The instantaneous values are
  integrated over the samples of the window.
* **NVML**: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was loaded, Volta and newer).
* **RAPL**: ``/sys/class/powercap/intel-rapl:N/energy_uj`` of every package, with wrap-around at
  ``max_energy_range_uj``; usually readable by root only.
"""

from __future__ import annotations

import contextlib
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure import agent
from nni_hwaware.measure.agent import GPU_RAILS, METERS, TOTAL_RAILS, parse_tegrastats_line, pick_rail

__all__ = ["CPU_RAILS", "GPU_RAILS", "METERS", "TOTAL_RAILS", "EnergyMeter", "EnergyReading", "NvmlMeter",
           "RaplMeter", "TegrastatsMeter", "create_meter", "integrate_samples", "parse_tegrastats",
           "parse_tegrastats_line", "pick_rail"]

CPU_RAILS = ("POM_5V_CPU", "VDD_CPU_CV", "VDD_CPU", "CPU")


def parse_tegrastats(lines: Iterable[str]) -> list[dict[str, float]]:
    """Instantaneous rail powers (mW) of every line that reports at least one rail.

    Examples
    --------
    >>> parse_tegrastats(["RAM 1708/3964MB POM_5V_IN 7193/7193 POM_5V_GPU 4307/4307", "no rails here"])
    [{'POM_5V_IN': 7193.0, 'POM_5V_GPU': 4307.0}]
    """
    out = []
    for line in lines:
        rails = parse_tegrastats_line(line)
        if rails:
            out.append({name: cur for name, (cur, _avg) in rails.items()})
    return out


def integrate_samples(samples: list[dict[str, float]], interval_s: float) -> dict[str, float]:
    """Energy per rail in mJ: each sample's power held for one interval (how tegrastats samples).

    Examples
    --------
    >>> integrate_samples([{"POM_5V_GPU": 4000.0}, {"POM_5V_GPU": 2000.0}], 1.0)
    {'POM_5V_GPU': 6000.0}
    """
    total: dict[str, float] = {}
    for sample in samples:
        for rail, mw in sample.items():
            total[rail] = total.get(rail, 0.0) + mw * interval_s
    return total


@dataclass
class EnergyReading:
    """Energy over one window.

    Parameters
    ----------
    energy_mj
        Energy of the main rail/counter in mJ.
    duration_s
        Length of the window.
    rails_mj
        Energy of every rail the meter reports (tegrastats), in mJ.
    """

    energy_mj: float
    duration_s: float
    rails_mj: dict[str, float] = field(default_factory=dict)

    @property
    def power_w(self) -> float:
        """Mean power over the window in watts."""
        return self.energy_mj / 1e3 / self.duration_s if self.duration_s > 0 else 0.0


class EnergyMeter(ABC):
    """Measures the energy of a time window."""

    name: str = ""
    #: a window shorter than this cannot be measured meaningfully (sampling interval, counter refresh)
    min_window_s: float = 1.0

    @abstractmethod
    def start(self) -> None:
        """Open a window."""

    @abstractmethod
    def stop(self) -> EnergyReading:
        """Close the window and return its energy."""

    def close(self) -> None:  # noqa: B027 - most meters hold nothing
        """Release the meter."""

    def describe(self) -> dict[str, Any]:
        """Recorded with every measurement."""
        return {"meter": self.name}


# ------------------------------------------------------------------------------------------- meters
class _AgentMeter(EnergyMeter):
    """An :class:`EnergyMeter` over one of the device agent's meters (their ``stop`` gives rails in mJ)."""

    def __init__(self, meter: Any, rail: str | None = None) -> None:
        self._meter = meter
        self.rail = rail

    def start(self) -> None:
        with _agent_errors():
            self._meter.start()

    def stop(self) -> EnergyReading:
        with _agent_errors():
            window = self._meter.stop()
        rails = window["rails_mj"]
        rail = self.rail or pick_rail(rails, TOTAL_RAILS) or next(iter(rails), None)
        if rail is None or rail not in rails:
            raise HwAwareError(f"the {self.name} meter reports no rail {self.rail!r}; it has {sorted(rails)}")
        return EnergyReading(rails[rail], max(float(window["duration_s"]), 1e-9), dict(rails))

    def close(self) -> None:
        self._meter.close()


class TegrastatsMeter(_AgentMeter):
    """tegrastats on a Jetson board, started for each window.

    Parameters
    ----------
    rail
        Rail whose energy is reported as ``energy_mj`` (default: the board's total input rail).
    interval_ms
        tegrastats sampling interval.
    command
        The tegrastats executable.
    """

    name = "tegrastats"

    def __init__(self, rail: str | None = None, interval_ms: int = 100, command: str = "tegrastats") -> None:
        with _agent_errors():
            meter = agent.TegrastatsMeter(interval_ms, command=command)
        super().__init__(meter, rail)
        self.interval_s = interval_ms / 1e3
        self.min_window_s = max(1.0, 10 * self.interval_s)

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "rail": self.rail or "total input", "interval_ms": self.interval_s * 1e3}


class NvmlMeter(_AgentMeter):
    """The NVML total-energy counter of one NVIDIA GPU (``nvmlDeviceGetTotalEnergyConsumption``, mJ)."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        with _agent_errors():
            super().__init__(agent.NvmlMeter(index))


class RaplMeter(_AgentMeter):
    """Linux powercap RAPL counters of every CPU package (``intel-rapl:N``; also AMD on recent kernels).

    Parameters
    ----------
    root
        The powercap folder (``/sys/class/powercap``).
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        with _agent_errors():
            meter = agent.RaplMeter(str(root))
        super().__init__(meter)
        self.domains = [Path(d) for d in meter.domains]


@contextlib.contextmanager
def _agent_errors() -> Iterator[None]:
    """Turn the agent's one-line errors into ours (same message)."""
    try:
        yield
    except agent.AgentError as exc:
        raise HwAwareError(str(exc)) from None


def rapl_readable(root: str | Path = "/sys/class/powercap") -> bool:
    """Whether RAPL package counters exist and can be read."""
    try:
        RaplMeter(root)
    except HwAwareError:
        return False
    return True


def create_meter(kind: str, accelerator: str = "cpu", *, rail: str | None = None) -> EnergyMeter | None:
    """The meter for ``kind`` (see :data:`METERS`); ``auto`` picks what this machine has, or ``None``.

    ``auto``: tegrastats on a Jetson, else NVML for GPU backends, else RAPL for CPU backends when readable.
    Naming a meter that does not work here raises :class:`HwAwareError`.

    Examples
    --------
    >>> create_meter("none") is None
    True
    """
    if kind not in METERS:
        raise HwAwareError(f"unknown energy meter {kind!r}; use one of {', '.join(METERS)}")
    if kind == "none":
        return None
    if kind == "tegrastats" or (kind == "auto" and shutil.which("tegrastats")):
        return TegrastatsMeter(rail=rail)
    if kind == "nvml" or (kind == "auto" and accelerator.startswith("cuda")):
        try:
            return NvmlMeter()
        except HwAwareError:
            if kind == "nvml":
                raise
            return None
    if kind == "rapl":
        return RaplMeter()
    return RaplMeter() if accelerator == "cpu" and rapl_readable() else None
