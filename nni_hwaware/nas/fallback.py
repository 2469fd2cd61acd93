"""The benchmark strategy's fallback: measure on the real target when the surrogate cannot decide, and learn.

A candidate is scored by the surrogate; when a constrained metric's 90 % interval straddles its effective
limit, or the architecture is out of the predictor's distribution, the candidate is measured for real and the
measured value decides. The target is a device: this machine (onnxruntime on this CPU), or a board reached
through the device agent (``device="ssh://user@jetson"`` or ``"http://host:port"``, or a list of them: a
pool). It is measured with the predictor's own protocol by default (``jetson_dataset`` for the Jetson Nano
predictor, ``esm`` for an ESM predictor), so measured and predicted numbers mean the same thing; energy is
metered whenever the device has a meter. Estimates carry ``source`` / ``energy_source`` = ``"measured"`` when a
measurement decided.

Measurements go into the measurement store with the device's fingerprint (a rerun reuses them). The device
must be the predictor's: :meth:`~nni_hwaware.hardware.HardwarePredictor.check_measurer` refuses another one
with a one-line error naming the difference, unless ``allow_device_mismatch`` (recorded in every refit's card).

A refit is written as a NEW predictor folder, never over the old one: ``<store's folder>/refits/0001/``,
``0002/`` ..., each refitted from the experiment's base predictor on every matching measurement in the store
(an ESM predictor through its own refit; any other predictor through
:func:`~nni_hwaware.calibration.calibrate_predictor`). Its card records what was added (count, architecture
hashes, the store, the device fingerprint, held-out figures before and after). ``refits/latest.json`` points
at the newest; :func:`latest_refit` is how the trials of the same experiment find it before predicting.

Examples
--------
>>> fallback = MeasuredFallback(predictor, "runs/fallback.db", device="ssh://me@jetson")   # doctest: +SKIP
>>> verdict = fallback.decide(arch, budget.check(predictor.estimate(arch)), budget)          # doctest: +SKIP
>>> fallback.refit()["folder"]                                                               # doctest: +SKIP
'runs/refits/0001'
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nni_hwaware.artifacts import write_json_atomically
from nni_hwaware.errors import HwAwareError
from nni_hwaware.hardware import measurer_fingerprint
from nni_hwaware.nas.constraints import FALLBACK_PROTOCOLS, FALLBACK_RUNS, Budget, Verdict
from nni_hwaware.nas.hardware import HardwareEstimate, HardwarePredictor
from nni_hwaware.spaces.schema import Architecture

__all__ = ["CAMPAIGN", "FALLBACK_PROTOCOLS", "FALLBACK_RUNS", "MeasuredFallback", "can_learn", "latest_refit",
           "refits_dir"]

PROTOCOL_NAMES = ("esm", "jetson_dataset")
CAMPAIGN = "nas-fallback"
LATEST = "latest.json"

def refits_dir(db: str | Path) -> Path:
    """Where the refits learnt from a store's measurements are written: ``<store's folder>/refits``."""
    return Path(db).expanduser().resolve().parent / "refits"


def make_protocol(name: str, *, runs: int = FALLBACK_RUNS, seconds: float = 60.0) -> Any:
    """The measuring protocol of a name: the ESM protocol with ``runs`` timed runs, or the Jetson dataset's
    protocol with a window of ``seconds``."""
    from nni_hwaware.measure.protocol import Protocol

    if name == "esm":
        return Protocol(runs=runs)
    if name == "jetson_dataset":
        from nni_hwaware.measure.remote import JetsonDatasetProtocol

        return JetsonDatasetProtocol(seconds=seconds)
    raise HwAwareError(f"fallback_protocol must be one of {', '.join(FALLBACK_PROTOCOLS)}, got {name!r}")


def protocols_for(predictor: HardwarePredictor, choice: str) -> tuple[str, str | None]:
    """The protocol that decides and the one also recorded (``both``), by name."""
    if choice not in FALLBACK_PROTOCOLS:
        raise HwAwareError(f"fallback_protocol must be one of {', '.join(FALLBACK_PROTOCOLS)}, got {choice!r}")
    own = predictor.target.protocol_name or "esm"
    if choice in PROTOCOL_NAMES:
        return choice, None
    if choice == "both":
        return own, next(p for p in PROTOCOL_NAMES if p != own)
    return own, None


def latest_refit(db: str | Path, base: HardwarePredictor | str | Path) -> Path | None:
    """The newest refit of ``base`` learnt from the store ``db`` (from ``refits/latest.json``), or ``None``.

    A pointer written for another base predictor (another experiment sharing the store's folder) is ignored.
    """
    pointer = refits_dir(db) / LATEST
    try:
        info = json.loads(pointer.read_text())
        folder = Path(info["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    base_folder = base.folder if isinstance(base, HardwarePredictor) else Path(base)
    if info.get("base") != str(Path(base_folder).resolve()) or not (folder / "predictor.json").is_file():
        return None
    return folder


def _row_fingerprint(row: Any) -> dict[str, Any]:
    """A stored measurement's device description, with the protocol and precision it was measured with."""
    try:
        description = json.loads(row["device_description"]) if isinstance(row["device_description"], str) \
            else dict(row["device_description"] or {})
    except (ValueError, TypeError):
        description = {}
    description.setdefault("protocol", "esm")  # stores of before the device agent: local ESM protocol only
    description.setdefault("precision", row["precision"])
    return description


class MeasuredFallback:
    """Measures undecided candidates on the target device, through the measurement store, and refits.

    Parameters
    ----------
    predictor
        The :class:`HardwarePredictor` whose undecided estimates are checked (the base of every refit).
    db
        SQLite measurement store (created if missing); refits go to :func:`refits_dir` of it.
    backend
        Measuring backend on the device (``onnxruntime``, ``torch``, ``tensorrt``).
    device
        ``None`` (this machine), ``cpu`` / ``cuda[:N]``, a device URL (``ssh://...``, ``http://...``) or a
        list of URLs (a pool).
    token_file
        The HTTP agent's token (else ``NNI_HWAWARE_TOKEN``).
    runs, seconds, threads, precision, energy
        Timed runs of the ESM protocol, window of the Jetson dataset protocol, backend threads, precision and
        energy meter (``auto``: whatever the device has; ``none``; a meter name).
    protocol
        One of :data:`FALLBACK_PROTOCOLS`: the predictor's own (default), ``esm``, ``jetson_dataset``, or
        ``both`` (the predictor's decides; the other is measured and stored beside it).
    check_device
        Refuse to measure on another device than the predictor's (default True).
    allow_device_mismatch
        Measure (and refit) anyway on another device; recorded in the measurements and every refit's card.
    refit_every
        Refit after this many fallback measurements (0: never; :meth:`refit` does it on demand).
    connect
        Connect to the device now (``False``: on the first measurement; a refitter that only reads the store,
        such as the nnictl tuner's, never connects).
    """

    def __init__(self, predictor: HardwarePredictor, db: str | Path, *, backend: str = "onnxruntime",
                 device: str | Sequence[str] | None = None, token_file: str | None = None, runs: int = FALLBACK_RUNS,
                 seconds: float = 60.0, threads: int = 1, precision: str = "fp32", energy: str = "auto",
                 protocol: str = "predictor", check_device: bool = True, allow_device_mismatch: bool = False,
                 refit_every: int = 0, connect: bool = True) -> None:
        if refit_every and not can_learn(predictor):
            raise HwAwareError(f"refit_every needs a predictor that learns from measurements; the {predictor.kind} "
                               "predictor is rebuilt instead")
        self.base = self.predictor = predictor
        self.primary, self.secondary = protocols_for(predictor, protocol)
        self._options = {"backend": backend, "device": device, "token_file": token_file, "threads": threads,
                         "precision": precision, "energy": energy}
        self._protocols = {name: make_protocol(name, runs=runs, seconds=seconds)
                           for name in (self.primary, self.secondary) if name}
        self.check_device = check_device
        self.allow_device_mismatch = allow_device_mismatch
        self.device_difference: str | None = None
        self._measurers: dict[str, Any] = {}
        self.db = Path(db).expanduser()
        self.refit_every = refit_every
        self.measured: list[HardwareEstimate] = []
        self.refits: list[dict[str, Any]] = []
        if connect:
            self.measurer  # noqa: B018 - connects and checks the device now

    # ------------------------------------------------------------------------------------------ devices
    def _measurer(self, name: str) -> Any:
        """The measurer of one protocol (made, and checked against the predictor, on first use)."""
        if name not in self._measurers:
            from nni_hwaware.measure.runner import make_measurer

            try:
                measurer = make_measurer(protocol=self._protocols[name], **self._options)
            except HwAwareError:
                if self.check_device and name == self.primary and name != "esm":
                    self._check_before_refusal()  # another device says so first: it is the bigger problem
                raise
            if self.check_device and name == self.primary:
                try:
                    self.device_difference = self._check(measurer)
                except BaseException:
                    measurer.close()
                    raise
            self._measurers[name] = measurer
        return self._measurers[name]

    def _check_before_refusal(self) -> None:
        """Check the device with the ESM protocol, when the one asked for cannot run on it (a local device
        runs no other): a device of another kind is reported rather than the protocol."""
        from nni_hwaware.measure.runner import make_measurer

        try:
            probe = make_measurer(protocol=self._protocols.get("esm") or make_protocol("esm"), **self._options)
        except HwAwareError:
            return
        try:
            self._check(probe)
        finally:
            probe.close()

    def _check(self, measurer: Any) -> str | None:
        if not self.base.target.fingerprint:  # the predictor says it cannot learn from measurements
            return self.base.check_measurer(measurer)
        return self.base.check_measurer(measurer, allow_device_mismatch=self.allow_device_mismatch)

    @property
    def measurer(self) -> Any:
        """The measurer of the deciding protocol (connects on first use)."""
        return self._measurer(self.primary)

    def close(self) -> None:
        """Close the measurers (stop agents started over SSH)."""
        for measurer in self._measurers.values():
            measurer.close()
        self._measurers.clear()

    # ---------------------------------------------------------------------------------------- measuring
    def _measure_into_store(self, measurer: Any, arch: Architecture) -> Any:
        """One architecture's measurement on ``measurer``: from the store, else measured and stored there."""
        from nni_hwaware.measure.runner import measurer_model
        from nni_hwaware.measure.store import MeasurementStore

        space, size = self.predictor.space, self.predictor.input_size
        arch_hash = space.arch_hash(arch)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        with MeasurementStore(self.db) as store:  # not held open while the device measures
            stored = store.get_measurement(space, arch_hash, measurer.device_key, measurer.backend.name, size,
                                           precision=measurer.backend.precision)
        if stored is not None:
            return stored
        result = measurer.measure(measurer_model(measurer, space, arch, size))
        extra = {"fingerprint": measurer_fingerprint(measurer),
                 **({"device_mismatch": self.device_difference} if self.device_difference else {})}
        m = measurer.to_measurement(result, space=space.name, arch_hash=arch_hash,
                                    arch_json=space.canonical_json(arch), input_size=size, campaign=CAMPAIGN,
                                    extra=extra)
        with MeasurementStore(self.db) as store:
            store.add_measurement(m, space=space, device_description=measurer.device_description)
        return m

    def measure(self, arch: Architecture, estimate: HardwareEstimate) -> HardwareEstimate:
        """The estimate with measured latency (and energy when the device meters it).

        Raises :class:`~nni_hwaware.errors.DeviceError` when the device cannot be reached or its agent died
        (callers that must not fail, such as an NNI trial, report the surrogate's numbers instead).
        """
        space = self.predictor.space
        arch = space.validate(arch)
        m = self._measure_into_store(self.measurer, arch)
        notes = [*estimate.notes, f"surrogate said {estimate.latency_ms:.3f} ms "
                 f"[{estimate.latency_interval[0]:.3f}, {estimate.latency_interval[1]:.3f}]",
                 f"measured with the {self.primary} protocol"]
        details = dict(estimate.details, measured_protocol=self.primary,
                       measured_device_key=self.measurer.device_key)
        if self.secondary:
            other = self._measure_into_store(self._measurer(self.secondary), arch)
            details[f"{self.secondary}_latency_ms"] = float(other.latency_ms)
            details[f"{self.secondary}_energy_mj"] = None if other.energy_mj is None else float(other.energy_mj)
        changes: dict[str, Any] = {"latency_ms": float(m.latency_ms),
                                   "latency_interval": (float(m.latency_ms), float(m.latency_ms)),
                                   "source": "measured", "notes": notes, "details": details}
        if m.energy_mj is not None:
            changes.update(energy_mj=float(m.energy_mj), energy_interval=(float(m.energy_mj),) * 2,
                           energy_source="measured")
        measured = dataclasses.replace(estimate, **changes)
        self.measured.append(measured)
        if self.refit_every and len(self.measured) % self.refit_every == 0:
            self.refit()
        return measured

    def decide(self, arch: Architecture, verdict: Verdict, budget: Budget) -> Verdict:
        """A verdict the measurement decides, when the surrogate's is undecided (else ``verdict`` itself)."""
        if verdict.decided:
            return verdict
        return budget.check(self.measure(arch, verdict.estimate))

    # ----------------------------------------------------------------------------------------- learning
    def training_rows(self) -> Any:
        """The store's measurements that a refit learns from: this space and input size, the deciding protocol
        (ESM-protocol outliers left out), and the predictor's device (by fingerprint; with ``allow_device_mismatch`` also
        every fallback measurement of another device)."""
        from nni_hwaware.measure.fingerprint import fingerprint_difference
        from nni_hwaware.measure.store import MeasurementStore

        # the dataset's protocol reports the mean of every call in its window, as the dataset does: a spread of
        # calls above the outlier threshold is no reason to drop it; ESM-protocol outliers are left out
        with MeasurementStore(self.db) as store:
            rows = store.dataset(space=self.base.space, input_size=self.base.input_size,
                                 include_outliers=self.primary == "jetson_dataset")
        expected = dict(self.base.target.fingerprint)
        ours = self._measurers[self.primary].device_key if self.primary in self._measurers else None

        def keep(row: Any) -> bool:
            fingerprint = _row_fingerprint(row)
            if fingerprint.get("protocol") != self.primary:
                return False
            if row["device"] == ours or fingerprint_difference(expected, fingerprint) is None:
                return True
            return self.allow_device_mismatch and row["campaign"] == CAMPAIGN

        return rows[[keep(r) for _, r in rows.iterrows()]] if len(rows) else rows

    def refit(self) -> dict[str, Any]:
        """Refit the base predictor on every matching measurement in the store, into a NEW folder.

        The folder is ``refits/NNNN`` beside the store; ``refits/latest.json`` then points at it and later
        estimates here come from it. Returns the refit record (what was added, held-out figures, ``folder``).
        """
        rows = self.training_rows()
        if not len(rows):
            raise HwAwareError(f"no usable measurement of the {self.base.kind} predictor's device with the "
                               f"{self.primary} protocol in {self.db} to refit from (outliers are left out); "
                               "measure some first (fallback), or allow_device_mismatch")
        archs = [json.loads(a) for a in rows["arch"]]
        energy = [None if e != e else float(e) for e in rows["energy_mj"]]  # NaN: not metered
        root = refits_dir(self.db)
        out = _reserve(root)
        card = {"added": len(archs), "arch_hashes": list(rows["arch_hash"]), "store": str(self.db.resolve()),
                "devices": sorted({json.dumps(_row_fingerprint(r), sort_keys=True) for _, r in rows.iterrows()}),
                "protocol": self.primary, "base": str(Path(self.base.folder).resolve()),
                "allow_device_mismatch": self.allow_device_mismatch, "device_mismatch": self.device_difference}
        card["devices"] = [json.loads(d) for d in card["devices"]]
        try:
            if self.base.saves_refits:  # it learns from measurements itself (ESM)
                record = self.base.save_refit(out, archs, rows["latency_ms"].to_numpy(), card)
            else:  # any other kind is calibrated
                record = self._calibrate(out, archs, list(rows["latency_ms"]), energy, card)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        record["folder"] = str(out)
        write_json_atomically(root / LATEST, {
            "folder": str(out), "number": int(out.name), "base": card["base"], "kind": self.predictor.kind,
            "space": self.base.space.name, "input_size": self.base.input_size, "at": time.time()}, indent=1)
        self.refits.append(record)
        return record

    def _calibrate(self, out: Path, archs: list[Any], latency: list[float], energy: list[float | None],
                   card: dict[str, Any]) -> dict[str, Any]:
        """Any other predictor calibrated to the measurements as ``out``; later estimates come from it."""
        from nni_hwaware.calibration import calibrate_predictor

        fingerprint = card["devices"][0] if len(card["devices"]) == 1 else dict(self.base.target.fingerprint)
        before = _figures([e.latency_ms for e in self.base.estimate_many(archs)], latency)
        calibrated = calibrate_predictor(
            self.base, archs, latency, energy if self.base.has_energy else None, out=out,
            allow_device_mismatch=self.allow_device_mismatch, fingerprint=fingerprint,
            notes={**card, "base_on_these_measurements": before})
        after = (getattr(calibrated, "params", {}).get("latency_ms") or {}).get("cv_figures")
        self.predictor = calibrated
        return {"added": len(archs), "kind": calibrated.kind, "train_size": len(archs),
                "allow_device_mismatch": self.allow_device_mismatch, "before": before, "after": after}


def _figures(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%) of predictions against measurements, and their rank correlation (Spearman; 2+ values)."""
    import numpy as np

    pred, true = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    figures = {"mape": float(np.mean(np.abs(pred - true) / true) * 100)}
    if len(true) > 1:
        from scipy.stats import spearmanr

        figures["spearman"] = float(spearmanr(pred, true).statistic)
    return figures


def can_learn(predictor: HardwarePredictor) -> bool:
    """Whether measurements of its device can refit ``predictor`` (an ESM refit, or a calibration of any
    predictor that states its device)."""
    return predictor.refittable or bool(predictor.target.fingerprint)


def _reserve(root: Path) -> Path:
    """A new numbered folder under ``root`` (``0001``, ``0002``, ...), created empty so no one else takes it."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
        out = root / f"{max(numbers, default=0) + 1:04d}"
        try:
            os.mkdir(out)
            return out
        except FileExistsError:
            continue
