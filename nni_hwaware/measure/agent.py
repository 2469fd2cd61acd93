#!/usr/bin/env python3
"""nni-hwaware device agent: measure ONNX models on a device (a Jetson board, an NVIDIA GPU, any CPU) for a
workstation that drives the search.

This file is self-contained on purpose: it is copied to the device and run there with **Python >= 3.6, the
standard library, numpy and the device's runtime** (onnxruntime; TensorRT 8.2 to 11 with pycuda or
cuda-python; pynvml for NVML energy), which is what JetPack 4.6 on a Jetson Nano offers. It imports nothing from
``nni_hwaware``; the package imports from it instead (:func:`collect_fingerprint`, the TensorRT runner
:class:`TrtRunner` with :class:`CudaApi` and :func:`build_trt_engine`, tegrastats parsing).

Commands (``python3 agent.py COMMAND``)::

    serve-stdio [--cache DIR]                       JSON lines on stdin/stdout (the SSH transport)
    serve-http --port P --token-file F [--host H]   HTTP with a bearer token (a device farm)
              [--max-upload-mb 512] [--cache DIR]
    info                                            print the device fingerprint as JSON
    check [--backend B]                             say which runtime pieces are missing and how to install them

Requests are JSON objects ``{"id": N, "op": OP, ...}``; replies ``{"id": N, "ok": true, "result": {...}}`` or
``{"id": N, "ok": false, "error": "one line"}``. Ops: ``info``, ``has_model``, ``upload``, ``measure``, ``ping``,
``shutdown``. Models and TensorRT engines are cached under ``~/.cache/nni-hwaware-agent`` by sha256 (engines also
by precision and TensorRT version). The full contract is in the repository's ``docs/device_protocol.md``.

Two timing protocols: ``esm`` (warm-up, timed compute-only runs, trimmed mean, optional adaptive stop; energy per
inference above idle) and ``jetson_dataset`` (the public Jetson Nano dataset's: host-side calls with copies, plain
mean; energy = GPU rail readings summed over the window times the interval, divided by the inferences).

Examples
--------
>>> parse_tegrastats_line("RAM 1708/3964MB POM_5V_IN 7193/7193 POM_5V_GPU 4307/4307")
{'POM_5V_IN': (7193.0, 7193.0), 'POM_5V_GPU': (4307.0, 4307.0)}
>>> is_onnx(b"not an onnx model")
False
"""

import argparse
import atexit
import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

AGENT_VERSION = 1
AGENT_NAME = "nni-hwaware-device-agent"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "nni-hwaware-agent")
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")
METERS = ("auto", "none", "tegrastats", "nvml", "rapl")
PROTOCOLS = ("esm", "jetson_dataset")
MAX_JSON_BYTES = 1 << 20
DEFAULT_MAX_UPLOAD_MB = 512
#: at most this many per-call samples are returned for the jetson_dataset protocol (a 60 s loop of a fast model)
MAX_RETURNED_SAMPLES = 20000

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# ``NAME cur/avg`` with optional mW units (the regex of nni_hwaware/measure/energy.py): POM_5V_GPU 4307/4307 on
# Nano/TX boards, VDD_GPU_SOC 2000mW/2000mW on Xavier/Orin.
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
#: total input power rails, most specific first (Nano/TX1/TX2, Orin Nano/NX + Xavier NX, AGX Orin)
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN", "VIN_SYS_5V0", "VIN")
#: GPU rails, most specific first
GPU_RAILS = ("POM_5V_GPU", "VDD_GPU_SOC", "VDD_GPU", "VDD_CPU_GPU_CV", "GPU")

_CHILDREN = set()  # type: set
_CHILDREN_LOCK = threading.Lock()


class AgentError(Exception):
    """A one-line error for the client; ``status`` is the HTTP status it maps to.

    Examples
    --------
    >>> AgentError("no such model", 404).status
    404
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def log(message: str) -> None:
    """Write one line to stderr (stdout carries the protocol in serve-stdio)."""
    try:
        sys.stderr.write("agent: " + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------- fingerprint
def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def _run_quiet(cmd: List[str], timeout: float = 10.0) -> Optional[str]:
    """stdout of a command, or None if it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out if proc.returncode == 0 else None


def _cpu_name() -> str:
    text = _read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _l4t_release() -> Optional[str]:
    """``R32.7.1`` from ``/etc/nv_tegra_release`` (``# R32 (release), REVISION: 7.1, ...``)."""
    text = _read_text("/etc/nv_tegra_release")
    if not text:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return "R{}.{}".format(match.group(1), match.group(2).rstrip(".")) if match else None


def _power_mode() -> Optional[str]:
    out = _run_quiet(["nvpmodel", "-q"])
    match = re.search(r"NV Power Mode:\s*(\S[^\n]*)", out or "")
    return match.group(1).strip() if match else None


def _clocks_locked() -> Optional[bool]:
    """True when every CPU frequency policy and the Jetson GPU's devfreq have min == max; None if unknown."""
    pairs = []
    cpufreq = "/sys/devices/system/cpu/cpufreq"
    for name in sorted(os.listdir(cpufreq)) if os.path.isdir(cpufreq) else []:
        if name.startswith("policy"):
            pairs.append((os.path.join(cpufreq, name, "scaling_min_freq"),
                          os.path.join(cpufreq, name, "scaling_max_freq")))
    devfreq = "/sys/class/devfreq"
    for name in sorted(os.listdir(devfreq)) if os.path.isdir(devfreq) else []:
        if re.search(r"gpu|gm20b|gp10b|gv11b|ga10b", name):
            pairs.append((os.path.join(devfreq, name, "min_freq"), os.path.join(devfreq, name, "max_freq")))
    values = []
    for low, high in pairs:
        low_text, high_text = _read_text(low), _read_text(high)
        if low_text is not None and high_text is not None:
            values.append(low_text.strip() == high_text.strip())
    return all(values) if values else None


def _import(name: str) -> Any:
    """The module, or None when it is missing or cannot load (a wheel without its native libraries)."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, OSError from missing .so files, RuntimeError from CUDA-less machines
        return None


def _dist_version(*names: str) -> Optional[str]:
    """A distribution's version from its metadata (Python >= 3.8), else None."""
    try:
        from importlib import metadata  # novermin - Python >= 3.8; older Pythons fall back to "installed"
    except ImportError:
        return None
    for name in names:
        try:
            return str(metadata.version(name))
        except Exception:  # PackageNotFoundError
            continue
    return None


def _version_of(name: str, *dists: str) -> Optional[str]:
    module = _import(name)
    if module is None:
        return None
    for attr in ("__version__", "VERSION_TEXT", "version"):
        value = getattr(module, attr, None)
        if isinstance(value, str):
            return value
    return _dist_version(*dists) or "installed"


def _cuda_python_version() -> Optional[str]:
    for name in ("cuda.bindings", "cuda"):
        module = _import(name)
        if module is not None and isinstance(getattr(module, "__version__", None), str):
            return module.__version__
    return "installed" if _cuda_runtime_module() is not None else None


def _cuda_runtime_module() -> Any:
    return _import("cuda.bindings.runtime") or _import("cuda.cudart")


def runtime_versions() -> Dict[str, Optional[str]]:
    """Versions of the runtimes the agent can use (None when missing)."""
    return {"onnxruntime": _version_of("onnxruntime"), "tensorrt": _version_of("tensorrt"),
            "pycuda": _version_of("pycuda"), "cuda-python": _cuda_python_version(),
            "numpy": _version_of("numpy"), "pynvml": _version_of("pynvml", "nvidia-ml-py", "pynvml")}


def _gpu_name(gpu_index: int) -> Optional[str]:
    pynvml = _import("pynvml")
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(gpu_index))
            finally:
                pynvml.nvmlShutdown()
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # NVMLError: no driver, no such GPU, or a Jetson (no NVML there)
            pass
    out = _run_quiet(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu_index)])
    if out and out.strip():
        return out.strip().splitlines()[0]
    pycuda = _import("pycuda.driver")
    if pycuda is not None:
        try:
            pycuda.init()
            return str(pycuda.Device(gpu_index).name())
        except Exception:  # pycuda.driver.Error without a usable GPU
            pass
    return None


def _cuda_version() -> Optional[str]:
    text = _read_text("/usr/local/cuda/version.json")
    if text:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    match = re.search(r"CUDA Version\s+([\d.]+)", _read_text("/usr/local/cuda/version.txt") or "")
    if match:
        return match.group(1)
    pynvml = _import("pynvml")
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                version = int(pynvml.nvmlSystemGetCudaDriverVersion())
            finally:
                pynvml.nvmlShutdown()
            return "{}.{}".format(version // 1000, (version % 1000) // 10)
        except Exception:  # NVMLError
            pass
    return None


def tensorrt_max_opset(version: Optional[str]) -> Optional[int]:
    """The highest ONNX opset TensorRT's ONNX parser of ``version`` takes, conservatively.

    From the operator tables of onnx-tensorrt's release branches (docs/operators.md) as summarised in the
    device protocol: 8.0-8.2 (JetPack 4.6) stop at opset 13, 8.4 at 15, 8.5 and 8.6 at 17, 10 and later at 20.

    Examples
    --------
    >>> tensorrt_max_opset("8.2.1.8"), tensorrt_max_opset("8.5.2"), tensorrt_max_opset("10.7.0")
    (13, 17, 20)
    """
    if not version:
        return None
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    if major >= 10:
        return 20
    if major == 8 and minor >= 5 or major == 9:
        return 17
    if major == 8 and minor >= 4:
        return 15
    if major == 8:
        return 13
    return 11  # TensorRT 7 (not supported for measuring, reported for completeness)


def onnxruntime_max_opset(version: Optional[str]) -> Optional[int]:
    """The highest ONNX opset onnxruntime ``version`` runs: what its operator schemas say if it exposes them
    (``onnxruntime.capi``), else a conservative table (1.17 and later: 20; older: 13).

    Examples
    --------
    >>> onnxruntime_max_opset(None) is None
    True
    """
    if not version:
        return None
    state = _import("onnxruntime.capi._pybind_state")
    try:
        schemas = state.get_all_operator_schema()
        best = max(int(s.since_version) for s in schemas if s.domain in ("", "ai.onnx"))
        if best >= 7:
            return best
    except Exception:  # a build without schema introspection
        pass
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    return 20 if (parts[0], parts[1]) >= (1, 17) else 13


def available_meters(gpu_index: int = 0) -> List[str]:
    """The energy meters that work here, of ``tegrastats``, ``nvml``, ``rapl``."""
    found = []
    if shutil.which("tegrastats"):
        found.append("tegrastats")
    try:
        NvmlMeter(gpu_index).close()
        found.append("nvml")
    except AgentError:
        pass
    try:
        RaplMeter()
        found.append("rapl")
    except AgentError:
        pass
    return found


def device_identity(gpu_index: int = 0) -> Dict[str, Any]:
    """The hardware part of the fingerprint: board, L4T release, GPU, CUDA, power mode, locked clocks (no runtime
    is imported and no meter opened, so a local measurement can record it cheaply).

    Examples
    --------
    >>> sorted(device_identity())
    ['board', 'clocks_locked', 'cuda', 'gpu', 'l4t', 'power_mode']
    """
    board = _read_text("/proc/device-tree/model")
    return {"board": (board.strip("\x00 \n") or None) if board is not None else None, "l4t": _l4t_release(),
            "gpu": _gpu_name(gpu_index), "cuda": _cuda_version(), "power_mode": _power_mode(),
            "clocks_locked": _clocks_locked()}


def collect_fingerprint(gpu_index: int = 0) -> Dict[str, Any]:
    """What this device is: board, L4T release, CPU/GPU, CUDA, power mode, clocks, runtimes, meters, opsets.

    Examples
    --------
    >>> fp = collect_fingerprint()
    >>> fp["agent_version"] == AGENT_VERSION and "runtimes" in fp
    True
    """
    runtimes = runtime_versions()
    return {
        "agent_version": AGENT_VERSION, "python": platform.python_version(), "host": socket.gethostname(),
        "machine": platform.machine(), "os": platform.system(), "cpu": _cpu_name(), "cores": os.cpu_count() or 1,
        **device_identity(gpu_index), "runtimes": runtimes, "meters": available_meters(gpu_index),
        "max_onnx_opset": {"onnxruntime": onnxruntime_max_opset(runtimes["onnxruntime"]),
                           "tensorrt": tensorrt_max_opset(runtimes["tensorrt"])},
    }


# ------------------------------------------------------------------------------------------ ONNX check
def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def is_onnx(data: bytes) -> bool:
    """Whether ``data`` looks like an ONNX ModelProto on the wire: every top-level protobuf field parses to the
    end, and ``ir_version`` (field 1, varint) and ``graph`` (field 7, bytes) are present.

    Examples
    --------
    >>> is_onnx(bytes([0x08, 0x07, 0x3A, 0x00]))
    True
    >>> is_onnx(bytes([0x08, 0x07]))
    False
    """
    seen = set()
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if field == 0:
                return False
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, pos = _varint(data, pos)
                pos += length
            elif wire == 5:
                pos += 4
            else:
                return False
            if pos > len(data):
                return False
            if (field, wire) in ((1, 0), (7, 2)):
                seen.add(field)
    except ValueError:
        return False
    return seen == {1, 7}


# ------------------------------------------------------------------------------------------ statistics
def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if p < 0.02425 or p > 1 - 0.02425:
        q = math.sqrt(-2 * math.log(p if p < 0.5 else 1 - p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        return x if p < 0.5 else -x
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes' betacf)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _beta_inc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def _t_cdf(t: float, dof: int) -> float:
    tail = 0.5 * _beta_inc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, dof: int) -> float:
    log_c = math.lgamma((dof + 1) / 2.0) - math.lgamma(dof / 2.0) - 0.5 * math.log(dof * math.pi)
    return math.exp(log_c - (dof + 1) / 2.0 * math.log1p(t * t / dof))


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t quantile ``t_{(1+confidence)/2, dof}`` without scipy (no scipy on the boards).

    Closed forms for 1 and 2 degrees of freedom; otherwise the Cornish-Fisher expansion around the normal
    quantile (Abramowitz & Stegun 26.7.5) refined by Newton steps on the exact t CDF (regularized incomplete
    beta function), which agrees with scipy to about 1e-9.

    Examples
    --------
    >>> round(t_quantile(0.95, 10), 4)
    2.2281
    """
    p = 0.5 + confidence / 2
    dof = max(int(dof), 1)
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = _normal_quantile(p)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    t = z + g1 / dof + g2 / dof ** 2 + g3 / dof ** 3 + g4 / dof ** 4
    for _ in range(20):
        step = (_t_cdf(t, dof) - p) / _t_pdf(t, dof)
        t = max(t - step, t / 2)
        if abs(step) < 1e-12 * max(1.0, abs(t)):
            break
    return t


def trimmed_stats(samples: Sequence[float], trim: float = 0.2, confidence: float = 0.95) -> Dict[str, Any]:
    """Trimmed mean, kept count and the half-width of its confidence interval (Tukey-McLaughlin), as
    ``nni_hwaware.measure.protocol.trimmed_stats`` computes them; ``ci_half_width_ms`` is None when undefined.

    Examples
    --------
    >>> trimmed_stats([1.0, 2.0, 2.0, 2.0, 100.0])["mean_ms"]
    2.0
    """
    x = sorted(float(v) for v in samples)
    n = len(x)
    if n == 0:
        raise AgentError("no timed runs to summarise")
    g = int(math.floor(trim * n))
    kept = x[g:n - g] if n - 2 * g > 0 else x
    mean = sum(kept) / len(kept)
    half = None  # type: Optional[float]
    if n - 2 * g > 1:
        wins = [min(max(v, x[g]), x[n - g - 1]) for v in x]
        wmean = sum(wins) / n
        sw = math.sqrt(sum((v - wmean) ** 2 for v in wins) / (n - 1))
        se = sw / ((1 - 2 * g / n) * math.sqrt(n))
        half = t_quantile(confidence, n - 2 * g - 1) * se
    return {"mean_ms": mean, "kept": len(kept), "ci_half_width_ms": half, "median_ms": x[n // 2] if n % 2 else
            (x[n // 2 - 1] + x[n // 2]) / 2, "min_ms": x[0], "max_ms": x[-1]}


# ------------------------------------------------------------------------------------------- tegrastats
def parse_tegrastats_line(line: str) -> Dict[str, Tuple[float, float]]:
    """Power rails of one tegrastats line: ``{rail: (instantaneous_mW, average_mW)}``.

    Examples
    --------
    >>> parse_tegrastats_line("VDD_GPU_SOC 2000mW/2000mW VDD_CPU_CV 400mW/410mW")
    {'VDD_GPU_SOC': (2000.0, 2000.0), 'VDD_CPU_CV': (400.0, 410.0)}
    """
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in _RAIL.finditer(line)}


def tegrastats_rail_totals(lines: Sequence[str], interval_s: float) -> Tuple[Dict[str, float], int]:
    """Energy per rail in mJ over the lines that report rails: each instantaneous mW reading held for one
    interval (the Jetson Nano dataset's ``Total_POM_5V_*`` at 1 s), and how many such lines there were.

    Examples
    --------
    >>> tegrastats_rail_totals(["POM_5V_GPU 4000/4000", "no rails", "POM_5V_GPU 2000/3000"], 1.0)
    ({'POM_5V_GPU': 6000.0}, 2)
    """
    total = {}  # type: Dict[str, float]
    count = 0
    for line in lines:
        rails = parse_tegrastats_line(line)
        if rails:
            count += 1
            for rail, (current, _average) in rails.items():
                total[rail] = total.get(rail, 0.0) + current * interval_s
    return total, count


def pick_rail(rails: Sequence[str], preferred: Sequence[str]) -> Optional[str]:
    """The first rail of ``preferred`` that the board reports.

    Examples
    --------
    >>> pick_rail(["POM_5V_IN", "POM_5V_GPU"], GPU_RAILS)
    'POM_5V_GPU'
    """
    names = set(rails)
    for rail in preferred:
        if rail in names:
            return rail
    return None


def _track_child(proc: Any, add: bool) -> None:
    with _CHILDREN_LOCK:
        if add:
            _CHILDREN.add(proc)
        else:
            _CHILDREN.discard(proc)


def _stop_process(proc: Any) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except OSError:
            pass


def stop_children() -> None:
    """End every helper process the agent started (tegrastats); called on exit and on SIGTERM."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
        _CHILDREN.clear()
    for proc in children:
        _stop_process(proc)


atexit.register(stop_children)


class TegrastatsMeter:
    """tegrastats rails over a window: ``start`` runs ``tegrastats --interval MS`` and returns once its first
    line is in, ``stop`` ends it and sums every line it printed (each exactly once, the first included), like
    the Jetson Nano dataset's 60 s logs: ``duration_s`` = lines x interval.

    Parameters
    ----------
    interval_ms
        tegrastats sampling interval.
    command
        The tegrastats executable (looked up on PATH).

    Examples
    --------
    >>> try:
    ...     TegrastatsMeter(1000, command="surely-not-a-tegrastats")
    ... except AgentError as exc:
    ...     print(str(exc).split(";")[0])
    tegrastats is not on PATH (surely-not-a-tegrastats)
    """

    name = "tegrastats"

    def __init__(self, interval_ms: int = 1000, command: str = "tegrastats") -> None:
        exe = shutil.which(command)
        if exe is None:
            raise AgentError("tegrastats is not on PATH ({}); it exists on Jetson boards only: use energy meter "
                             "none".format(command))
        if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 1:
            raise AgentError("tegrastats_interval_ms must be a positive integer, got {!r}".format(interval_ms))
        self.exe = exe
        self.interval_ms = interval_ms
        self.interval_s = interval_ms / 1e3
        self._lines = []  # type: List[str]
        self._lock = threading.Lock()
        self._proc = None  # type: Any
        self._reader = None  # type: Any
        self._t0 = 0.0

    @property
    def samples_seen(self) -> int:
        """Lines with rails read so far in the open window."""
        with self._lock:
            return len(self._lines)

    def _read(self, stream: Any) -> None:
        for line in stream:
            if _RAIL.search(line):
                with self._lock:
                    self._lines.append(line)

    def start(self) -> None:
        """Open a window: start tegrastats."""
        self.close()
        self._lines = []
        try:
            self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, universal_newlines=True)
        except OSError as exc:
            raise AgentError("cannot run tegrastats: {}".format(_first_line(exc))) from None
        _track_child(self._proc, True)
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        # the window opens once tegrastats samples: its first line (counted, as every line it prints until
        # stop) arrives one interval after it started; a slow start must not eat the window
        deadline = time.perf_counter() + 10.0 + 2 * self.interval_s
        while not self.samples_seen:
            if self._proc.poll() is not None or time.perf_counter() > deadline:
                self.close()
                raise AgentError("tegrastats printed no power rails within {:.0f} s; run the agent as a user "
                                 "that may read them (on some boards: sudo)".format(10.0 + 2 * self.interval_s))
            time.sleep(min(self.interval_s / 4, 0.01))
        self._t0 = time.perf_counter()

    def stop(self) -> Dict[str, Any]:
        """Close the window: end tegrastats, read what it printed, return the rails' energy in mJ."""
        if self._proc is None:
            raise AgentError("the tegrastats window was never opened")
        wall = time.perf_counter() - self._t0
        self.close()
        with self._lock:
            lines = list(self._lines)
        rails, count = tegrastats_rail_totals(lines, self.interval_s)
        return {"rails_mj": rails, "samples": count, "duration_s": count * self.interval_s, "wall_s": wall}

    def close(self) -> None:
        """End tegrastats if it runs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _stop_process(proc)
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        _track_child(proc, False)


class NvmlMeter:
    """The NVML total-energy counter of one NVIDIA GPU (``nvmlDeviceGetTotalEnergyConsumption``, mJ; Volta+)."""

    name = "nvml"

    def __init__(self, gpu_index: int = 0) -> None:
        pynvml = _import("pynvml")
        if pynvml is None:
            raise AgentError("NVML energy needs pynvml (pip install nvidia-ml-py); or use energy meter none")
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError: no driver (Jetson boards have no NVML)
            raise AgentError("NVML is not usable here ({}); use energy meter none".format(_first_line(exc))) from None
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # NVMLError_NotSupported on pre-Volta GPUs
            self.close()
            raise AgentError("GPU {} has no NVML energy counter ({}); use energy meter none".format(
                gpu_index, _first_line(exc))) from None
        self._e0, self._t0 = 0, 0.0

    def start(self) -> None:
        self._e0 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        self._t0 = time.perf_counter()

    def stop(self) -> Dict[str, Any]:
        e1 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        wall = time.perf_counter() - self._t0
        return {"rails_mj": {"GPU": float(e1 - self._e0)}, "samples": 2, "duration_s": wall, "wall_s": wall}

    def close(self) -> None:
        with contextlib.suppress(Exception):  # shutting down twice is harmless
            self._nvml.nvmlShutdown()


class RaplMeter:
    """Linux powercap RAPL package counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, with wrap-around)."""

    name = "rapl"

    def __init__(self, root: str = "/sys/class/powercap") -> None:
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
        self.domains = [os.path.join(root, n) for n in names if re.match(r"^intel-rapl:\d+$", n)]
        if not self.domains:
            raise AgentError("no RAPL package counters under {}; use energy meter none".format(root))
        try:
            self._ranges = [int(_read_file(os.path.join(d, "max_energy_range_uj"))) for d in self.domains]
            self._read()
        except (OSError, ValueError) as exc:
            raise AgentError("RAPL counters are not readable ({}); run the agent as root or use energy meter "
                             "none".format(_first_line(exc))) from None
        self._e0, self._t0 = [], 0.0  # type: List[int], float

    def _read(self) -> List[int]:
        return [int(_read_file(os.path.join(d, "energy_uj"))) for d in self.domains]

    def start(self) -> None:
        self._e0 = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> Dict[str, Any]:
        e1 = self._read()
        wall = time.perf_counter() - self._t0
        total_uj = 0
        for before, after, wrap in zip(self._e0, e1, self._ranges):
            total_uj += after - before if after >= before else after + wrap - before
        return {"rails_mj": {"PACKAGE": total_uj / 1e3}, "samples": 2, "duration_s": wall, "wall_s": wall}

    def close(self) -> None:
        pass


def _read_file(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def create_meter(kind: str, backend: str, gpu_index: int = 0, tegrastats_interval_ms: int = 1000) -> Any:
    """The meter for ``kind`` (``auto``: tegrastats on a Jetson, else NVML for tensorrt, else RAPL for
    onnxruntime when readable, else None). Naming a meter that does not work here raises :class:`AgentError`.

    Examples
    --------
    >>> create_meter("none", "onnxruntime") is None
    True
    """
    if kind not in METERS:
        raise AgentError("unknown energy meter {!r}; use one of {}".format(kind, ", ".join(METERS)))
    if kind == "none":
        return None
    if kind == "tegrastats" or (kind == "auto" and shutil.which("tegrastats")):
        return TegrastatsMeter(tegrastats_interval_ms)
    if kind == "nvml":
        return NvmlMeter(gpu_index)
    if kind == "rapl":
        return RaplMeter()
    try:
        return NvmlMeter(gpu_index) if backend == "tensorrt" else RaplMeter()
    except AgentError:
        return None


# ------------------------------------------------------------------------------------------ onnxruntime
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}


def concrete_shape(shape: Sequence[Any], input_shape: Optional[Sequence[int]], name: str) -> Tuple[int, ...]:
    """Replace symbolic dimensions: the batch by 1, the others by ``input_shape`` if given.

    Examples
    --------
    >>> concrete_shape(["N", 3, -1, 8], [1, 3, 8, 8], "x")
    (1, 3, 8, 8)
    """
    out = []
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif input_shape is not None and i < len(input_shape):
            out.append(int(input_shape[i]))
        elif i == 0:
            out.append(1)
        else:
            raise AgentError("input {!r} has a symbolic dimension {!r} at position {}; give input_shape or export "
                             "the model with a fixed input size".format(name, dim, i))
    return tuple(out)


def _random_input(np: Any, shape: Sequence[int], dtype: Any) -> Any:
    return np.random.RandomState(0).standard_normal(tuple(shape)).astype(dtype)


class OrtRunner:
    """onnxruntime on the CPU: ``intra_op_num_threads`` as asked, ``inter_op`` 1, sequential, all graph
    optimisations, no spin-waiting (``session.intra_op.allow_spinning`` = 0).

    Parameters
    ----------
    onnx_bytes
        The model.
    threads
        Intra-op threads.
    input_shape
        Fills symbolic dimensions of the inputs.
    """

    def __init__(self, onnx_bytes: bytes, threads: int = 1, input_shape: Optional[Sequence[int]] = None) -> None:
        ort = _import("onnxruntime")
        np = _import("numpy")
        if ort is None or np is None:
            raise AgentError("the onnxruntime backend needs numpy and onnxruntime here; run the agent's check "
                             "command for how to install them")
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if hasattr(options, "add_session_config_entry"):
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
            self._feeds = {}
            for inp in self._session.get_inputs():
                if inp.type not in _ORT_TYPES:
                    raise AgentError("input {!r} has unsupported type {}".format(inp.name, inp.type))
                shape = concrete_shape(inp.shape, input_shape, inp.name)
                self._feeds[inp.name] = _random_input(np, shape, _ORT_TYPES[inp.type])
            self._session.run(None, self._feeds)  # fail now rather than in the middle of the timing
        except AgentError:
            raise
        except Exception as exc:  # onnxruntime raises several unrelated types for bad models
            raise AgentError("onnxruntime cannot run the model: {}".format(_first_line(exc))) from None
        self.build_time_s = time.perf_counter() - start
        self.engine_cached = False

    def time_compute(self) -> float:
        """One inference, timed with perf_counter (ms)."""
        start = time.perf_counter()
        self._session.run(None, self._feeds)
        return (time.perf_counter() - start) * 1e3

    time_host_call = time_compute  # on the CPU the plain run call is the whole host-side call

    def run_untimed(self, count: int) -> None:
        run, feeds = self._session.run, self._feeds
        for _ in range(count):
            run(None, feeds)

    def close(self) -> None:
        self._session = None
        self._feeds = {}


# --------------------------------------------------------------------------------------------- CUDA
class CudaApi:
    """The CUDA calls TensorRT timing needs, through pycuda (preferred) or cuda-python
    (``cuda.bindings.runtime`` or ``cuda.cudart``).

    With pycuda the device's primary context is retained and pushed on creation, and :meth:`close` pops and
    detaches it (also at exit if forgotten), so the process exits cleanly. Create and close it on the same
    thread: CUDA contexts are per thread.

    Parameters
    ----------
    kind
        ``pycuda`` or ``cuda-python``.
    module
        ``pycuda.driver`` or the cuda-python runtime module.
    device_index
        The GPU.
    """

    def __init__(self, kind: str, module: Any, device_index: int) -> None:
        self.kind = kind
        self._m = module
        self._context = None  # type: Any
        if kind == "pycuda":
            module.init()
            device = module.Device(device_index)
            self.device_name = str(device.name())
            self._context = device.retain_primary_context()
            self._context.push()
            atexit.register(self.close)
        else:
            self._check(module.cudaSetDevice(device_index))
            props = self._check(module.cudaGetDeviceProperties(device_index))
            name = props.name
            self.device_name = (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")

    @classmethod
    def load(cls, device_index: int = 0) -> "CudaApi":
        """pycuda if installed, else cuda-python; :class:`AgentError` when neither works."""
        for kind, name in (("pycuda", "pycuda.driver"), ("cuda-python", "cuda.bindings.runtime"),
                           ("cuda-python", "cuda.cudart")):
            module = _import(name)
            if module is None:
                continue
            try:
                return cls(kind, module, device_index)
            except AgentError:
                raise
            except Exception as exc:  # pycuda.driver.Error / LogicError without a usable GPU or driver
                raise AgentError("no usable NVIDIA GPU {} ({}); check the driver, or use the onnxruntime "
                                 "backend".format(device_index, _first_line(exc))) from None
        raise AgentError("TensorRT needs pycuda or cuda-python here: pip3 install pycuda (Jetson) or pip install "
                         "cuda-python")

    def _check(self, result: Any) -> Any:
        values = result if isinstance(result, tuple) else (result,)
        if int(values[0]) != 0:
            raise AgentError("CUDA call failed: {}".format(values[0]))
        rest = values[1:]
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> Any:
        return self._m.mem_alloc(nbytes) if self.kind == "pycuda" else self._check(self._m.cudaMalloc(nbytes))

    def address(self, buffer: Any) -> int:
        return int(buffer)

    def free(self, buffer: Any) -> None:
        if self.kind == "pycuda":
            buffer.free()
        else:
            self._m.cudaFree(buffer)

    def host_empty(self, shape: Sequence[int], dtype: Any) -> Any:
        """A host array for copies: page-locked with pycuda (its async copies need it), plain numpy otherwise."""
        if self.kind == "pycuda":
            return self._m.pagelocked_empty(tuple(shape), dtype)
        return _import("numpy").empty(tuple(shape), dtype)

    def free_host(self, array: Any) -> None:
        base = getattr(array, "base", None)
        if self.kind == "pycuda" and base is not None and hasattr(base, "free"):
            base.free()

    def htod(self, buffer: Any, array: Any, stream: Any) -> None:
        if self.kind == "pycuda":
            self._m.memcpy_htod_async(buffer, array, stream)
        else:
            self._check(self._m.cudaMemcpyAsync(buffer, array.ctypes.data, array.nbytes,
                                                self._m.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def dtoh(self, array: Any, buffer: Any, stream: Any) -> None:
        if self.kind == "pycuda":
            self._m.memcpy_dtoh_async(array, buffer, stream)
        else:
            self._check(self._m.cudaMemcpyAsync(array.ctypes.data, buffer, array.nbytes,
                                                self._m.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def stream(self) -> Any:
        return self._m.Stream() if self.kind == "pycuda" else self._check(self._m.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle) if self.kind == "pycuda" else int(stream)

    def event(self) -> Any:
        return self._m.Event() if self.kind == "pycuda" else self._check(self._m.cudaEventCreate())

    def record(self, event: Any, stream: Any) -> None:
        if self.kind == "pycuda":
            event.record(stream)
        else:
            self._check(self._m.cudaEventRecord(event, stream))

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (waits for the second)."""
        if self.kind == "pycuda":
            end.synchronize()
            return float(start.time_till(end))
        self._check(self._m.cudaEventSynchronize(end))
        return float(self._check(self._m.cudaEventElapsedTime(start, end)))

    def synchronize(self, stream: Any) -> None:
        if self.kind == "pycuda":
            stream.synchronize()
        else:
            self._check(self._m.cudaStreamSynchronize(stream))

    def destroy(self, stream: Any = None, events: Sequence[Any] = ()) -> None:
        """Release a stream and events (cuda-python; pycuda frees them with the objects)."""
        if self.kind == "pycuda":
            return
        for event in events:
            self._m.cudaEventDestroy(event)
        if stream is not None:
            self._m.cudaStreamDestroy(stream)

    def close(self) -> None:
        """Pop and detach the pycuda context (idempotent); nothing to do with cuda-python."""
        context, self._context = self._context, None
        if context is None:
            return
        try:
            atexit.unregister(self.close)
            context.pop()
        finally:
            context.detach()


# ------------------------------------------------------------------------------------------- TensorRT
def trt_major(trt: Any) -> int:
    """TensorRT's major version."""
    return int(str(trt.__version__).split(".")[0])


def _network_has_fp16(trt: Any, network: Any) -> bool:
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.DataType.HALF:
                return True
    return False


def build_trt_engine(trt: Any, onnx_bytes: bytes, precision: str = "fp32", workspace_mb: int = 1024,
                     input_shape: Optional[Sequence[int]] = None, logger: Any = None) -> Tuple[bytes, bool]:
    """Build a serialized TensorRT engine from ONNX bytes; returns it and whether the model has dynamic inputs.

    TensorRT facts relied on (NVIDIA's Python API docs and 10.x -> 11.x migration guide): 8.x needs the
    EXPLICIT_BATCH creation flag for ONNX, which 10.0 deprecated and ignores (always explicit batch); the
    workspace is ``max_workspace_size`` before 8.4 and ``set_memory_pool_limit(WORKSPACE)`` after (the attribute
    was removed in 10); ``BuilderFlag.FP16`` and ``platform_has_fast_fp16`` exist up to 10.x and were removed in
    11, where every network is strongly typed (the STRONGLY_TYPED flag is accepted and ignored), so fp16 there
    means an fp16 ONNX model (e.g. converted with ModelOpt AutoCast). Dynamic inputs get an optimization profile
    at the concrete shape.
    """
    logger = logger or trt.Logger(trt.Logger.WARNING)
    fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if trt_major(trt) < 10 and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if precision == "fp16" and fp16_flag is None and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AgentError("TensorRT {} cannot parse the model: {}".format(trt.__version__, errors or "unknown error"))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = int(workspace_mb) << 20
    if precision == "fp16" and fp16_flag is not None:
        if hasattr(builder, "platform_has_fast_fp16") and not builder.platform_has_fast_fp16:
            raise AgentError("this GPU has no fast fp16; use precision fp32")
        config.set_flag(fp16_flag)
    elif precision == "fp16":
        log("TensorRT {} has no fp16 builder flag (weak typing was removed in 11): fp16 needs an fp16 ONNX model; "
            "building it strongly typed".format(trt.__version__))
        if not _network_has_fp16(trt, network):
            raise AgentError("TensorRT {} builds fp16 only from an fp16 ONNX model (no fp16 builder flag since "
                             "11; convert it with ModelOpt AutoCast) and this model has no fp16 tensor; use "
                             "precision fp32".format(trt.__version__))
    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            shape = concrete_shape([int(d) for d in tensor.shape], input_shape, tensor.name)
            profile.set_shape(tensor.name, shape, shape, shape)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    if hasattr(builder, "build_serialized_network"):
        serialized = builder.build_serialized_network(network, config)
    else:  # TensorRT 7
        engine = builder.build_engine(network, config)
        serialized = engine.serialize() if engine is not None else None
    if serialized is None:
        raise AgentError("TensorRT {} could not build an engine for the model (see the agent's log)".format(
            trt.__version__))
    return bytes(serialized), dynamic


def _numpy_dtype(trt: Any, np: Any, dtype: Any) -> Any:
    """numpy dtype of a TensorRT DataType (``trt.nptype`` where it exists)."""
    if hasattr(trt, "nptype"):
        return np.dtype(trt.nptype(dtype))
    names = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8",
             "UINT8": "uint8", "BOOL": "bool"}
    for name, np_name in names.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(np_name)
    raise AgentError("the engine has a tensor of type {} that the agent cannot feed".format(dtype))


class TrtRunner:
    """One TensorRT engine ready to time: the named-tensor API (``set_tensor_address`` + ``execute_async_v3``,
    TensorRT >= 8.5, the only one in 10/11) or the binding API (``execute_async_v2``, 8.2 on JetPack 4.6).

    Parameters
    ----------
    trt
        The tensorrt module.
    cuda
        A :class:`CudaApi` (its context current on this thread); the caller closes it after :meth:`close`.
    engine_bytes
        A serialized engine.
    input_shape
        Fills dynamic input dimensions.
    logger
        A ``trt.Logger``.
    """

    def __init__(self, trt: Any, cuda: CudaApi, engine_bytes: bytes, input_shape: Optional[Sequence[int]] = None,
                 logger: Any = None) -> None:
        self._cuda = cuda
        self.build_time_s = 0.0
        self.engine_cached = False
        self._runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise AgentError("TensorRT could not load the engine; delete the agent's engine cache and retry")
        self._context = self._engine.create_execution_context()
        self._stream = cuda.stream()
        self._buffers, self._hosts = [], []  # type: List[Any], List[Any]
        self._inputs, self._outputs = [], []  # type: List[Tuple[Any, Any]], List[Tuple[Any, Any]]
        self._named = hasattr(self._engine, "num_io_tensors")
        try:
            self._allocate(trt, input_shape)
        except Exception:
            self.close()
            raise
        self._start, self._end = cuda.event(), cuda.event()

    def _io(self, trt: Any) -> List[Tuple[Any, bool]]:
        engine = self._engine
        if self._named:
            return [(engine.get_tensor_name(i), engine.get_tensor_mode(engine.get_tensor_name(i)) ==
                     trt.TensorIOMode.INPUT) for i in range(engine.num_io_tensors)]
        return [(i, bool(engine.binding_is_input(i))) for i in range(engine.num_bindings)]

    def _allocate(self, trt: Any, input_shape: Optional[Sequence[int]]) -> None:
        np = _import("numpy")
        engine, context, cuda = self._engine, self._context, self._cuda
        self._bindings = []  # type: List[int]
        for key, is_input in self._io(trt):
            if self._named:
                shape, dtype = tuple(engine.get_tensor_shape(key)), engine.get_tensor_dtype(key)
            else:
                shape, dtype = tuple(engine.get_binding_shape(key)), engine.get_binding_dtype(key)
            if is_input and any(int(d) < 0 for d in shape):
                shape = concrete_shape([int(d) for d in shape], input_shape, str(key))
                if self._named:
                    context.set_input_shape(key, shape)
                else:
                    context.set_binding_shape(key, shape)
            shape = tuple(context.get_tensor_shape(key) if self._named else context.get_binding_shape(key))
            np_dtype = _numpy_dtype(trt, np, dtype)
            buffer = cuda.malloc(max(int(np.prod(shape)) * np_dtype.itemsize, 1))
            self._buffers.append(buffer)
            host = cuda.host_empty(shape, np_dtype)
            self._hosts.append(host)
            if is_input:
                host[...] = _random_input(np, shape, np_dtype)
            (self._inputs if is_input else self._outputs).append((host, buffer))
            if self._named:
                context.set_tensor_address(key, cuda.address(buffer))
            else:
                self._bindings.append(cuda.address(buffer))

    def _enqueue(self) -> None:
        handle = self._cuda.stream_handle(self._stream)
        if self._named:
            self._context.execute_async_v3(handle)
        else:
            self._context.execute_async_v2(self._bindings, handle)

    def time_compute(self) -> float:
        """One inference's GPU work, timed with CUDA events (ms)."""
        cuda = self._cuda
        cuda.record(self._start, self._stream)
        self._enqueue()
        cuda.record(self._end, self._stream)
        return cuda.elapsed_ms(self._start, self._end)

    def time_host_call(self) -> float:
        """One host-side call as the Jetson Nano dataset timed it: copy the inputs in, execute, copy the outputs
        out, synchronize (perf_counter, ms)."""
        cuda = self._cuda
        start = time.perf_counter()
        for host, buffer in self._inputs:
            cuda.htod(buffer, host, self._stream)
        self._enqueue()
        for host, buffer in self._outputs:
            cuda.dtoh(host, buffer, self._stream)
        cuda.synchronize(self._stream)
        return (time.perf_counter() - start) * 1e3

    def run_untimed(self, count: int) -> None:
        for _ in range(count):
            self._enqueue()
        self._cuda.synchronize(self._stream)

    def close(self) -> None:
        """Free buffers, the execution context, the engine and the stream (before the CUDA context goes)."""
        cuda = self._cuda
        if getattr(self, "_stream", None) is not None:
            with contextlib.suppress(Exception):  # a failed kernel: free what we can anyway
                cuda.synchronize(self._stream)
        for buffer in self._buffers:
            cuda.free(buffer)
        for host in self._hosts:
            cuda.free_host(host)
        self._buffers, self._hosts, self._inputs, self._outputs = [], [], [], []
        cuda.destroy(getattr(self, "_stream", None), [e for e in (getattr(self, "_start", None),
                                                                  getattr(self, "_end", None)) if e is not None])
        self._stream = self._start = self._end = None
        self._context = None
        self._engine = None
        self._runtime = None


# ------------------------------------------------------------------------------------- request checks
def _int_arg(obj: Dict[str, Any], key: str, default: int, low: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AgentError("{} must be an integer >= {}, got {!r}".format(key, low, value))
    return value


def _num_arg(obj: Dict[str, Any], key: str, default: float, low: float, high: float, closed: bool = False) -> float:
    value = obj.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        low <= value < high if closed else low < value < high)
    if not ok:
        raise AgentError("{} must be a number in {}{:g}, {:g}), got {!r}".format(key, "[" if closed else "(", low,
                                                                              high, value))
    return float(value)


def parse_protocol(obj: Any) -> Dict[str, Any]:
    """The protocol of a measure request with its defaults filled in; :class:`AgentError` if malformed.

    Examples
    --------
    >>> parse_protocol({"name": "jetson_dataset", "seconds": 5})
    {'name': 'jetson_dataset', 'seconds': 5.0, 'warmup': 10}
    """
    obj = {"name": "esm"} if obj is None else obj
    if not isinstance(obj, dict) or obj.get("name") not in PROTOCOLS:
        name = obj.get("name") if isinstance(obj, dict) else obj
        raise AgentError("unknown protocol {!r}; use one of {}".format(name, ", ".join(PROTOCOLS)))
    if obj["name"] == "jetson_dataset":
        return {"name": "jetson_dataset", "seconds": _num_arg(obj, "seconds", 60.0, 0.0, 1e6),
                "warmup": _int_arg(obj, "warmup", 10, 0)}
    adaptive = obj.get("adaptive", False)
    if not isinstance(adaptive, bool):
        raise AgentError("adaptive must be true or false, got {!r}".format(adaptive))
    out = {"name": "esm", "runs": _int_arg(obj, "runs", 150, 1), "warmup": _int_arg(obj, "warmup", 10, 0),
           "trim": _num_arg(obj, "trim", 0.2, 0.0, 0.5, closed=True), "adaptive": adaptive,
           "ci_rel_width": _num_arg(obj, "ci_rel_width", 0.01, 0.0, 1.0),
           "confidence": _num_arg(obj, "confidence", 0.95, 0.5, 1.0, closed=True),
           "min_runs": _int_arg(obj, "min_runs", 20, 3), "check_every": _int_arg(obj, "check_every", 5, 1)}
    if adaptive and out["min_runs"] > out["runs"]:
        raise AgentError("min_runs ({}) exceeds runs ({})".format(out["min_runs"], out["runs"]))
    return out


def parse_energy(obj: Any) -> Dict[str, Any]:
    """The energy part of a measure request with defaults; ``None`` means no meter.

    Examples
    --------
    >>> parse_energy(None)["meter"]
    'none'
    """
    obj = {"meter": "none"} if obj is None else obj
    if not isinstance(obj, dict):
        raise AgentError("energy must be an object like {\"meter\": \"auto\"}, got " + repr(obj)[:80])
    meter = obj.get("meter", "auto")
    if meter not in METERS:
        raise AgentError("unknown energy meter {!r}; use one of {}".format(meter, ", ".join(METERS)))
    return {"meter": meter, "seconds": _num_arg(obj, "seconds", 2.0, 0.0, 1e6),
            "idle_seconds": _num_arg(obj, "idle_seconds", 2.0, 0.0, 1e6),
            "tegrastats_interval_ms": _int_arg(obj, "tegrastats_interval_ms", 1000, 1)}


def _check_sha(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise AgentError("sha256 must be 64 lower-case hex digits, got {!r}".format(value if value is None
                                                                                      else str(value)[:80]))
    return value


# ------------------------------------------------------------------------------------------- protocols
def run_esm(time_one: Callable[[], float], protocol: Dict[str, Any]) -> List[float]:
    """Warm up, then time runs until ``runs`` or, in adaptive mode, until the confidence interval of the
    trimmed mean is within ``ci_rel_width`` of it (as nni_hwaware.measure.protocol.run_protocol).

    Examples
    --------
    >>> len(run_esm(lambda: 1.0, parse_protocol({"name": "esm", "runs": 30, "warmup": 0})))
    30
    """
    for _ in range(protocol["warmup"]):
        time_one()
    samples = []  # type: List[float]
    for i in range(protocol["runs"]):
        samples.append(float(time_one()))
        done = i + 1
        if (protocol["adaptive"] and protocol["min_runs"] <= done < protocol["runs"]
                and (done - protocol["min_runs"]) % protocol["check_every"] == 0):
            stats = trimmed_stats(samples, protocol["trim"], protocol["confidence"])
            half = stats["ci_half_width_ms"]
            if half is not None and half <= protocol["ci_rel_width"] * stats["mean_ms"]:
                break
    return samples


def run_for(time_one: Callable[[], float], seconds: float, warmup: int = 0) -> List[float]:
    """Warm up, then call ``time_one`` back to back for ``seconds``; the durations it returned (ms).

    Examples
    --------
    >>> len(run_for(lambda: 1.0, 0.01)) > 0
    True
    """
    for _ in range(warmup):
        time_one()
    samples = []  # type: List[float]
    end = time.perf_counter() + seconds
    while True:
        samples.append(float(time_one()))
        if time.perf_counter() >= end:
            return samples


def _main_rail(meter: Any, rails: Dict[str, float], protocol: str) -> str:
    if meter.name == "tegrastats":
        rail = pick_rail(rails, GPU_RAILS if protocol == "jetson_dataset" else TOTAL_RAILS)
        if rail is None:
            raise AgentError("tegrastats reports no {} rail (it has {}); this board's rails are not known to the "
                             "agent".format("GPU" if protocol == "jetson_dataset" else "input", sorted(rails)))
        return rail
    return next(iter(rails))


def energy_summary(meter: Any, reading: Dict[str, Any], inferences: int, window_s: float, protocol: str,
                   idle_power_w: Optional[float]) -> Dict[str, Any]:
    """The RESULT's energy object from one meter window in which ``inferences`` ran.

    ``energy_mj`` is the main rail's energy per inference (input rail for esm, above ``idle_power_w``; GPU rail
    for jetson_dataset, no idle subtraction); ``rails_*`` are the raw totals per rail.
    """
    if reading["samples"] == 0 or reading["duration_s"] <= 0:
        raise AgentError("the {} meter gave no sample in a {:.2f} s window; make the energy window longer than "
                         "its interval".format(meter.name, window_s))
    rails = reading["rails_mj"]
    rail = _main_rail(meter, rails, protocol)
    main = rails[rail]
    above = main - (idle_power_w or 0.0) * reading["duration_s"] * 1e3
    count = max(int(inferences), 1)
    return {"meter": meter.name, "rail": rail, "energy_mj": above / count, "power_w": main / 1e3 /
            reading["duration_s"], "idle_power_w": idle_power_w, "inferences": int(inferences),
            "window_s": window_s, "rails_mj_per_inference": {k: v / count for k, v in rails.items()},
            "rails_total_mj": dict(rails), "samples": reading["samples"]}


def _inference_window(runner: Any, meter: Any, seconds: float, latency_ms: float) -> Tuple[Dict[str, Any], int, float]:
    """Run inferences back to back for ``seconds`` inside one meter window."""
    chunk = max(1, int(0.02 / max(latency_ms / 1e3, 1e-6)))
    count = 0
    meter.start()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run_untimed(chunk)
        count += chunk
    window = time.perf_counter() - start
    return meter.stop(), count, window


# ------------------------------------------------------------------------------------------------ agent
def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (never a partial file)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Agent:
    """Answers requests: model cache, fingerprint, measurements (serialized by one lock).

    Parameters
    ----------
    cache_dir
        Folder of ``models/`` and ``engines/`` (default ``~/.cache/nni-hwaware-agent``).
    max_upload_bytes
        Largest model accepted.

    Examples
    --------
    >>> import tempfile
    >>> agent = Agent(tempfile.mkdtemp())
    >>> agent.handle({"id": 1, "op": "ping"})
    {'id': 1, 'ok': True, 'result': {}}
    >>> agent.handle({"id": 2, "op": "has_model", "sha256": "0" * 64})["result"]
    {'present': False}
    """

    def __init__(self, cache_dir: Optional[str] = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20) -> None:
        self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE))
        self.models_dir = os.path.join(self.cache_dir, "models")
        self.engines_dir = os.path.join(self.cache_dir, "engines")
        self.max_upload_bytes = int(max_upload_bytes)
        self.measure_lock = threading.Lock()
        self._idle_power = {}  # type: Dict[Tuple[Any, ...], float]

    # models
    def model_path(self, sha256: str) -> str:
        return os.path.join(self.models_dir, _check_sha(sha256) + ".onnx")

    def has_model(self, sha256: str) -> bool:
        return os.path.isfile(self.model_path(sha256))

    def store_model(self, sha256: str, data: bytes) -> Dict[str, Any]:
        """Check and cache an uploaded model: size (413), sha256 (400), ONNX wire format (415)."""
        path = self.model_path(sha256)
        if len(data) > self.max_upload_bytes:
            raise AgentError("model of {} bytes is over the agent's upload limit of {} MiB; restart the agent with "
                             "a larger --max-upload-mb".format(len(data), self.max_upload_bytes >> 20), 413)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise AgentError("upload's sha256 is {}, not the {} it was sent as; the transfer was corrupted or the "
                             "client hashed other bytes".format(actual, sha256), 400)
        if not is_onnx(data):
            raise AgentError("upload is not an ONNX model (no ModelProto with ir_version and graph); send the "
                             ".onnx file's bytes", 415)
        write_atomically(path, data)
        return {"sha256": sha256, "bytes": len(data)}

    def _upload(self, args: Dict[str, Any]) -> Dict[str, Any]:
        sha = _check_sha(args.get("sha256"))
        text = args.get("data_b64")
        if not isinstance(text, str):
            raise AgentError("upload needs data_b64, the model's bytes in base64")
        if len(text) * 3 // 4 > self.max_upload_bytes + 3:
            raise AgentError("model of about {} bytes is over the agent's upload limit of {} MiB".format(
                len(text) * 3 // 4, self.max_upload_bytes >> 20), 413)
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise AgentError("data_b64 is not valid base64") from None
        return self.store_model(sha, data)

    # measuring
    def _idle(self, meter: Any, energy: Dict[str, Any], gpu: int, protocol: str) -> float:
        key = (meter.name, energy["tegrastats_interval_ms"] if meter.name == "tegrastats" else None, gpu)
        if key not in self._idle_power:
            meter.start()
            time.sleep(energy["idle_seconds"])
            reading = meter.stop()
            if reading["samples"] == 0 or reading["duration_s"] <= 0:
                raise AgentError("the {} meter gave no sample in the {} s idle window; make idle_seconds longer "
                                 "than its interval".format(meter.name, energy["idle_seconds"]))
            rail = _main_rail(meter, reading["rails_mj"], protocol)
            self._idle_power[key] = reading["rails_mj"][rail] / 1e3 / reading["duration_s"]
        return self._idle_power[key]

    def _open_trt(self, sha: str, onnx: bytes, precision: str, gpu: int,
                  input_shape: Optional[List[int]]) -> Tuple[Any, Any]:
        trt = _import("tensorrt")
        if trt is None:
            raise AgentError("tensorrt cannot be imported here; on Jetson it comes with JetPack "
                             "(sudo apt-get install python3-libnvinfer), elsewhere pip install tensorrt-cu12")
        cuda = CudaApi.load(gpu)
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            path = os.path.join(self.engines_dir, "{}-{}-trt{}.engine".format(sha, precision, trt.__version__))
            start = time.perf_counter()
            for attempt in (0, 1):
                cached = attempt == 0 and os.path.isfile(path)
                if cached:
                    with open(path, "rb") as fh:
                        engine = fh.read()
                else:
                    engine, dynamic = build_trt_engine(trt, onnx, precision, input_shape=input_shape, logger=logger)
                    if not dynamic:  # an engine of a dynamic model holds one input shape: not cached
                        write_atomically(path, engine)
                try:
                    runner = TrtRunner(trt, cuda, engine, input_shape, logger)
                    break
                except AgentError:
                    if not cached:
                        raise
                    log("cached engine {} does not load; rebuilding it".format(os.path.basename(path)))
            runner.build_time_s = time.perf_counter() - start
            runner.engine_cached = cached
            return cuda, runner
        except AgentError:
            cuda.close()
            raise
        except Exception as exc:  # TensorRT raises RuntimeError/TypeError for what it cannot do
            cuda.close()
            raise AgentError("TensorRT failed: {}".format(_first_line(exc))) from None

    def measure(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The ``measure`` op: check the request, then time (and meter) under the measurement lock."""
        sha = _check_sha(args.get("sha256"))
        if not self.has_model(sha):
            raise AgentError("model {} is not on the device; upload it first".format(sha[:12]), 404)
        backend = args.get("backend", "onnxruntime")
        if backend not in BACKENDS:
            raise AgentError("unknown backend {!r}; use one of {}".format(backend, ", ".join(BACKENDS)))
        threads, gpu = _int_arg(args, "threads", 1, 1), _int_arg(args, "gpu", 0, 0)
        precision = args.get("precision", "fp32")
        if precision not in PRECISIONS or (backend == "onnxruntime" and precision != "fp32"):
            raise AgentError("precision {!r} is not available with {}; use {}".format(
                precision, backend, "fp32" if backend == "onnxruntime" else "fp32 or fp16"))
        shape = args.get("input_shape")
        if shape is not None and (not isinstance(shape, list) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise AgentError("input_shape must be a list of positive integers or null, got {!r}".format(shape))
        protocol, energy = parse_protocol(args.get("protocol")), parse_energy(args.get("energy"))
        with self.measure_lock:
            started = time.time()
            result = self._measure_locked(sha, backend, threads, gpu, precision, shape, protocol, energy)
            result["started_at"], result["finished_at"] = started, time.time()
        return result

    def _measure_locked(self, sha: str, backend: str, threads: int, gpu: int, precision: str,
                        shape: Optional[List[int]], protocol: Dict[str, Any], energy: Dict[str, Any]) -> Dict[str, Any]:
        with open(self.model_path(sha), "rb") as fh:
            onnx = fh.read()
        meter = create_meter(energy["meter"], backend, gpu, energy["tegrastats_interval_ms"])
        cuda, runner = None, None
        try:
            if backend == "onnxruntime":
                runner = OrtRunner(onnx, threads, shape)
            else:
                cuda, runner = self._open_trt(sha, onnx, precision, gpu, shape)
            result = {"build_time_s": runner.build_time_s, "engine_cached": runner.engine_cached,
                      "protocol": protocol["name"], "energy": None}
            if protocol["name"] == "esm":
                idle = self._idle(meter, energy, gpu, "esm") if meter is not None else None
                samples = run_esm(runner.time_compute, protocol)
                stats = trimmed_stats(samples, protocol["trim"], protocol["confidence"])
                result.update(latency_ms=stats["mean_ms"], runs=len(samples), kept=stats["kept"],
                              ci_half_width_ms=stats["ci_half_width_ms"], samples_ms=samples)
                if meter is not None:
                    reading, count, window = _inference_window(runner, meter, energy["seconds"], stats["mean_ms"])
                    result["energy"] = energy_summary(meter, reading, count, window, "esm", idle)
            else:
                if meter is not None:
                    for _ in range(protocol["warmup"]):
                        runner.time_host_call()
                    meter.start()
                start = time.perf_counter()
                samples = run_for(runner.time_host_call, protocol["seconds"], 0 if meter else protocol["warmup"])
                window = time.perf_counter() - start
                if meter is not None:
                    result["energy"] = energy_summary(meter, meter.stop(), len(samples), window, "jetson_dataset",
                                                      None)
                result.update(latency_ms=sum(samples) / len(samples), runs=len(samples),
                              samples_ms=samples[:MAX_RETURNED_SAMPLES])
            return result
        finally:
            if runner is not None:
                runner.close()
            if cuda is not None:
                cuda.close()
            if meter is not None:
                meter.close()

    # dispatch
    def call(self, op: Any, args: Dict[str, Any]) -> Dict[str, Any]:
        """Run one op; raises :class:`AgentError` with a one-line message."""
        if op == "info":
            return collect_fingerprint(_int_arg(args, "gpu", 0, 0))
        if op == "has_model":
            return {"present": self.has_model(_check_sha(args.get("sha256")))}
        if op == "upload":
            return self._upload(args)
        if op == "measure":
            return self.measure(args)
        if op in ("ping", "shutdown"):
            return {}
        raise AgentError("unknown op {!r}; use one of info, has_model, upload, measure, ping, shutdown".format(op))

    def handle(self, request: Any) -> Dict[str, Any]:
        """A reply object for one request object (never raises for a bad request)."""
        rid = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request, dict):
            return {"id": rid, "ok": False, "error": "a request must be a JSON object with an op"}
        try:
            return {"id": rid, "ok": True, "result": self.call(request.get("op"), request)}
        except AgentError as exc:
            return {"id": rid, "ok": False, "error": str(exc)}
        except Exception as exc:  # a bug or an unexpected runtime failure: report it, keep serving
            log("internal error: {}: {}".format(type(exc).__name__, _first_line(exc)))
            return {"id": rid, "ok": False, "error": "internal error in the agent ({}: {}); see its stderr".format(
                type(exc).__name__, _first_line(exc))}


def dumps(obj: Any) -> str:
    """JSON without NaN/inf (they become null)."""
    return json.dumps(_finite(obj), separators=(",", ":"))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------- serve-stdio
def serve_stdio(agent: Agent) -> int:
    """JSON lines: a hello line, then one reply line per request line, until EOF or ``shutdown``.

    The protocol writes to its own copy of stdout; file descriptor 1 is pointed at stderr, so nothing a runtime
    library prints can corrupt the replies.
    """
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: Dict[str, Any]) -> None:
        out.write(dumps(obj) + "\n")
        out.flush()

    try:
        emit({"agent": AGENT_NAME, "version": AGENT_VERSION, "python": platform.python_version()})
        for raw in iter(sys.stdin.buffer.readline, b""):
            raw = raw.strip()
            if not raw:
                continue
            try:
                request = json.loads(raw.decode("utf-8"))
            except ValueError:
                emit({"id": None, "ok": False, "error": "not a JSON object line: " + repr(raw[:60])})
                continue
            emit(agent.handle(request))
            if isinstance(request, dict) and request.get("op") == "shutdown":
                break
    except BrokenPipeError:  # the client went away: nothing more to say
        pass
    return 0


# ----------------------------------------------------------------------------------------- serve-http
class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    agent = None  # type: Any
    token = ""


class _Handler(BaseHTTPRequestHandler):
    """GET /info, GET /ping, GET|PUT /models/<sha256>, POST /measure; every request with the bearer token."""

    server_version = "nni-hwaware-agent/{}".format(AGENT_VERSION)
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        log("{} {}".format(self.address_string(), format % args))

    def _send(self, status: int, payload: Dict[str, Any]) -> None:
        body = (dumps(payload) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _length(self) -> Optional[int]:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return max(int(value), 0)
        except ValueError:
            return -1

    def _discard_body(self) -> None:
        """After an early reply, read and drop what the client still sends (bounded), so that closing the
        connection does not reset it before the client has read the reply."""
        left = self._pending
        self._pending = 0
        deadline = time.monotonic() + 5.0
        try:
            self.connection.settimeout(2.0)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _read_body(self, limit: int) -> bytes:
        length = self._pending
        if length is None:
            raise AgentError("Content-Length is required", 411)
        if length < 0:
            raise AgentError("Content-Length is not a number", 400)
        if length > limit:
            raise AgentError("body of {} bytes is over the limit of {} MiB; restart the agent with a larger "
                             "--max-upload-mb".format(length, max(limit >> 20, 1)), 413)
        data = self.rfile.read(length)
        self._pending = 0
        if len(data) != length:
            raise AgentError("body ended after {} of {} bytes".format(len(data), length), 400)
        return data

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        return hmac.compare_digest(token.encode("utf-8"), self.server.token.encode("utf-8"))

    def _dispatch(self, method: str) -> Dict[str, Any]:
        agent = self.server.agent
        path = self.path.split("?", 1)[0]
        model = re.match(r"^/models/([0-9a-f]{64})$", path)
        if method == "GET" and path == "/info":
            return agent.call("info", {})
        if method == "GET" and path == "/ping":
            return {}
        if method == "GET" and model:
            return {"present": agent.has_model(model.group(1))}
        if method == "PUT" and model:
            return agent.store_model(model.group(1), self._read_body(agent.max_upload_bytes))
        if method == "POST" and path == "/measure":
            try:
                request = json.loads(self._read_body(MAX_JSON_BYTES).decode("utf-8"))
            except ValueError:
                raise AgentError("the measure request body is not JSON") from None
            if not isinstance(request, dict):
                raise AgentError("the measure request must be a JSON object")
            return agent.measure(request)
        raise AgentError("no {} {} here; the agent serves GET /info, GET|PUT /models/<sha256>, POST /measure".format(
            method, path), 404)

    def _handle(self, method: str) -> None:
        self._pending = self._length()
        if not self._authorized():
            status, payload = 401, {"ok": False, "error": "missing or wrong token: send the header 'Authorization: "
                                    "Bearer TOKEN' with the token in the agent's --token-file"}
        else:
            try:
                status, payload = 200, {"ok": True, "result": self._dispatch(method)}
            except AgentError as exc:
                status, payload = exc.status, {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bug or an unexpected runtime failure: report it, keep serving
                log("internal error: {}: {}".format(type(exc).__name__, _first_line(exc)))
                status, payload = 500, {"ok": False, "error": "internal error in the agent ({}: {}); see its "
                                        "stderr".format(type(exc).__name__, _first_line(exc))}
        self._send(status, payload)
        if self._pending:
            self.close_connection = True
            self._discard_body()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


def read_token(path: str) -> str:
    """The token of a token file; :class:`AgentError` when it is missing or empty."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError("cannot read the token file {} ({}); serve-http needs --token-file with a secret, e.g. "
                         "python3 -c 'import secrets; print(secrets.token_hex(32))' > {}".format(
                             path, getattr(exc, "strerror", None) or _first_line(exc), path)) from None
    if not token:
        raise AgentError("the token file {} is empty; put a secret in it, e.g. python3 -c 'import secrets; "
                         "print(secrets.token_hex(32))' > {}".format(path, path))
    return token


def serve_http(agent: Agent, host: str, port: int, token: str) -> int:
    """Serve until SIGTERM/SIGINT; prints ``listening on http://HOST:PORT`` to stderr once bound."""
    try:
        server = _Server((host, port), _Handler)
    except (OSError, OverflowError) as exc:
        raise AgentError("cannot listen on {}:{} ({}); pick another --port or --host".format(
            host, port, getattr(exc, "strerror", None) or _first_line(exc))) from None
    server.agent, server.token = agent, token
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    shown = "[{}]".format(host) if ":" in host else host
    sys.stderr.write("listening on http://{}:{}\n".format(shown, server.server_address[1]))
    sys.stderr.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        stop_children()
    log("stopped")
    return 0


# ---------------------------------------------------------------------------------------------- check
def _is_jetson() -> bool:
    board = _read_text("/proc/device-tree/model") or ""
    return os.path.exists("/etc/nv_tegra_release") or "jetson" in board.lower()


def check_runtime(backend: str = "auto") -> Tuple[List[str], bool]:
    """Lines saying what is present and what is missing (with the command that installs it on this kind of
    board), and whether ``backend`` is usable.

    Examples
    --------
    >>> lines, usable = check_runtime("onnxruntime")
    >>> lines[0].startswith("python ")
    True
    """
    jetson = _is_jetson()
    if backend == "auto":
        backend = "tensorrt" if jetson or _import("tensorrt") is not None else "onnxruntime"
    how = {"numpy": "sudo apt-get install python3-numpy" if jetson else "pip install numpy",
           "onnxruntime": "pip3 install onnxruntime (or a JetPack onnxruntime wheel from the Jetson Zoo)" if jetson
           else "pip install onnxruntime",
           "tensorrt": "TensorRT comes with JetPack: sudo apt-get install nvidia-jetpack (python3-libnvinfer)"
           if jetson else "pip install tensorrt-cu12",
           "pycuda or cuda-python": "sudo apt-get install python3-dev && PATH=/usr/local/cuda/bin:$PATH pip3 install "
           "--user pycuda" if jetson else "pip install cuda-python"}
    versions = runtime_versions()
    found = {"numpy": versions["numpy"], "onnxruntime": versions["onnxruntime"], "tensorrt": versions["tensorrt"],
             "pycuda or cuda-python": versions["pycuda"] or versions["cuda-python"]}
    needed = ["numpy"] + (["onnxruntime"] if backend == "onnxruntime" else ["tensorrt", "pycuda or cuda-python"])
    lines = ["python {}: ok (the agent needs >= 3.6)".format(platform.python_version())]
    for piece in needed:
        lines.append("{} {}: ok".format(piece, found[piece]) if found[piece] else
                     "{}: MISSING; install with: {}".format(piece, how[piece]))
    meters = available_meters()
    lines.append("energy meters: {}".format(", ".join(meters)) if meters else "energy meters: none (optional: "
                 "tegrastats comes with L4T; pip install nvidia-ml-py for NVML on NVIDIA GPUs; RAPL needs root)")
    usable = all(found[p] for p in needed)
    lines.append("backend {}: {}".format(backend, "usable" if usable else "NOT usable until the missing pieces "
                                         "above are installed"))
    return lines, usable


# ----------------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent.py", description="nni-hwaware device agent: measures ONNX models "
                                     "on this device for a workstation (JSON over stdio/SSH or HTTP).")
    sub = parser.add_subparsers(dest="command")
    stdio = sub.add_parser("serve-stdio", help="JSON lines on stdin/stdout (run through ssh)")
    stdio.add_argument("--cache", default=None, help="model/engine cache (default ~/.cache/nni-hwaware-agent)")
    http = sub.add_parser("serve-http", help="HTTP with a bearer token")
    http.add_argument("--port", type=int, required=True, help="port (0 picks a free one)")
    http.add_argument("--token-file", required=True, help="file holding the shared token")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    http.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, help="largest model accepted")
    http.add_argument("--cache", default=None, help="model/engine cache (default ~/.cache/nni-hwaware-agent)")
    info = sub.add_parser("info", help="print this device's fingerprint as JSON")
    info.add_argument("--gpu", type=int, default=0)
    check = sub.add_parser("check", help="say which runtime pieces are missing and how to install them")
    check.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status (2 with one ``error:`` line on failure)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_usage(sys.stderr)
        sys.stderr.write("error: give a command: serve-stdio, serve-http, info or check\n")
        return 2
    try:
        if args.command == "info":
            print(json.dumps(_finite(collect_fingerprint(args.gpu)), indent=2, sort_keys=True))
            return 0
        if args.command == "check":
            lines, usable = check_runtime(args.backend)
            print("\n".join(lines))
            return 0 if usable else 1
        if args.command == "serve-stdio":
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
            return serve_stdio(Agent(args.cache))
        if args.max_upload_mb < 1:
            raise AgentError("--max-upload-mb must be at least 1")
        token = read_token(args.token_file)
        return serve_http(Agent(args.cache, args.max_upload_mb << 20), args.host, args.port, token)
    except AgentError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        return 2
    except OSError as exc:
        sys.stderr.write("error: {}\n".format(getattr(exc, "strerror", None) or _first_line(exc)))
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        stop_children()


if __name__ == "__main__":
    sys.exit(main())
