"""Loading nn-Meter predictors from local folders and predicting our architectures with them.

Two kinds of folders load the same way, through nn-Meter's own API (``loading_customized_predictor`` and
``nnMeterPredictor``), never downloading anything:

* a folder written by ``nni-hwaware nn-meter build`` (``DIR`` or ``DIR/predictor``);
* nn-Meter's official predictor files a user already has (the unzipped release folder of, e.g.,
  ``cortexA76cpu_tflite21``: one ``<kernel>.pkl`` per kernel and ``fusion_rules.json``). Passing the official
  ``name`` checks every kernel file nn-Meter lists for it, and a missing one is named in the error.

Our ONNX exports fold BatchNorm into convolutions, which leaves ``Identity`` nodes over shared weights and no
shape information; nn-Meter's ONNX converter needs neither, so :func:`prepare_onnx` removes them and runs ONNX
shape inference (what NNI's ``NnMeterProfiler`` does with onnx-simplifier).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.errors import ArtifactError, HwAwareError
from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor, PredictorTarget, register_predictor
from nni_hwaware.spaces.schema import Architecture, SearchSpace


def prepare_onnx(model: Any) -> Any:
    """An ONNX model nn-Meter's converter can read: initializer ``Identity`` nodes removed, shapes inferred."""
    import onnx

    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    initializers = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return onnx.shape_inference.infer_shapes(model)


def _predictor_folder(path: str | Path) -> Path:
    folder = Path(path)
    if (folder / "predictor" / "fusion_rules.json").is_file():
        return folder / "predictor"
    return folder


def official_kernel_list(name: str) -> list[str]:
    """Kernel files nn-Meter's ``predictors.yaml`` lists for an official predictor name."""
    from nn_meter.predictor.nn_meter_predictor import list_latency_predictors

    entries = [p for p in list_latency_predictors() if p["name"] == name]
    if not entries:
        names = sorted({p["name"] for p in list_latency_predictors()})
        raise HwAwareError(f"nn-Meter has no predictor named {name!r}; its predictors are {', '.join(names)}")
    return list(entries[-1]["kernel_predictors"])


#: Opset of nn-Meter's torch implementation (its kernels were fitted on graphs exported at this opset).
NN_METER_OPSET = 12
PICKLE_OPT_IN = ("nn-Meter predictors are pickle files, which run code when loaded; load only folders you built "
                 "or trust, and opt in: --trust-pickles on the command line, trust_pickles=True in Python, "
                 "trust_nn_meter_pickles: true in an experiment's tuner classArgs")


def check_nn_meter_folder(path: str | Path, *, trust_pickles: bool) -> Path:
    """The folder of ``<kernel>.pkl`` files, refused unless pickles are trusted and no other kind is declared.

    A folder (or the build folder above it) whose ``predictor.json`` declares a predictor kind of ours is never
    loaded as nn-Meter's, opt-in or not: its files are not meant to be unpickled.
    """
    from nni_hwaware.artifacts import declared_kind

    folder = _predictor_folder(path)
    for candidate in {Path(path), folder}:  # the build folder and the kernel folder inside it
        kind = declared_kind(candidate)
        if kind != "nn_meter" and (candidate / "predictor.json").exists():
            raise ArtifactError(f"{candidate} declares a {kind!r} predictor (predictor.json); it is not loaded as "
                                "an nn-Meter predictor")
    if not trust_pickles:
        raise ArtifactError(f"refusing to load {folder}: {PICKLE_OPT_IN}")
    return folder


def load_nn_meter_predictor(path: str | Path, name: str | None = None, *, trust_pickles: bool = False) -> Any:
    """An ``nnMeterPredictor`` from a local folder, through nn-Meter's API, with no download.

    nn-Meter's kernel regressors are pickles: they load only with ``trust_pickles=True``, and never from a
    folder that declares another predictor kind (:func:`check_nn_meter_folder`).

    Parameters
    ----------
    path
        Folder of ``<kernel>.pkl`` files and ``fusion_rules.json`` (or a ``nn-meter build`` output folder).
    name
        Official nn-Meter predictor name (e.g. ``cortexA76cpu_tflite21``) whose kernel list is checked.
    trust_pickles
        Load the pickles (they can run code): only for folders you built or trust.

    Examples
    --------
    >>> predictor = load_nn_meter_predictor("runs/nn-meter-cpu", trust_pickles=True)  # doctest: +SKIP
    """
    folder = _predictor_folder(path)
    if not folder.is_dir():
        raise HwAwareError(f"nn-Meter predictor folder {folder} does not exist; build one with "
                           "`nni-hwaware nn-meter build --out DIR` or unzip nn-Meter's predictor files there")
    rules = folder / "fusion_rules.json"
    if not rules.is_file():
        raise HwAwareError(f"nn-Meter predictor folder {folder} has no fusion_rules.json (missing file {rules})")
    if name:
        kernels = official_kernel_list(name)
    else:
        kernels = sorted(p.stem for p in folder.glob("*.pkl"))
        meta = folder.parent / "predictor.yaml"
        if meta.is_file():
            import yaml

            kernels = list(yaml.safe_load(meta.read_text())["kernel_predictors"])
    missing = [folder / f"{k}.pkl" for k in kernels if not (folder / f"{k}.pkl").is_file()]
    if missing:
        raise HwAwareError(f"nn-Meter predictor {name or folder} is missing kernel file {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if not kernels:
        raise HwAwareError(f"nn-Meter predictor folder {folder} holds no <kernel>.pkl files")
    check_nn_meter_folder(path, trust_pickles=trust_pickles)
    from nn_meter import nnMeterPredictor
    from nn_meter.predictor.utils import loading_customized_predictor

    predictors, fusion_rules = loading_customized_predictor(
        {"name": name or folder.name, "package_location": str(folder), "kernel_predictors": kernels})
    return nnMeterPredictor(predictors, fusion_rules)


def kernel_units(predictor_or_rules: Any, onnx_model: Any) -> list[dict[str, Any]]:
    """nn-Meter's kernel units of an ONNX model, with the predictor's fusion rules."""
    from nn_meter.ir_converter import model_to_graph
    from nn_meter.kernel_detector import KernelDetector

    detector = getattr(predictor_or_rules, "kd", None) or KernelDetector(str(predictor_or_rules))
    detector.load_graph(model_to_graph(prepare_onnx(onnx_model), "onnx"))
    return detector.get_kernels()


def unit_kernel_names(units: list[dict[str, Any]]) -> list[str]:
    """The predictor name of each kernel unit (nn-Meter merges conv and dwconv variants)."""
    from nn_meter.predictor.prediction.predict_by_kernel import merge_conv_kernels
    from nn_meter.predictor.prediction.utils import get_kernel_name

    return [get_kernel_name(merge_conv_kernels(u["op"])) for u in units]


def nn_meter_onnx(space: SearchSpace, arch: Architecture, input_size: int | None) -> bytes:
    """An architecture exported at nn-Meter's opset 12, like the kernels its regressors were fitted on.

    (At opset 17 hard-swish is one ``HardSwish`` node, which nn-Meter's converter does not know.)
    """
    from nni_hwaware.spaces import build_module
    from nni_hwaware.spaces.export import example_input, module_to_onnx_bytes

    model = build_module(space, arch, input_size=input_size)
    return module_to_onnx_bytes(model, example_input(space, input_size), opset=NN_METER_OPSET)


def detect_kernels(fusion_rules: str | Path, space: SearchSpace, archs: Sequence[Architecture],
                   input_size: int | None) -> set[str]:
    """Kernels nn-Meter needs to predict these architectures."""
    found: set[str] = set()
    for arch in archs:
        found.update(unit_kernel_names(kernel_units(fusion_rules, nn_meter_onnx(space, arch, input_size))))
    return found


@register_predictor("nn_meter")
class NnMeterEstimator(HardwarePredictor):
    """Latency of architectures of a space (or of any ONNX graph), predicted by an nn-Meter predictor.

    The nn-Meter baseline behind the one hardware-predictor interface (kind ``nn_meter``). Its kernel
    regressors are pickles: a folder loads only with ``trust_pickles=True``.

    Parameters
    ----------
    predictor
        A folder for :func:`load_nn_meter_predictor` or an ``nnMeterPredictor`` already loaded.
    space
        The search space (name or object).
    input_size
        Input resolution (default: the space's).
    trust_pickles
        Load a folder's pickles (see :func:`load_nn_meter_predictor`).

    Examples
    --------
    >>> estimator = NnMeterEstimator("runs/nn-meter-cpu", "resnet", 32, trust_pickles=True)  # doctest: +SKIP
    >>> estimator.estimate(estimator.space.default_architecture()).latency_ms  # doctest: +SKIP
    """

    loads_pickles = True

    def __init__(self, predictor: Any, space: str | SearchSpace | None, input_size: int | None = None, *,
                 trust_pickles: bool = False) -> None:
        is_folder = isinstance(predictor, (str, Path))
        super().__init__(_predictor_folder(predictor) if is_folder else Path("."), space, input_size)
        self.predictor = load_nn_meter_predictor(predictor, trust_pickles=trust_pickles) if is_folder else predictor

    @property
    def target(self) -> PredictorTarget:
        host = (_build_summary(self.folder) or {}).get("host") or {}
        device = host.get("cpu_model") or host.get("host") or "the device nn-Meter's files were built on"
        return PredictorTarget(device=str(device), protocol="nn-Meter: sum of per-kernel regressors "
                               "(kernels profiled alone, fusion rules detected on the device)")

    def check_measurer(self, measurer: Any, *, allow_device_mismatch: bool = False) -> str | None:
        """nn-Meter's files do not record the device precisely enough to learn from measurements."""
        raise HwAwareError("the nn-Meter baseline does not take measurements; measure against an ESM predictor "
                           "built on the device")

    def explain(self, arch: Architecture) -> dict[str, Any]:
        """Predicted latency (ms) and the kernels the predictor has no regressor for (predicted as 0)."""
        return self._explain_onnx(nn_meter_onnx(self.space, arch, self.input_size))

    def _explain_onnx(self, onnx_model: Any) -> dict[str, Any]:
        from nn_meter.predictor.prediction.predict_by_kernel import nn_predict

        units = kernel_units(self.predictor, onnx_model)
        names = unit_kernel_names(units)
        uncovered = sorted({n for n in names if n not in self.predictor.kernel_predictors})
        return {"latency_ms": float(nn_predict(self.predictor.kernel_predictors, units)), "kernels": len(units),
                "uncovered_kernels": uncovered}

    def predict(self, arch: Architecture) -> float:
        """Predicted latency in ms."""
        return self.explain(arch)["latency_ms"]

    def describe(self) -> dict[str, Any]:
        """What the predictor is, for reports."""
        return {**super().describe(), "kernels": sorted(self.predictor.kernel_predictors),
                "measurements": build_measurements(self.folder)}

    def _to_estimate(self, explained: dict[str, Any], key: str) -> HardwareEstimate:
        """nn-Meter gives no uncertainty: the interval is the point. An architecture with a kernel the
        predictor has no regressor for is marked out of distribution (nn-Meter counts such kernels as 0 ms)."""
        latency = explained["latency_ms"]
        notes = [f"no nn-Meter regressor for {k}" for k in explained["uncovered_kernels"]]
        return HardwareEstimate(key, latency, (latency, latency), in_distribution=not explained["uncovered_kernels"],
                                predictor=self.kind, notes=notes, details={"kernels": explained["kernels"]})

    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        return [self._to_estimate(self.explain(a), h) for a, h in zip(archs, hashes)]

    def estimate_onnx(self, onnx: str | Path | bytes, input_shape: Sequence[int] | None = None) -> HardwareEstimate:
        """nn-Meter's latency of any ONNX model (its kernels as the fusion rules group them)."""
        import hashlib

        import onnx as onnx_lib

        try:
            model = onnx_lib.load_from_string(onnx) if isinstance(onnx, bytes) else onnx_lib.load(str(onnx))
        except Exception as exc:  # the ONNX reader raises many types for a bad file
            raise HwAwareError(f"cannot read ONNX model {onnx if not isinstance(onnx, bytes) else '<bytes>'} "
                               f"({type(exc).__name__})") from None
        key = hashlib.sha256(model.SerializeToString()).hexdigest()[:16]
        return self._to_estimate(self._explain_onnx(model), key)


def _build_summary(folder: str | Path) -> dict[str, Any] | None:
    """``build.json`` of a folder written by ``nn-meter build`` (beside or above the kernel files), if any."""
    for path in (Path(folder) / "build.json", Path(folder).parent / "build.json"):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return data if isinstance(data, dict) else None
    return None


def build_measurements(folder: str | Path) -> int | None:
    """Models profiled to build a predictor (from ``build.json``), if known."""
    summary = _build_summary(folder)
    try:
        return int(summary["measurements"]["total"]) if summary else None
    except (KeyError, TypeError, ValueError):
        return None


def nn_meter_rows(nn_meter_dir: str, space: SearchSpace, test_archs: Sequence[Architecture], test_y: np.ndarray,
                  test_bins: np.ndarray, bins: int, size_px: int, train_archs: Sequence[Architecture] = (),
                  train_y: np.ndarray | None = None, sizes: Sequence[int] = (), *,
                  trust_pickles: bool = False) -> list[dict[str, Any]]:
    """The ``compare`` rows of an nn-Meter predictor on the held-out architectures.

    The first row is nn-Meter as built. With training architectures, one ``nn-meter-linear`` row per size adds
    the linear bias correction our lookup table gets (``y = a * nn_meter + b`` fitted on that many measured
    architectures): nn-Meter sums kernels measured alone, so per-call runtime overhead adds up.
    """
    from nni_hwaware import metrics
    from nni_hwaware.esm.surrogate import make_surrogate

    estimator = NnMeterEstimator(nn_meter_dir, space, input_size=size_px, trust_pickles=trust_pickles)
    t0 = time.perf_counter()
    explained = [estimator.explain(a) for a in test_archs]
    pred_s = time.perf_counter() - t0
    pred = np.array([e["latency_ms"] for e in explained])
    uncovered = sorted({k for e in explained for k in e["uncovered_kernels"]})
    built_with = build_measurements(nn_meter_dir) or 0
    encoding = "kernels" + (f" (no regressor: {','.join(uncovered)})" if uncovered else "")

    def row(method: str, y_pred: np.ndarray, train_size: int, fit_s: float) -> dict[str, Any]:
        s = metrics.summary(test_y, y_pred, test_bins, bins)
        return {
            "method": method, "encoding": encoding, "train_size": train_size,
            "measurements": built_with + (train_size if method != "nn-meter" else 0),
            "accuracy": s["accuracy"], "mape": s["mape"], "within_10": s["within_10"], "spearman": s["spearman"],
            "min_bin_accuracy": min((a for a in s["bin_accuracy"] if a is not None), default=float("nan")),
            "bin_accuracy": s["bin_accuracy"], "fit_s": fit_s,
            "predict_us_per_model": pred_s / len(test_archs) * 1e6,
        }

    rows = [row("nn-meter", pred, 0, 0.0)]
    usable = [n for n in sizes if n <= len(train_archs)]
    if usable and train_y is not None:
        train_pred = np.array([estimator.predict(a) for a in train_archs[: max(usable)]])
        for n in usable:
            t0 = time.perf_counter()
            model = make_surrogate("linear").fit(train_pred[:n, None], np.asarray(train_y)[:n])
            rows.append(row("nn-meter-linear", model.predict(pred[:, None]), n, time.perf_counter() - t0))
    return rows
