"""How the NAS layer gets a hardware predictor from what a user or a config names, and shared paths.

The predictors, their one interface (:class:`~nni_hwaware.hardware.HardwarePredictor`,
:class:`~nni_hwaware.hardware.HardwareEstimate`) and the registry that loads a folder by the kind it declares
live in :mod:`nni_hwaware.hardware`; they are re-exported here for the NAS layer's users. The profiler, the
filter, the tuner, the trials and the fallback take either a loaded predictor or a folder (with the options
:func:`~nni_hwaware.hardware.load_predictor` takes) through :func:`as_hardware_predictor`.

Examples
--------
>>> predictor = as_hardware_predictor("jetson_nano", "convnet")
>>> predictor.kind, predictor.has_energy
('jetson_nano', True)
"""

from __future__ import annotations

from pathlib import Path

from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor, load_predictor, resolve_predictor_dir
from nni_hwaware.spaces.schema import SearchSpace

__all__ = ["HardwareEstimate", "HardwarePredictor", "as_hardware_predictor", "resolve_predictor_dir",
           "sibling_path"]


def as_hardware_predictor(predictor: HardwarePredictor | str | Path, space: str | SearchSpace | None = None,
                          input_size: int | None = None, *, kind: str | None = None,
                          trust_pickles: bool = False) -> HardwarePredictor:
    """A loaded predictor as it is; a folder (or ``"jetson_nano"``) loaded by the kind it declares.

    ``kind`` is for folders that declare none (nn-Meter's own files: ``"nn_meter"``); ``trust_pickles`` allows
    nn-Meter's pickled predictors, which run code when loaded.
    """
    if isinstance(predictor, HardwarePredictor):
        return predictor
    return load_predictor(predictor, space, input_size, kind=kind, trust_pickles=trust_pickles)


def sibling_path(predictor: str | Path, folder: Path, path: str | Path) -> Path:
    """``path`` resolved against the folder a relative ``predictor`` path was found in (else as given).

    The nnictl tuner and the trials run in different working directories; a config's relative paths
    (``runs/local_cpu.db`` beside ``runs/predictors/...``) mean the same files for both this way.
    """
    path, given = Path(path).expanduser(), Path(predictor)
    if path.is_absolute() or given.is_absolute() or len(given.parts) == 0:
        return path
    base = folder.resolve().parents[len(given.parts) - 1]
    return base / path if (base / given).resolve() == folder.resolve() else path

