"""Device fingerprints: what a measurement ran on, and whether two devices measure the same thing.

A fingerprint is a flat JSON object collected on the device (by the device agent,
:mod:`nni_hwaware.measure.agent`, locally or on a remote board): board model, L4T release, runtime versions,
GPU/CPU name, power mode, whether clocks are locked. With the backend configuration, precision and timing
protocol it decides whether numbers are comparable. Fields that name one machine rather than a kind of
device (host name, agent version) are recorded but never compared, so a pool of identical boards shares one
fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Fields that make two measurements comparable; anything else (host, agent version, ...) is informative.
COMPARABLE_KEYS = (
    "board", "l4t", "machine", "cpu", "cores", "gpu", "cuda", "power_mode", "clocks_locked",
    "backend", "backend_version", "threads", "accelerator", "precision", "protocol",
)


def comparable(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable part of a fingerprint (keys of :data:`COMPARABLE_KEYS` that it has).

    Examples
    --------
    >>> comparable({"host": "nano-1", "board": "NVIDIA Jetson Nano Developer Kit", "precision": "fp16"})
    {'board': 'NVIDIA Jetson Nano Developer Kit', 'precision': 'fp16'}
    """
    return {k: fingerprint[k] for k in COMPARABLE_KEYS if k in fingerprint}


def fingerprint_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    """``None`` when ``actual`` matches ``expected`` on every comparable key ``expected`` states, else a short
    phrase naming each difference (for a one-line error).

    A key ``expected`` leaves out (or sets to ``None``) is not checked: a predictor states only what it knows.

    Examples
    --------
    >>> fingerprint_difference({"board": "Jetson Nano", "precision": "fp16"},
    ...                        {"board": "Jetson Nano", "precision": "fp32", "host": "x"})
    "precision is 'fp32', expected 'fp16'"
    >>> fingerprint_difference({"board": "Jetson Nano"}, {"board": "Jetson Nano", "gpu": "NVIDIA Tegra X1"}) is None
    True
    """
    differences = []
    for key in COMPARABLE_KEYS:
        want = expected.get(key)
        if want is None:
            continue
        have = actual.get(key)
        if have != want:
            differences.append(f"{key} is {have!r}, expected {want!r}" if have is not None
                               else f"{key} is unknown, expected {want!r}")
    return "; ".join(differences) or None
