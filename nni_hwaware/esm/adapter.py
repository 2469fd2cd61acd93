"""The ``esm`` kind of the hardware-predictor interface: an ESM predictor folder behind :class:`HardwarePredictor`.

:class:`EsmHardwarePredictor` is registered as kind ``esm`` (``nni_hwaware.hardware.load_predictor`` imports
this module for it). It estimates the architectures of the one space and input size the predictor was
built for, and learns from new measurements of its target: :func:`refit_predictor` retrains the surrogate on
the folder's build data plus the measurements, and :meth:`EsmHardwarePredictor.save_refit` writes the result as
a new folder (:func:`~nni_hwaware.esm.folder.write_refit_folder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.esm.folder import ESMPredictor, read_build_data, write_refit_folder
from nni_hwaware.esm.intervals import calibrate_intervals, held_out_metrics
from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor, PredictorTarget, register_predictor
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space


def refit_predictor(predictor: ESMPredictor, folder: str | Path, extra_archs: Sequence[Any],
                    extra_latency: Sequence[float]) -> ESMPredictor:
    """A predictor refitted on its training set plus new measurements of the same target.

    The surrogate is a fresh copy with the same parameters, trained on the build's training architectures
    and ``extra_archs`` (those in the build's held-out set are left out so it stays held out); its intervals
    are calibrated by cross-validation on that training set, and it is scored on the held-out set again.
    ``info["refits"]`` records each refit, its accuracy and interval coverage.
    """
    from sklearn.base import clone

    space = predictor.space
    data = read_build_data(folder, space)
    train_archs, train_y = data["train"]
    test_archs, test_y = data["test"]
    held_out = {space.arch_hash(a) for a in test_archs}
    known = {space.arch_hash(a) for a in train_archs}
    new = [(space.validate(a), float(y)) for a, y in zip(extra_archs, extra_latency)]
    new = [(a, y) for a, y in new if space.arch_hash(a) not in held_out | known]
    archs = list(train_archs) + [a for a, _ in new]
    y = np.concatenate([train_y, np.asarray([v for _, v in new], dtype=float)])
    X = predictor.encoder.encode(archs, validate=False)
    model = clone(predictor.model).fit(X, y)
    config = predictor.info.get("config") or {}
    calibration = calibrate_intervals(model, X, y, folds=int(config.get("interval_folds", 5)),
                                      seed=int(config.get("seed", 0)))
    bins = predictor.info["bin_edges_total_blocks"][2]
    test_bins = [space.depth_bin(space.total_depth(a), bins) for a in test_archs]
    scored = held_out_metrics(model, predictor.encoder.encode(test_archs, validate=False), test_y, test_bins, bins)
    refits = [*predictor.info.get("refits", []), {"added": len(new), "train_size": len(y),
                                                  "accuracy_before": predictor.info["metrics"]["accuracy"],
                                                  "accuracy": scored["accuracy"],
                                                  "interval_coverage": scored.get("interval_coverage")}]
    info = dict(predictor.info, train_size=len(y), metrics=scored, intervals=calibration, refits=refits)
    return ESMPredictor(space, predictor.encoder, model, info)


@register_predictor("esm")
class EsmHardwarePredictor(HardwarePredictor):
    """An ESM predictor folder behind the one hardware-predictor interface (kind ``esm``; latency only).

    It estimates architectures of the one space and input size it was built for, on the device and backend
    it was measured on, and learns from new measurements of that target (:meth:`refit`).

    Parameters
    ----------
    folder
        A folder written by ``nni-hwaware build`` (or :func:`~nni_hwaware.esm.loop.run_esm`, then
        ``ESMResult.save``).
    space, input_size
        Default: those the predictor was built for; others are refused.
    """

    refittable = True
    saves_refits = True

    def __init__(self, folder: Path, space: str | SearchSpace | None = None, input_size: int | None = None) -> None:
        self.model = ESMPredictor.load(folder)
        space_obj = space if isinstance(space, SearchSpace) else self.model.space if space is None else load_space(space)
        self.model.check_compatible(space_obj, input_size)
        super().__init__(folder, space_obj, self.model.input_size)

    @property
    def target(self) -> PredictorTarget:
        """The device the predictor was built on: its fingerprint is the comparable part of the device
        description recorded at build time, with the ESM protocol (``"esm"``)."""
        from nni_hwaware.measure.fingerprint import comparable

        device = self.model.info.get("device") or {}
        where = device.get("cpu_model", device.get("accelerator", device.get("host", "unknown device")))
        protocol = (f"{self.model.info.get('backend', device.get('backend', '?'))}, "
                    f"{device.get('threads', '?')} thread(s): trimmed mean of timed runs (ESM protocol)")
        fingerprint = {**comparable(device), "protocol": "esm"} if device else {}
        return PredictorTarget(device=str(where), protocol=protocol, space=self.space.name,
                               input_size=self.input_size, fingerprint=fingerprint)

    def _mismatch_text(self) -> str:
        device = self.model.info.get("device") or {}
        return (f"was built on another device/backend ({device.get('backend', '?')}, "
                f"{device.get('cpu', device.get('host', '?'))}) than the one measuring")

    def _mismatch_advice(self) -> str:
        return ("measuring here would mix targets: build a predictor on this device, or pass the backend and "
                "threads it was built with")

    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        out = self.model.predict(archs, validate=False)
        return [HardwareEstimate(h, float(out["latency_ms"][i]),
                                 (float(out["latency_low_ms"][i]), float(out["latency_high_ms"][i])), predictor="esm")
                for i, h in enumerate(hashes)]

    def refit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> dict[str, Any]:
        """Refit the surrogate on its build data plus these measurements; later estimates use the refit."""
        self.model = refit_predictor(self.model, self.folder, archs, latency_ms)
        self._forget()
        return dict(self.model.info["refits"][-1])

    def save_refit(self, out: Path, archs: Sequence[Any], latency_ms: Sequence[float],
                   notes: dict[str, Any]) -> dict[str, Any]:
        """Refit (later estimates use the refit) and write the refitted predictor as the new folder ``out``:
        the surrogate, the build data plus these measurements, ``refit.json`` and a model card with ``notes``.

        The folder it was loaded from is left as it was; on failure the predictor keeps its old surrogate.
        """
        old_model, old_folder = self.model, self.folder
        self.refit(archs, latency_ms)
        self.model.info["refits"][-1].update(folder=str(out), arch_hashes=notes.get("arch_hashes"),
                                             store=notes.get("store"),
                                             allow_device_mismatch=notes.get("allow_device_mismatch"))
        record = dict(self.model.info["refits"][-1])
        try:
            write_refit_folder(self.model, old_folder, out, archs, latency_ms, notes)
        except BaseException:
            self.model = old_model
            self._forget()
            raise
        return record
