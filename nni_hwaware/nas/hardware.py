"""Hardware estimates of architectures from a predictor folder, whatever kind of predictor it holds.

Two kinds of predictor folders stand in for the device inside a search:

* ``"kind": "esm"``: an ESM latency predictor of one search space and input size (``nni-hwaware build``); it
  refuses other spaces and input sizes.
* ``"kind": "jetson_nano"``: the shipped Jetson Nano predictor, which reads any CNN's graph; architectures
  are exported to ONNX (without weights for the ``convnet`` family) and predicted from graph features. It gives
  latency and energy, both with 90 % intervals and an out-of-distribution flag.

Every estimate is a :class:`HardwareEstimate`; its ``source`` says where the numbers came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nni_hwaware.artifacts import read_json_object
from nni_hwaware.errors import HwAwareError
from nni_hwaware.paths import data_dir
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

PREDICTOR_KINDS = ("esm", "jetson_nano")


@dataclass
class HardwareEstimate:
    """Latency (ms) and energy (mJ, ``None`` when the predictor has none) of one architecture.

    ``source`` (of the latency) and ``energy_source`` are ``"surrogate"`` for predictions and ``"measured"``
    when a real measurement decided.
    """

    def measured(self, metric: str) -> bool:
        """Whether a metric's value was measured."""
        return (self.source if metric == "latency_ms" else self.energy_source) == "measured"

    arch_hash: str
    latency_ms: float
    latency_interval: tuple[float, float]
    energy_mj: float | None = None
    energy_interval: tuple[float, float] | None = None
    in_distribution: bool = True
    source: str = "surrogate"
    energy_source: str | None = None
    predictor: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuse NaN or infinite numbers: a NaN compares false with every limit and would pass any budget."""
        import math

        numbers = {"latency_ms": [self.latency_ms, *self.latency_interval]}
        if self.energy_mj is not None:
            numbers["energy_mj"] = [self.energy_mj, *(self.energy_interval or ())]
        for metric, values in numbers.items():
            if not all(math.isfinite(v) for v in values):
                raise HwAwareError(
                    f"the {self.predictor or 'hardware'} predictor returned a non-finite {metric} "
                    f"({', '.join(map(str, values))}) for architecture {self.arch_hash or '?'}: its weights are "
                    "corrupt or it is broken; rebuild or retrain it")

    def value(self, metric: str) -> float | None:
        """``latency_ms`` or ``energy_mj``."""
        if metric not in ("latency_ms", "energy_mj"):
            raise HwAwareError(f"metric must be latency_ms or energy_mj, got {metric!r}")
        return getattr(self, metric)

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The 90 % interval of ``latency_ms`` or ``energy_mj`` (a point for measured values)."""
        return self.latency_interval if metric == "latency_ms" else self.energy_interval

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency_interval"] = list(self.latency_interval)
        out["energy_interval"] = list(self.energy_interval) if self.energy_interval else None
        return out


def resolve_predictor_dir(predictor: str | Path) -> Path:
    """A predictor folder from a path or the name of a shipped predictor (``jetson_nano``).

    Relative paths are tried against the working directory, then against the folder of shipped predictors'
    parent (the repository root in a checkout), so a config's ``predictors/jetson_nano`` works from the
    nnictl tuner process and from trials alike.
    """
    text = str(predictor)
    candidates = [Path(text).expanduser()]
    if not Path(text).is_absolute():
        candidates += [data_dir("predictors").parent / text, data_dir("predictors") / text]
    for path in candidates:
        if (path / "predictor.json").is_file():
            return path
    raise HwAwareError(f"predictor {text!r} not found (no predictor.json there); pass a folder built by "
                       "`nni-hwaware build` or the shipped predictors/jetson_nano")


def nn_meter_folder(predictor: Any) -> Path | None:
    """The nn-Meter predictor folder ``predictor`` names (``fusion_rules.json`` in it or in ``predictor/``).

    Relative paths are tried against the working directory, then the repository root, as for our folders. A
    folder with a ``predictor.json`` declares a kind of ours and is never an nn-Meter folder.
    """
    if not isinstance(predictor, (str, Path)):
        return None
    given = Path(predictor).expanduser()
    candidates = [given] if given.is_absolute() else [given, data_dir("predictors").parent / given]
    for path in candidates:
        if (path / "predictor.json").exists():
            return None
        if (path / "fusion_rules.json").is_file() or (path / "predictor" / "fusion_rules.json").is_file():
            return path
    return None


def as_hardware_predictor(predictor: Any, space: str | SearchSpace, input_size: int | None = None, *,
                          trust_pickles: bool = False) -> Any:
    """Anything with ``estimate(arch)`` as is; an nn-Meter folder as an nn-Meter estimator; else ours.

    This is how the profiler, the filter, the tuner and the trials take nn-Meter's predictors beside ours.
    nn-Meter folders hold pickles and load only with ``trust_pickles=True``.
    """
    if hasattr(predictor, "estimate"):
        return predictor
    if not isinstance(predictor, (str, Path)):
        raise HwAwareError(f"predictor must be a folder path or a shipped predictor's name, got {predictor!r}")
    folder = nn_meter_folder(predictor)
    if folder is not None:
        from nni_hwaware.nnmeter.predictor import NnMeterEstimator

        return NnMeterEstimator(folder, space, input_size, trust_pickles=trust_pickles)
    return HardwarePredictor(predictor, space, input_size)


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


def predictor_kind(folder: Path) -> str:
    """The ``kind`` recorded in a predictor folder's ``predictor.json``."""
    kind = read_json_object(folder / "predictor.json", "rebuild the predictor").get("kind")
    if kind not in PREDICTOR_KINDS:
        raise HwAwareError(f"{folder} holds a {kind!r} predictor; expected one of {', '.join(PREDICTOR_KINDS)}")
    return str(kind)


class HardwarePredictor:
    """Latency/energy estimates for architectures of one space at one input size, from a predictor folder.

    Parameters
    ----------
    predictor
        Predictor folder (or ``"jetson_nano"`` for the shipped one).
    space
        Space name, path or :class:`~nni_hwaware.spaces.schema.SearchSpace`.
    input_size
        Input resolution; default: the ESM predictor's, or the space default for the Jetson Nano predictor.

    Examples
    --------
    >>> predictor = HardwarePredictor("jetson_nano", "convnet")
    >>> est = predictor.estimate(predictor.space.default_architecture())
    >>> est.source, est.energy_mj > 0
    ('surrogate', True)
    """

    def __init__(self, predictor: str | Path, space: str | SearchSpace, input_size: int | None = None) -> None:
        self.folder = resolve_predictor_dir(predictor)
        self.kind = predictor_kind(self.folder)
        self.space = space if isinstance(space, SearchSpace) else load_space(space)
        self._cache: dict[str, HardwareEstimate] = {}
        if self.kind == "esm":
            from nni_hwaware.esm import ESMPredictor

            self._esm = ESMPredictor.load(self.folder)
            self._esm.check_compatible(self.space, input_size)
            self.input_size = self._esm.input_size
        else:
            from nni_hwaware.jetson.predictor import JetsonNanoPredictor

            self._jetson = JetsonNanoPredictor.load(self.folder)
            self.input_size = self.space.resolve_input_size(input_size)

    def use_esm(self, esm_predictor: Any) -> None:
        """Predict with another (e.g. refitted) ESM predictor of the same space and input size from now on."""
        if self.kind != "esm":
            raise HwAwareError(f"{self.folder} holds a {self.kind} predictor; only ESM predictors are refitted")
        esm_predictor.check_compatible(self.space, self.input_size)
        self._esm = esm_predictor
        self._cache.clear()

    @property
    def has_energy(self) -> bool:
        """Whether estimates include energy (the Jetson Nano predictor does, ESM predictors do not)."""
        return self.kind == "jetson_nano"

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "kind": self.kind, "space": self.space.name,
                "input_size": self.input_size}

    def _jetson_estimate(self, arch: Architecture) -> dict[str, Any]:
        shape = (1, int(self.space.defaults["in_channels"]), self.input_size, self.input_size)
        if self.space.family == "convnet":
            from nni_hwaware.jetson.graph import convnet_onnx

            return self._jetson.predict_onnx(convnet_onnx(arch, self.input_size, shape[1],
                                                          int(self.space.defaults["num_classes"])), shape)
        from nni_hwaware.spaces import build_module

        return self._jetson.predict_module(build_module(self.space, arch, input_size=self.input_size), shape)

    def estimate_many(self, archs: Sequence[Any]) -> list[HardwareEstimate]:
        """Estimates for architectures (validated), in input order; repeated architectures are cached."""
        canonical = [self.space.validate(a) for a in archs]
        hashes = [self.space.arch_hash(a) for a in canonical]
        todo = [(h, a) for h, a in zip(hashes, canonical) if h not in self._cache]
        if todo and self.kind == "esm":
            out = self._esm.predict([a for _, a in todo], validate=False)
            for i, (h, _) in enumerate(todo):
                self._cache[h] = HardwareEstimate(
                    h, float(out["latency_ms"][i]),
                    (float(out["latency_low_ms"][i]), float(out["latency_high_ms"][i])), predictor="esm")
        for h, arch in todo if self.kind == "jetson_nano" else ():
            r = self._jetson_estimate(arch)
            self._cache[h] = HardwareEstimate(
                h, float(r["latency_ms"]), tuple(map(float, r["latency_interval"])), float(r["energy_mj"]),
                tuple(map(float, r["energy_interval"])), bool(r["in_distribution"]), energy_source="surrogate",
                predictor="jetson_nano",
                notes=list(r["ood_reasons"]))
        return [self._cache[h] for h in hashes]

    def estimate(self, arch: Any) -> HardwareEstimate:
        """The estimate of one architecture."""
        return self.estimate_many([arch])[0]
