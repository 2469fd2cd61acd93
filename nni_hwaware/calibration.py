"""Few-shot calibration of any hardware predictor to a new device (predictor kind ``calibrated``).

A predictor built for one device (the shipped Jetson Nano one, an ESM predictor of another machine) already
ranks architectures roughly right on a similar device; a handful of that device's measurements is enough to
map its numbers onto the new device. :func:`calibrate_predictor` fits, on the log scale:

* ``shift`` (any k): ``log y = log base + c`` (c is the median log ratio);
* ``loglog`` (k >= 3): ``log y = a + b log base`` by least squares;
* ``ridge`` (k >= :data:`MIN_FEATURE_K`, 5): a ridge regression on the base's log estimate and cheap architecture
  features (log MACs, log parameters, depth; :data:`FEATURES`), its penalty picked from a grid;

and keeps the candidate with the smallest leave-one-out error on the calibration measurements themselves
(k-fold with :data:`CV_FOLDS` folds above :data:`MAX_LOO` measurements). Energy is calibrated the same way
when measurements of it are given. 90 % intervals are split-conformal style: the estimate times
``exp(+-q)`` where ``q`` is the ``ceil(0.9 (k + 1))``-th smallest absolute leave-one-out log residual.

The folder is self-contained: ``predictor.json`` (kind, version, space, input size, the device's fingerprint),
``base/`` (a copy of the base predictor folder, loaded through :func:`~nni_hwaware.hardware.load_predictor`
by its own kind), ``calibration.json`` (the fitted maps, plain numbers), ``data.jsonl`` (the measurements)
and ``MODEL_CARD.md``. No file holds code or pickles of ours.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from nni_hwaware.hardware import load_predictor
>>> base = load_predictor("jetson_nano", "convnet", 16)
>>> archs = base.space.default_architecture(), {"global": {"layer_type": "dws", "filters": 64},
...                                             "units": [{"depth": 1, "blocks": [{"kernel_size": 3, "padding": 1}]}]}
>>> out = Path(tempfile.mkdtemp()) / "calibrated"
>>> predictor = calibrate_predictor(base, archs, [2.0, 0.5], out=out)
>>> predictor.kind, predictor.params["latency_ms"]["model"], load_predictor(out).kind
('calibrated', 'shift', 'calibrated')
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.artifacts import (
    check_output_dir,
    read_json_object,
    replace_output_dir,
    require_keys,
    safe_member,
    staging_dir,
)
from nni_hwaware.errors import ArtifactError, DeviceError, HwAwareError, ParameterError
from nni_hwaware.hardware import (
    METRICS,
    HardwareEstimate,
    HardwarePredictor,
    PredictorTarget,
    load_predictor,
    register_predictor,
)
from nni_hwaware.measure.fingerprint import comparable, fingerprint_difference
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

ARTIFACT_VERSION = 1
#: Calibration measurements from which the feature ridge is a candidate (it is chosen only when its
#: leave-one-out error is the smallest). 5 was chosen on the training pool of benchmarks/transfer.py only
#: (draws of k from the pool scored on the rest of the pool): with 20, Spearman at k = 5 and 10 stayed the
#: base's own (0.92 there), with 5 it reached 0.97-0.98.
MIN_FEATURE_K = 5
#: Energy measurements needed when the base estimates no energy (a ridge on features with no prior).
MIN_ENERGY_ONLY_K = 20
#: Leave-one-out up to this many measurements, k-fold above.
MAX_LOO = 200
CV_FOLDS = 10
#: Columns of the ridge (the base's log estimate first).
FEATURES = ("log_base", "log_macs", "log_params", "depth")
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
COVERAGE = 0.9
_REQUIRED = ("kind", "version", "base", "base_kind", "space", "space_fingerprint", "input_size", "device",
             "fingerprint", "metrics", "calibration_file", "data_file")


# ----------------------------------------------------------------------------------------- features
def architecture_features(space: SearchSpace, archs: Sequence[Architecture], input_size: int) -> np.ndarray:
    """Log MACs, log parameters and total depth of each architecture (no weights are made).

    Examples
    --------
    >>> space = load_space("convnet")
    >>> architecture_features(space, [space.default_architecture()], 32).shape
    (1, 3)
    """
    rows = []
    if space.family == "convnet":
        from nni_hwaware.spaces.counting import convnet_macs_params

        for arch in archs:
            macs, params = convnet_macs_params(arch, input_size, int(space.defaults["in_channels"]),
                                               int(space.defaults["num_classes"]))
            rows.append((math.log(max(macs, 1)), math.log(max(params, 1)), space.total_depth(arch)))
        return np.asarray(rows, dtype=float).reshape(len(archs), 3)
    import torch

    from nni_hwaware.spaces import build_module
    from nni_hwaware.spaces.counting import architecture_weight_macs

    macs = architecture_weight_macs(space, archs, input_size)  # shape passes on the meta device, no weights
    for arch, m in zip(archs, macs):
        with torch.device("meta"):
            params = sum(p.numel() for p in build_module(space, arch, input_size=input_size).parameters())
        rows.append((math.log(max(m, 1.0)), math.log(max(params, 1)), space.total_depth(arch)))
    return np.asarray(rows, dtype=float).reshape(len(archs), 3)


# ---------------------------------------------------------------------------------------- the maps
def _design(model: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """The columns a fitted map reads (``X``: log base estimate first, then the features)."""
    if model["model"] == "shift":
        return X[:, :0]
    if model["model"] == "loglog":
        return X[:, :1]
    return (X - np.asarray(model["mean"])) / np.asarray(model["scale"])


def _fit(kind: str, X: np.ndarray, y: np.ndarray, alpha: float = 0.0) -> dict[str, Any]:
    """Fit one map on log values: ``X`` (log base, features...), ``y`` log of the measurements."""
    if kind == "shift":
        return {"model": "shift", "intercept": float(np.median(y - X[:, 0])), "coef": []}
    if kind == "loglog":
        A = np.column_stack([np.ones(len(y)), X[:, 0]])
        (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
        return {"model": "loglog", "intercept": float(a), "coef": [float(b)]}
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (X - mean) / scale
    zc, yc = Z - Z.mean(axis=0), y - y.mean()
    w = np.linalg.solve(zc.T @ zc + alpha * np.eye(Z.shape[1]), zc.T @ yc)
    return {"model": "ridge", "alpha": alpha, "intercept": float(y.mean() - Z.mean(axis=0) @ w),
            "coef": [float(v) for v in w], "mean": [float(v) for v in mean], "scale": [float(v) for v in scale]}


def _predict_log(model: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Log estimates of a fitted map."""
    out = model["intercept"] + _design(model, X) @ np.asarray(model["coef"], dtype=float)
    return out + X[:, 0] if model["model"] == "shift" else out


def _folds(n: int) -> tuple[str, list[np.ndarray]]:
    """Held-out index sets: one per measurement up to :data:`MAX_LOO`, else :data:`CV_FOLDS` folds."""
    if n <= MAX_LOO:
        return "leave-one-out", [np.array([i]) for i in range(n)]
    order = np.random.default_rng(0).permutation(n)
    return f"{CV_FOLDS}-fold", [order[i::CV_FOLDS] for i in range(CV_FOLDS)]


def _cross_validated(kind: str, X: np.ndarray, y: np.ndarray, alpha: float,
                     folds: list[np.ndarray]) -> np.ndarray:
    """Out-of-fold log estimates of one candidate."""
    pred = np.empty(len(y))
    for held in folds:
        keep = np.ones(len(y), dtype=bool)
        keep[held] = False
        pred[held] = _predict_log(_fit(kind, X[keep], y[keep], alpha), X[held])
    return pred


def fit_calibration(X: np.ndarray, y: np.ndarray, *, features: bool = True, ridge_only: bool = False) -> dict[str, Any]:
    """The candidate map with the smallest cross-validated log error, with its held-out figures.

    Parameters
    ----------
    X
        One row per measurement: the base's log estimate, then the architecture features.
    y
        The measurements (ms or mJ, positive).
    features
        Whether the feature ridge may be chosen (from :data:`MIN_FEATURE_K` measurements on).
    ridge_only
        Only the ridge (when the first column is not an estimate of the same quantity).

    Returns
    -------
    dict
        The map (``model``, ``intercept``, ``coef``, ...), ``cv`` (which scheme), ``cv_figures`` (MAPE %,
        Spearman, RMSE of the log, of the out-of-fold estimates), ``interval_log_halfwidth``, ``candidates``.

    Examples
    --------
    >>> X = np.log([[1.0], [2.0], [4.0], [8.0]])
    >>> fit = fit_calibration(X, np.array([3.0, 6.0, 12.0, 24.0]), features=False)
    >>> fit["model"], round(math.exp(fit["intercept"]), 3)
    ('shift', 3.0)
    """
    from nni_hwaware import metrics

    n = len(y)
    log_y = np.log(y)
    kinds = [] if ridge_only else [("shift", 0.0)] + ([("loglog", 0.0)] if n >= 3 else [])
    if (features or ridge_only) and n >= (3 if ridge_only else MIN_FEATURE_K) and X.shape[1] > 1:
        kinds += [("ridge", a) for a in RIDGE_ALPHAS]
    if n < 2:
        best = _fit("shift", X, log_y)
        return {**best, "k": n, "cv": "none (one measurement)", "cv_figures": None,
                "interval_log_halfwidth": None, "candidates": {}}
    scheme, folds = _folds(n)
    scored = {}
    for kind, alpha in kinds:
        oof = _cross_validated(kind, X, log_y, alpha, folds)
        scored[(kind, alpha)] = (float(np.sqrt(np.mean((oof - log_y) ** 2))), oof)
    (kind, alpha), (rmse, oof) = min(scored.items(), key=lambda kv: kv[1][0])
    residuals = np.sort(np.abs(oof - log_y))
    rank = min(n, math.ceil(COVERAGE * (n + 1))) - 1
    figures = {"mape": metrics.mape(y, np.exp(oof)), "spearman": metrics.spearman(y, np.exp(oof)),
               "rmse_log": rmse, "within_10": metrics.within(y, np.exp(oof))}
    return {**_fit(kind, X, log_y, alpha), "k": n, "cv": scheme,
            "cv_figures": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()},
            "interval_log_halfwidth": float(residuals[rank]),
            "candidates": {f"{k}" + (f"(alpha={a:g})" if k == "ridge" else ""): s[0]
                           for (k, a), s in scored.items()}}


# ------------------------------------------------------------------------------------ the predictor
def _finite_positive(values: Sequence[Any], what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} must be numbers") from None
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ParameterError(f"{what} must be positive finite numbers")
    return out


@register_predictor("calibrated")
class CalibratedHardwarePredictor(HardwarePredictor):
    """A base predictor's estimates mapped onto a new device by a calibration fitted on its measurements.

    Parameters
    ----------
    folder
        A folder written by :func:`calibrate_predictor` or ``nni-hwaware calibrate``.
    space, input_size
        Default: those it was calibrated for; others are refused.
    trust_pickles
        Passed on to the base predictor (nn-Meter's predictors are pickles).
    """

    refittable = True
    loads_pickles = True

    def __init__(self, folder: Path, space: str | SearchSpace | None = None, input_size: int | None = None, *,
                 trust_pickles: bool = False) -> None:
        folder = Path(folder)
        meta_path = folder / "predictor.json"
        meta = read_json_object(meta_path, "calibrate the predictor again")
        if meta.get("kind") != "calibrated":
            raise ArtifactError(f"{folder} holds a {meta.get('kind')!r} predictor, not a calibrated one")
        require_keys(meta, _REQUIRED, meta_path)
        if meta["version"] != ARTIFACT_VERSION:
            raise ArtifactError(f"{folder} is a calibrated predictor of version {meta['version']!r}, this "
                                f"version reads {ARTIFACT_VERSION}; calibrate it again")
        if (not isinstance(meta["space"], str) or not isinstance(meta["input_size"], int)
                or isinstance(meta["input_size"], bool) or not isinstance(meta["metrics"], list)
                or not set(meta["metrics"]) <= set(METRICS) or "latency_ms" not in meta["metrics"]
                or not isinstance(meta["fingerprint"], dict) or not isinstance(meta["device"], dict)):
            raise ArtifactError(f"{meta_path} has a malformed space, input_size, metrics or fingerprint; "
                                "calibrate the predictor again")
        space_obj = space if isinstance(space, SearchSpace) else load_space(space or meta["space"])
        if space_obj.name != meta["space"] or space_obj.fingerprint != meta["space_fingerprint"]:
            raise HwAwareError(f"the calibrated predictor in {folder} is for space {meta['space']!r} as it was "
                               f"when calibrated, not {space_obj.name!r}; calibrate one for this space")
        if input_size is not None and input_size != meta["input_size"]:
            raise HwAwareError(f"the calibrated predictor in {folder} is for input size {meta['input_size']}, not "
                               f"{input_size}; calibrate one at that size")
        super().__init__(folder, space_obj, meta["input_size"])
        self.meta = meta
        base_dir = safe_member(folder, meta["base"])
        if not base_dir.is_dir() or base_dir.is_symlink():
            raise ArtifactError(f"{folder} lacks its base predictor folder {meta['base']!r}; calibrate it again")
        if meta["base_kind"] == "calibrated":
            raise ArtifactError(f"{folder} names a calibrated predictor as its base; calibrate it again")
        self.base = load_predictor(base_dir, space_obj, meta["input_size"], kind=meta["base_kind"],
                                   trust_pickles=trust_pickles)
        self.params = _read_calibration(safe_member(folder, meta["calibration_file"]), meta["metrics"],
                                        self.base.has_energy)
        self._data: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------------------- what it is for
    @property
    def fingerprint(self) -> dict[str, Any]:
        """The comparable fingerprint of the device whose measurements it was calibrated on."""
        return dict(self.meta["fingerprint"])

    @property
    def target(self) -> PredictorTarget:
        device = self.meta["device"]
        where = device.get("board") or device.get("gpu") or device.get("cpu") or device.get("cpu_model") or "?"
        backend = device.get("backend", "?")
        protocol = str(self.meta.get("protocol") or f"{backend} measurements, as stored")
        return PredictorTarget(device=f"{where} ({backend})", protocol=protocol, space=self.space.name,
                               input_size=self.input_size, metrics=tuple(self.meta["metrics"]),
                               fingerprint=self.fingerprint)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_kind": self.base.kind, "fingerprint": self.fingerprint,
                "calibration": {m: {k: p.get(k) for k in ("model", "k", "cv", "cv_figures")}
                                for m, p in self.params.items() if p}}

    def _mismatch_text(self) -> str:
        return "is calibrated for another device than the one measuring"

    def _mismatch_advice(self) -> str:
        return "calibrate one for this device with `nni-hwaware calibrate`"

    def device_difference(self, description: Mapping[str, Any]) -> str | None:
        """``None`` when a device description matches the calibration's device (on what it states), else what
        differs."""
        return fingerprint_difference(self.meta["fingerprint"], description) if self.meta["fingerprint"] else None

    # ------------------------------------------------------------------------------------- estimates
    def _inputs(self, archs: Sequence[Architecture], base: Sequence[HardwareEstimate], metric: str) -> np.ndarray:
        source = metric if metric == "latency_ms" or self.base.has_energy else "latency_ms"
        values = np.log(np.maximum([float(e.value(source)) for e in base], 1e-9))
        return np.column_stack([values, architecture_features(self.space, archs, self.input_size)])

    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        base = self.base.estimate_many(archs)
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for metric, params in self.params.items():
            if params is None:
                continue
            X = self._inputs(archs, base, metric)
            log_pred = _predict_log(params, X)
            half = params.get("interval_log_halfwidth") or 0.0
            out[metric] = (np.exp(log_pred), np.exp(log_pred - half), np.exp(log_pred + half))
        estimates = []
        for i, (h, b) in enumerate(zip(hashes, base)):
            lat = out["latency_ms"]
            energy = out.get("energy_mj")
            notes = list(b.notes)
            estimates.append(HardwareEstimate(
                h, float(lat[0][i]), (float(lat[1][i]), float(lat[2][i])),
                float(energy[0][i]) if energy else None,
                (float(energy[1][i]), float(energy[2][i])) if energy else None,
                b.in_distribution, energy_source="surrogate" if energy else None, predictor="calibrated",
                notes=notes, details={**b.details, "base_latency_ms": b.latency_ms, "base_energy_mj": b.energy_mj,
                                      "base_kind": self.base.kind}))
        return estimates

    # -------------------------------------------------------------------------------------- learning
    def data(self) -> list[dict[str, Any]]:
        """The measurements it was calibrated on (``data.jsonl``), each with ``arch`` and ``latency_ms``."""
        if self._data is None:
            self._data = read_calibration_data(safe_member(self.folder, self.meta["data_file"]), self.space)
        return [dict(row) for row in self._data]

    def refit(self, archs: Sequence[Any], latency_ms: Sequence[float],
              energy_mj: Sequence[float | None] | None = None) -> dict[str, Any]:
        """Calibrate again on the old and these new measurements (of the same device); nothing is written.

        A new measurement of an architecture replaces the old one. :meth:`save` writes the result as a new
        folder.
        """
        rows = merge_rows(self.data(), self.space, archs, latency_ms, energy_mj)
        before = {m: (p or {}).get("cv_figures") for m, p in self.params.items()}
        self.params = _fit_all(self.base, self.space, self.input_size, rows)
        added = len(rows) - len(self._data or [])
        self._data = rows
        self.meta = dict(self.meta, metrics=[m for m, p in self.params.items() if p],
                         history=[*self.meta.get("history", []),
                                  {"event": "refit", "measurements": len(rows), "added": len(archs),
                                   "new_architectures": added, "at": time.time()}])
        self._forget()
        return {"added": len(archs), "train_size": len(rows), "model": self.params["latency_ms"]["model"],
                "cv_before": before.get("latency_ms"), "cv": self.params["latency_ms"]["cv_figures"]}

    def save(self, out: str | Path) -> Path:
        """Write this predictor (with any refit) as a new folder ``out``; never over its own folder."""
        out = Path(out)
        if out.resolve() == self.folder.resolve() or self.folder.resolve() in out.resolve().parents:
            raise HwAwareError(f"out {out} is the calibrated predictor's own folder; give a new folder")
        _write_folder(out, self.base, self.params, self.data(), self.meta)
        return out


# ------------------------------------------------------------------------------------ reading files
def _read_calibration(path: Path, wanted: list[str], base_has_energy: bool) -> dict[str, dict[str, Any] | None]:
    """``calibration.json``, every number checked (a forged file is refused in one line)."""
    data = read_json_object(path, "calibrate the predictor again")
    out: dict[str, dict[str, Any] | None] = {"latency_ms": None, "energy_mj": None}
    for metric in wanted:
        params = data.get(metric)
        if not isinstance(params, dict) or not _valid_map(params):
            raise ArtifactError(f"{path} has no valid {metric} calibration; calibrate the predictor again")
        if metric == "energy_mj" and not base_has_energy and params["model"] != "ridge":
            raise ArtifactError(f"{path} calibrates energy the base predictor does not estimate; calibrate again")
        out[metric] = params
    return out


def _numbers(values: Any, n: int | None = None) -> bool:
    return (isinstance(values, list) and (n is None or len(values) == n)
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def _valid_map(p: dict[str, Any]) -> bool:
    """Whether a calibration map has the shape its model needs, with finite numbers."""
    model = p.get("model")
    if model not in ("shift", "loglog", "ridge") or not _numbers([p.get("intercept")]):
        return False
    half = p.get("interval_log_halfwidth")
    if half is not None and not (_numbers([half]) and half >= 0):
        return False
    if model == "ridge":
        width = len(FEATURES)
        return (_numbers(p.get("coef"), width) and _numbers(p.get("mean"), width)
                and _numbers(p.get("scale"), width) and all(s > 0 for s in p["scale"]))
    return _numbers(p.get("coef"), 0 if model == "shift" else 1)


def read_calibration_data(path: Path, space: SearchSpace) -> list[dict[str, Any]]:
    """The rows of a ``data.jsonl``: ``arch`` (validated), ``latency_ms`` and optional ``energy_mj``."""
    rows = []
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            arch = space.validate(row["arch"])
            lat = float(row["latency_ms"])
            energy = None if row.get("energy_mj") is None else float(row["energy_mj"])
            if not math.isfinite(lat) or lat <= 0 or (energy is not None and not (math.isfinite(energy)
                                                                                  and energy > 0)):
                raise ValueError(n)
            rows.append({"arch": arch, "latency_ms": lat, "energy_mj": energy})
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; calibrate the predictor again") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, HwAwareError):
        raise ArtifactError(f"{path} is corrupt; calibrate the predictor again") from None
    return rows


# ------------------------------------------------------------------------------------ fitting, writing
def merge_rows(old: list[dict[str, Any]], space: SearchSpace, archs: Sequence[Any], latency_ms: Sequence[float],
               energy_mj: Sequence[float | None] | None) -> list[dict[str, Any]]:
    """Old rows plus new measurements (validated); a new measurement of an architecture replaces the old."""
    archs = list(archs)
    lat = _finite_positive(latency_ms, "latency_ms")
    if len(archs) != len(lat):
        raise ParameterError(f"{len(archs)} architectures but {len(lat)} latencies")
    if energy_mj is not None:
        energy_mj = list(energy_mj)
        if len(energy_mj) != len(archs):
            raise ParameterError(f"{len(archs)} architectures but {len(energy_mj)} energies")
        present = [e for e in energy_mj if e is not None]
        _finite_positive(present, "energy_mj")
    by_hash = {space.arch_hash(r["arch"]): r for r in old}
    for i, arch in enumerate(archs):
        canon = space.validate(arch)
        energy = None if energy_mj is None or energy_mj[i] is None else float(energy_mj[i])
        by_hash.pop(space.arch_hash(canon), None)
        by_hash[space.arch_hash(canon)] = {"arch": canon, "latency_ms": float(lat[i]), "energy_mj": energy}
    return list(by_hash.values())


def _fit_all(base: HardwarePredictor, space: SearchSpace, input_size: int,
             rows: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Latency (and energy where measured) maps fitted on ``rows``."""
    if not rows:
        raise ParameterError("calibration needs at least one measurement")
    archs = [r["arch"] for r in rows]
    estimates = base.estimate_many(archs)
    features = architecture_features(space, archs, input_size)
    out: dict[str, dict[str, Any] | None] = {"latency_ms": None, "energy_mj": None}
    for metric in METRICS:
        keep = [i for i, r in enumerate(rows) if r.get(metric) is not None]
        if metric == "energy_mj" and len(keep) < (3 if base.has_energy else MIN_ENERGY_ONLY_K):
            continue
        if metric == "energy_mj" and not base.has_energy:
            # no base energy: the ridge reads the log latency estimate in its place
            base_log = np.log([estimates[i].latency_ms for i in keep])
        else:
            base_log = np.log(np.maximum([float(estimates[i].value(metric)) for i in keep], 1e-9))
        X = np.column_stack([base_log, features[keep]])
        y = np.asarray([rows[i][metric] for i in keep], dtype=float)
        out[metric] = fit_calibration(X, y, features=True, ridge_only=metric == "energy_mj" and not base.has_energy)
        if metric == "energy_mj" and not base.has_energy and out[metric]["model"] != "ridge":
            out[metric] = None  # a map of the latency estimate is not an energy calibration
    return out


def calibrate_predictor(base: HardwarePredictor, archs: Sequence[Any], latency_ms: Sequence[float],
                        energy_mj: Sequence[float | None] | None = None, *, out: Path,
                        allow_device_mismatch: bool = False, fingerprint: dict[str, Any] | None = None,
                        notes: dict[str, Any] | None = None) -> CalibratedHardwarePredictor:
    """Calibrate ``base`` to a device from measurements of it, written as a new predictor folder ``out``.

    Parameters
    ----------
    base
        Any predictor bound to a space and input size (the measured architectures' space and size). A
        calibrated predictor is calibrated again from its own base on its old plus these measurements; they
        must then be of the same device (``fingerprint``) unless ``allow_device_mismatch``.
    archs, latency_ms, energy_mj
        The measured architectures, their latencies (ms) and energies (mJ; ``None`` entries allowed).
    out
        The new folder (replaced only when it holds a calibrated predictor; written atomically).
    allow_device_mismatch
        Mix measurements of another device into a calibrated base's (recorded in the card).
    fingerprint
        The measured device's description (a store's device description or an agent fingerprint); its
        comparable fields are what later refits are checked against.
    notes
        Anything to record in ``predictor.json`` and the card (e.g. where the measurements came from).

    Returns
    -------
    CalibratedHardwarePredictor
        The predictor loaded from ``out``.
    """
    if not isinstance(base, HardwarePredictor):
        raise ParameterError(f"base must be a HardwarePredictor, got {type(base).__name__}")
    out = check_output_dir(out, "calibrated", "out")
    description = dict(fingerprint or {})
    history: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    root = base
    if isinstance(base, CalibratedHardwarePredictor):
        problem = base.device_difference(description) if description else None
        if problem and not allow_device_mismatch:
            raise DeviceError(f"these measurements are of another device than the calibration in {base.folder} "
                              f"({problem}); calibrate its base ({base.folder / 'base'}) instead, or set "
                              "allow_device_mismatch to allow the mismatch explicitly",
                              mentions=("allow_device_mismatch",))
        if out.resolve() == base.folder.resolve():
            raise HwAwareError(f"out {out} is the calibrated predictor being extended; give a new folder")
        rows, root = base.data(), base.base
        history = [*base.meta.get("history", []), {"event": "extended", "from": str(base.folder),
                                                   "old_measurements": len(rows), "at": time.time()}]
        description = description or dict(base.meta["device"])
    rows = merge_rows(rows, root.space, archs, latency_ms, energy_mj)
    params = _fit_all(root, root.space, int(root.input_size), rows)
    history.append({"event": "calibrated", "measurements": len(rows), "added": len(list(archs)),
                    "allow_device_mismatch": bool(allow_device_mismatch), "at": time.time()})
    if energy_mj is not None and params["energy_mj"] is None:
        history[-1]["energy"] = (f"not calibrated: it needs {3 if root.has_energy else MIN_ENERGY_ONLY_K} measured "
                                 "energies" + ("" if root.has_energy else " (the base estimates no energy)"))
    meta = {"device": description, "fingerprint": comparable(description), "protocol": description.get("protocol"),
            "allow_device_mismatch": bool(allow_device_mismatch), "notes": dict(notes or {}), "history": history}
    _write_folder(out, root, params, rows, meta)
    return CalibratedHardwarePredictor(out, root.space, root.input_size)


def _write_folder(out: Path, base: HardwarePredictor, params: dict[str, dict[str, Any] | None],
                  rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Stage the whole folder (base copy, maps, data, card) and move it into place."""
    space = base.space
    out = check_output_dir(out, "calibrated", "out")
    tmp = staging_dir(out)
    try:
        shutil.copytree(base.folder, tmp / "base", symlinks=False,
                        ignore=shutil.ignore_patterns(".*.tmp*", "__pycache__"))
        (tmp / "calibration.json").write_text(json.dumps({m: p for m, p in params.items() if p}, indent=1))
        with (tmp / "data.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"arch_hash": space.arch_hash(row["arch"]), "arch": row["arch"],
                                     "latency_ms": row["latency_ms"], "energy_mj": row.get("energy_mj")}) + "\n")
        info = {
            **meta, "kind": "calibrated", "version": ARTIFACT_VERSION, "base": "base", "base_kind": base.kind,
            "base_target": base.describe()["target"], "space": space.name, "space_fingerprint": space.fingerprint,
            "input_size": int(base.input_size), "metrics": [m for m, p in params.items() if p],
            "calibration_file": "calibration.json", "data_file": "data.jsonl", "measurements": len(rows),
        }
        (tmp / "predictor.json").write_text(json.dumps(info, indent=1, default=str))
        (tmp / "MODEL_CARD.md").write_text(model_card(info, params))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_output_dir(tmp, out, "calibrated", "out")


def model_card(info: dict[str, Any], params: Mapping[str, dict[str, Any] | None]) -> str:
    """Markdown model card: what was calibrated on how many measurements of which device, held-out figures."""
    device = info["device"]
    fp = info["fingerprint"] or {}
    fp_text = ", ".join(f"{k} `{v}`" for k, v in fp.items()) or "none given (measurements of unknown device)"
    lines = [f"# Calibrated predictor: {info['base_kind']} -> {device.get('board') or device.get('cpu') or '?'}",
             "", f"- **Base**: `{info['base_kind']}` predictor (copied into `base/`), target "
                 f"{info['base_target'].get('device')}",
             f"- **Space / input size**: `{info['space']}` (fingerprint `{info['space_fingerprint']}`) at "
             f"{info['input_size']}x{info['input_size']}",
             f"- **Device**: {fp_text}",
             f"- **Measurements**: {info['measurements']} (`data.jsonl`)",
             f"- **Device mismatch allowed**: {info['allow_device_mismatch']}"]
    for metric, p in params.items():
        if not p:
            continue
        cv = p.get("cv_figures") or {}
        figures = (f"MAPE {cv['mape']:.1f} %, Spearman {cv['spearman']:.3f}, within +-10 % "
                   f"{cv['within_10']:.2f}" if cv and cv.get("spearman") is not None else
                   f"MAPE {cv['mape']:.1f} %" if cv else "none (too few measurements)")
        half = p.get("interval_log_halfwidth")
        lines.append(f"- **{metric}**: map `{p['model']}` from {p['k']} measurements; held-out figures "
                     f"({p['cv']} on the calibration set): {figures}; 90 % interval x/÷ "
                     + (f"{math.exp(half):.2f}" if half is not None else "- (none)"))
    skipped = [h["energy"] for h in info.get("history", []) if h.get("energy")]
    if skipped and "energy_mj" not in info["metrics"]:
        lines.append(f"- **energy_mj**: {skipped[-1]}")
    if info.get("notes"):
        lines.append(f"- **Notes**: `{json.dumps(info['notes'], default=str)}`")
    lines += ["", "## Limits", "",
              "- Valid for this space and input size on this device, measured with this backend and protocol; "
              "the predictor refuses other spaces and sizes, and refits of another device.",
              "- A `shift`/`loglog` map is monotone in the base's estimate: it corrects scale, not the base's "
              "ranking errors on the new device; a `ridge` map (a candidate from "
              f"{MIN_FEATURE_K} measurements) also reads log MACs, log parameters and depth and may correct ranking.",
              "- The held-out figures are of the chosen map, which was itself chosen by the same cross-validation "
              "(slightly optimistic), and on architectures like those measured; far from them (see the base's "
              "out-of-distribution flag) errors can be larger.",
              "- Intervals are conformal-style from the held-out residuals: about 90 % coverage for "
              "architectures like the calibration set, not a guarantee for others.", ""]
    return "\n".join(lines)
