"""Energy meters: tegrastats on Jetson boards, NVML energy counters on NVIDIA GPUs, RAPL on Linux CPUs.

Every meter measures the energy of a time window (:meth:`EnergyMeter.start` / :meth:`EnergyMeter.stop`, in mJ).
The measuring code (:func:`nni_hwaware.measure.runner.measure_energy`) runs inferences back to back through
such a window, measures the idle power the same way, and reports the energy per inference above idle. Where
no meter exists the energy is ``None``: it is never estimated or invented.

* **tegrastats** prints one line per interval with the rails' instantaneous/average power: ``POM_5V_GPU
  4307/4307`` on Nano/TX boards, ``VDD_GPU_SOC 2000mW/2000mW`` on Xavier/Orin. The instantaneous values are
  integrated over the samples that fall into the window.
* **NVML**: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was loaded, Volta and newer).
* **RAPL**: ``/sys/class/powercap/intel-rapl:N/energy_uj`` of every package, with wrap-around at
  ``max_energy_range_uj``; usually readable by root only.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError

METERS = ("auto", "none", "tegrastats", "nvml", "rapl")

# ``NAME cur/avg`` with optional mW units; names are upper-case rail names (POM_5V_IN, VDD_GPU_SOC, GPU, ...).
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
#: total input power rails, most specific first (Nano/TX1/TX2, Orin Nano/NX + Xavier NX, AGX Orin)
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN", "VIN_SYS_5V0", "VIN")
GPU_RAILS = ("POM_5V_GPU", "VDD_GPU_SOC", "VDD_GPU", "VDD_CPU_GPU_CV", "GPU")
CPU_RAILS = ("POM_5V_CPU", "VDD_CPU_CV", "VDD_CPU", "CPU")


def parse_tegrastats_line(line: str) -> dict[str, tuple[float, float]]:
    """Power rails of one tegrastats line: ``{rail: (instantaneous_mW, average_mW)}``.

    Examples
    --------
    >>> parse_tegrastats_line("RAM 1708/3964MB GR3D_FREQ 71%@921 POM_5V_IN 7193/7193 POM_5V_GPU 4307/4307")
    {'POM_5V_IN': (7193.0, 7193.0), 'POM_5V_GPU': (4307.0, 4307.0)}
    >>> parse_tegrastats_line("VDD_GPU_SOC 2000mW/2000mW VDD_CPU_CV 400mW/410mW VIN_SYS_5V0 2800mW/2800mW")
    {'VDD_GPU_SOC': (2000.0, 2000.0), 'VDD_CPU_CV': (400.0, 410.0), 'VIN_SYS_5V0': (2800.0, 2800.0)}
    """
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in _RAIL.finditer(line)}


def parse_tegrastats(lines: Iterable[str]) -> list[dict[str, float]]:
    """Instantaneous rail powers (mW) of every line that reports at least one rail."""
    out = []
    for line in lines:
        rails = parse_tegrastats_line(line)
        if rails:
            out.append({name: cur for name, (cur, _avg) in rails.items()})
    return out


def pick_rail(rails: Iterable[str], preferred: tuple[str, ...]) -> str | None:
    """The first rail of ``preferred`` that the board reports."""
    names = set(rails)
    return next((r for r in preferred if r in names), None)


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


# ------------------------------------------------------------------------------------------ tegrastats
class TegrastatsMeter(EnergyMeter):
    """tegrastats on a Jetson board, run in the background for as long as the meter lives.

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
        exe = shutil.which(command)
        if exe is None:
            raise HwAwareError("tegrastats is not on PATH; it exists on Jetson boards only (use --energy none)")
        self.interval_s = interval_ms / 1e3
        self.min_window_s = max(1.0, 10 * self.interval_s)
        self.rail = rail
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._t0 = 0.0
        deadline = time.monotonic() + 5
        while not self._samples and time.monotonic() < deadline:
            time.sleep(self.interval_s)
        if not self._samples:
            self.close()
            raise HwAwareError("tegrastats printed no power rails within 5 s; run as a user that may read them")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_tegrastats(line.splitlines())
            if rails:
                with self._lock:
                    self._samples.append((time.monotonic(), rails[0]))

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        t1 = time.monotonic()
        time.sleep(self.interval_s * 1.5)  # the sample covering the window's end arrives one interval later
        with self._lock:
            window = [s for t, s in self._samples if self._t0 < t <= t1 + self.interval_s]
            self._samples = self._samples[-10:]
        rails = integrate_samples(window, self.interval_s)
        rail = self.rail or pick_rail(rails, TOTAL_RAILS) or next(iter(rails), None)
        if rail is None or rail not in rails:
            raise HwAwareError(f"tegrastats reports no rail {self.rail!r}; it has {sorted(rails)}")
        return EnergyReading(rails[rail], max(len(window) * self.interval_s, 1e-9), rails)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def describe(self) -> dict[str, Any]:
        return {"meter": self.name, "rail": self.rail or "total input", "interval_ms": self.interval_s * 1e3}


# ------------------------------------------------------------------------------------------------ NVML
class NvmlMeter(EnergyMeter):
    """The NVML total-energy counter of one NVIDIA GPU (``nvmlDeviceGetTotalEnergyConsumption``, mJ)."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        try:
            import pynvml
        except ImportError:
            raise HwAwareError("NVML energy needs nvidia-ml-py (pip install 'nni-hwaware[tensorrt]')") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError as exc:
            raise HwAwareError(f"this GPU has no NVML energy counter ({exc}); use --energy none") from None
        self._e0 = 0
        self._t0 = 0.0

    def start(self) -> None:
        self._e0 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        e1 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        return EnergyReading(float(e1 - self._e0), time.monotonic() - self._t0)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # shutting down twice is harmless
            self._nvml.nvmlShutdown()


# ------------------------------------------------------------------------------------------------ RAPL
class RaplMeter(EnergyMeter):
    """Linux powercap RAPL counters of every CPU package (``intel-rapl:N``; also AMD on recent kernels).

    Parameters
    ----------
    root
        The powercap folder (``/sys/class/powercap``).
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self.domains = sorted(p for p in self.root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name))
        if not self.domains:
            raise HwAwareError(f"no RAPL package domains under {self.root}; use --energy none")
        try:
            self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
            self._read()
        except (OSError, ValueError) as exc:
            raise HwAwareError(f"RAPL counters are not readable ({exc}); run as root or use --energy none") from None
        self._e0: list[int] = []
        self._t0 = 0.0

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._e0 = self._read()
        self._t0 = time.monotonic()

    def stop(self) -> EnergyReading:
        e1 = self._read()
        total_uj = 0
        for before, after, wrap in zip(self._e0, e1, self._ranges):
            total_uj += after - before if after >= before else after + wrap - before
        return EnergyReading(total_uj / 1e3, time.monotonic() - self._t0)


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
