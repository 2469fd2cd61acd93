"""One interface for every hardware predictor, and the registry that loads a predictor folder by its kind.

Every predictor, ours or nn-Meter's, is a :class:`HardwarePredictor` bound to one search space and input
size: it estimates latency (and energy, where it can) of the space's architectures as
:class:`HardwareEstimate`, says what it is for (:class:`PredictorTarget`: the device, the measuring protocol,
and the space and input size it was built for, or any CNN), and, where it reads any graph, estimates ONNX
models too. The NAS layer (profiler, filter, tuner, trials, fallback) and the ``predict`` command use only this
interface.

Kinds register themselves with :func:`register_predictor` (as timm's ``register_model``); a predictor folder
declares its kind in ``predictor.json`` and :func:`load_predictor` loads it by that kind, never by guessing
from the files present. The built-in kinds' modules are imported on first use, so importing this module stays
cheap (the nnictl tuner imports it while NNI waits for it to connect).

Examples
--------
>>> predictor = load_predictor("jetson_nano", "convnet")
>>> predictor.kind, predictor.target.any_cnn, predictor.has_energy
('jetson_nano', True, True)
>>> estimate = predictor.estimate(predictor.space.default_architecture())
>>> estimate.source, estimate.energy_mj > 0
('surrogate', True)
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nni_hwaware.artifacts import read_json_object
from nni_hwaware.errors import ArtifactError, DeviceError, HwAwareError
from nni_hwaware.measure.fingerprint import fingerprint_difference
from nni_hwaware.paths import data_dir
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

METRICS = ("latency_ms", "energy_mj")


@dataclass
class HardwareEstimate:
    """Latency (ms) and energy (mJ, ``None`` when the predictor has none) of one architecture or graph.

    ``source`` (of the latency) and ``energy_source`` are ``"surrogate"`` for predictions and ``"measured"``
    when a real measurement decided. ``details`` holds what a predictor knows beyond the numbers (for the
    Jetson Nano predictor: MACs, parameters, the out-of-distribution score, layer counts).
    """

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
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse NaN or infinite numbers: a NaN compares false with every limit and would pass any budget."""
        numbers = {"latency_ms": [self.latency_ms, *self.latency_interval]}
        if self.energy_mj is not None:
            numbers["energy_mj"] = [self.energy_mj, *(self.energy_interval or ())]
        for metric, values in numbers.items():
            if not all(math.isfinite(v) for v in values):
                raise ArtifactError(
                    f"the {self.predictor or 'hardware'} predictor returned a non-finite {metric} "
                    f"({', '.join(map(str, values))}) for architecture {self.arch_hash or '?'}: its weights are "
                    "corrupt or it is broken; rebuild or retrain it")

    def measured(self, metric: str) -> bool:
        """Whether a metric's value was measured."""
        return (self.source if metric == "latency_ms" else self.energy_source) == "measured"

    def value(self, metric: str) -> float | None:
        """``latency_ms`` or ``energy_mj``."""
        if metric not in METRICS:
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


@dataclass(frozen=True)
class PredictorTarget:
    """What a predictor is for: where its numbers come from and what it may be asked about.

    ``space`` and ``input_size`` are those it was built for, or ``None`` when it reads any CNN's graph
    (``any_cnn``). ``device`` and ``protocol`` describe the measurements it predicts, in words.
    ``fingerprint`` states the device they are for in the comparable fields of a device fingerprint
    (:data:`~nni_hwaware.measure.fingerprint.COMPARABLE_KEYS`: board, backend, precision, ``protocol`` as the
    timing protocol's name such as ``"esm"`` or ``"jetson_dataset"``, ...); only what the predictor knows is
    stated, and an empty fingerprint means it cannot say (it learns from no measurement).

    Examples
    --------
    >>> target = PredictorTarget("Jetson Nano", "dataset protocol", fingerprint={"protocol": "jetson_dataset"})
    >>> target.protocol_name
    'jetson_dataset'
    """

    device: str
    protocol: str
    space: str | None = None
    input_size: int | None = None
    metrics: tuple[str, ...] = ("latency_ms",)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def any_cnn(self) -> bool:
        """Whether the predictor reads any CNN (not one space's architectures only)."""
        return self.space is None

    @property
    def protocol_name(self) -> str | None:
        """The name of the timing protocol its numbers follow (``"esm"``, ``"jetson_dataset"``), if stated."""
        name = self.fingerprint.get("protocol")
        return str(name) if name is not None else None


def protocol_name(protocol: Any) -> str:
    """The name of a measuring protocol: a name, a mapping with ``"name"``, an object with ``.name``, or the
    ESM protocol (:class:`~nni_hwaware.measure.protocol.Protocol`, which has no name).

    Examples
    --------
    >>> from nni_hwaware.measure.protocol import Protocol
    >>> protocol_name(Protocol()), protocol_name({"name": "jetson_dataset", "seconds": 60.0})
    ('esm', 'jetson_dataset')
    """
    if isinstance(protocol, str):
        return protocol
    if isinstance(protocol, Mapping):
        return str(protocol.get("name", "esm"))
    return str(getattr(protocol, "name", None) or "esm")


def measurer_fingerprint(measurer: Any) -> dict[str, Any]:
    """What a measurer measures on, as a fingerprint: its device description, with the protocol's name and the
    backend's precision added where the description leaves them out (a local measurer's does).

    Examples
    --------
    >>> from nni_hwaware.measure.runner import make_measurer
    >>> fp = measurer_fingerprint(make_measurer("onnxruntime", energy="none"))
    >>> fp["backend"], fp["protocol"], fp["precision"]
    ('onnxruntime', 'esm', 'fp32')
    """
    description = dict(getattr(measurer, "device_description", None) or {})
    description.setdefault("protocol", protocol_name(getattr(measurer, "protocol", None)))
    backend = getattr(measurer, "backend", None)
    if getattr(backend, "precision", None) is not None:
        description.setdefault("precision", backend.precision)
    return description


class HardwarePredictor(ABC):
    """Latency/energy estimates for the architectures of one space at one input size.

    Subclasses implement :meth:`_estimate_new` (and :meth:`estimate_onnx` where they read any graph), set
    ``kind`` through :func:`register_predictor`, and describe themselves in :attr:`target`. Estimates are
    cached by architecture hash; architectures are validated against the space first.

    Parameters
    ----------
    folder
        The predictor folder.
    space
        The search space whose architectures are estimated (name, file or object).
    input_size
        Input resolution (default: the one the predictor was built for, or the space's).
    """

    kind: ClassVar[str] = ""
    #: Whether :meth:`refit` can learn from new measurements.
    refittable: ClassVar[bool] = False
    #: Whether :meth:`save_refit` writes a refitted folder of this kind (else a fallback calibrates it).
    saves_refits: ClassVar[bool] = False
    #: Whether the folders of this kind hold pickles; the constructor then takes ``trust_pickles``.
    loads_pickles: ClassVar[bool] = False

    def __init__(self, folder: Path, space: str | SearchSpace | None, input_size: int | None = None) -> None:
        self.folder = Path(folder)
        self._space = space if isinstance(space, SearchSpace) or space is None else load_space(space)
        self.input_size = self._space.resolve_input_size(input_size) if self._space is not None else input_size
        self._cache: dict[str, HardwareEstimate] = {}

    @property
    def space(self) -> SearchSpace:
        """The search space whose architectures this predictor estimates."""
        if self._space is None:
            raise HwAwareError(f"the {self.kind} predictor in {self.folder} was loaded without a search space; "
                               "give the space its architectures belong to")
        return self._space

    # ---------------------------------------------------------------------------------- what it is for
    @property
    @abstractmethod
    def target(self) -> PredictorTarget:
        """The device, protocol, space and input size this predictor stands for."""

    @property
    def has_energy(self) -> bool:
        """Whether estimates include energy."""
        return "energy_mj" in self.target.metrics

    def describe(self) -> dict[str, Any]:
        """What the predictor is, for reports and ``results.json``."""
        return {"folder": str(self.folder), "kind": self.kind,
                "space": self._space.name if self._space is not None else None,
                "input_size": self.input_size, "target": asdict(self.target)}

    def check_measurer(self, measurer: Any, *, allow_device_mismatch: bool = False) -> str | None:
        """Refuse to measure with ``measurer`` when its device is not the one this predictor stands for.

        A measurement on another device would be stored and learnt from as this predictor's target. The
        measurer's fingerprint (:func:`measurer_fingerprint`) is compared with :attr:`PredictorTarget.fingerprint`
        on the fields the target states.

        Parameters
        ----------
        measurer
            A :class:`~nni_hwaware.measure.runner.Measurer` (local or remote).
        allow_device_mismatch
            Measure anyway (the override; record it wherever the measurements are learnt from).

        Returns
        -------
        str or None
            ``None`` when the devices match, else the difference (only with ``allow_device_mismatch``).

        Raises
        ------
        DeviceError
            One line naming the difference and the override, when they differ and no override is given.
        """
        expected = self.target.fingerprint
        if not expected:
            raise HwAwareError(f"the {self.kind} predictor cannot say which device it stands for; a measurement "
                               "here could be of another device")
        difference = fingerprint_difference(expected, measurer_fingerprint(measurer))
        if difference is None or allow_device_mismatch:
            return difference
        raise DeviceError(f"the {self.kind} predictor in {self.folder} {self._mismatch_text()}: {difference}; "
                          f"{self._mismatch_advice()}, or measure anyway with allow_device_mismatch=True (CLI "
                          "--allow-device-mismatch; recorded in any refitted predictor's card)")

    def _mismatch_text(self) -> str:
        """How a device mismatch is introduced in :meth:`check_measurer`'s message."""
        return "predicts another device than the one measuring"

    def _mismatch_advice(self) -> str:
        """What to do about a device mismatch (the end of :meth:`check_measurer`'s message)."""
        return "measure on the device the predictor stands for"

    # ------------------------------------------------------------------------------------- estimates
    @abstractmethod
    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        """Estimates of canonical architectures not in the cache, in order."""

    def estimate_many(self, archs: Sequence[Any]) -> list[HardwareEstimate]:
        """Estimates for architectures (validated), in input order; repeated architectures are cached."""
        canonical = [self.space.validate(a) for a in archs]
        hashes = [self.space.arch_hash(a) for a in canonical]
        todo = {h: a for h, a in zip(hashes, canonical) if h not in self._cache}
        if todo:
            for h, estimate in zip(todo, self._estimate_new(list(todo.values()), list(todo))):
                self._cache[h] = estimate
        return [self._cache[h] for h in hashes]

    def estimate(self, arch: Any) -> HardwareEstimate:
        """The estimate of one architecture."""
        return self.estimate_many([arch])[0]

    def estimate_onnx(self, onnx: str | Path | bytes, input_shape: Sequence[int] | None = None) -> HardwareEstimate:
        """The estimate of any ONNX graph, for predictors that read graphs (:attr:`PredictorTarget.any_cnn`)."""
        raise HwAwareError(f"the {self.kind} predictor in {self.folder} estimates architectures of the space "
                           f"{self.target.space!r} only, not arbitrary ONNX graphs; pass an architecture")

    # ----------------------------------------------------------------------------------- learning
    def refit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> dict[str, Any]:
        """Learn from measurements of this predictor's target; returns a record of what changed."""
        raise HwAwareError(f"the {self.kind} predictor does not learn from single measurements; rebuild it")

    def save_refit(self, out: Path, archs: Sequence[Any], latency_ms: Sequence[float],
                   notes: dict[str, Any]) -> dict[str, Any]:
        """Refit on measurements and write the result as a new predictor folder ``out`` (kinds with
        :attr:`saves_refits`); returns the refit record."""
        raise HwAwareError(f"the {self.kind} predictor does not write refits of itself; calibrate it instead "
                           "(`nni-hwaware calibrate`)")

    def _forget(self) -> None:
        """Drop cached estimates (after a refit)."""
        self._cache.clear()


# ------------------------------------------------------------------------------------------- registry
P = TypeVar("P", bound=type[HardwarePredictor])
_REGISTRY: dict[str, type[HardwarePredictor]] = {}
# The modules that register the built-in kinds, imported the first time their kind is asked for.
_BUILTIN_MODULES = {
    "esm": "nni_hwaware.esm.adapter",
    "jetson_nano": "nni_hwaware.jetson.adapter",
    "nn_meter": "nni_hwaware.nnmeter.predictor",
    "calibrated": "nni_hwaware.calibration",
}


def register_predictor(kind: str) -> Callable[[P], P]:
    """Class decorator: make a :class:`HardwarePredictor` subclass loadable as ``kind``.

    Examples
    --------
    >>> @register_predictor("doc_example")
    ... class Constant(HardwarePredictor):
    ...     target = PredictorTarget("any", "none", space=None)
    ...     def _estimate_new(self, archs, hashes):
    ...         return [HardwareEstimate(h, 1.0, (1.0, 1.0)) for h in hashes]
    >>> "doc_example" in predictor_kinds()
    True
    """
    def decorate(cls: P) -> P:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"predictor kind {kind!r} is registered already ({_REGISTRY[kind].__name__})")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls
    return decorate


def predictor_kinds() -> list[str]:
    """Every kind that can be loaded: the built-in ones and those registered since."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def predictor_class(kind: str) -> type[HardwarePredictor]:
    """The class registered for ``kind`` (importing a built-in kind's module on first use)."""
    if kind not in _REGISTRY and kind in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[kind])
    if kind not in _REGISTRY:
        raise ArtifactError(f"unknown predictor kind {kind!r}; known kinds: {', '.join(predictor_kinds())}")
    return _REGISTRY[kind]


def resolve_predictor_dir(predictor: str | Path) -> Path:
    """A predictor folder from a path or the name of a shipped predictor (``jetson_nano``).

    Relative paths are tried against the working directory, then against the repository root (or the
    installed package), so a config's ``predictors/jetson_nano`` means the same folder to the nnictl tuner
    process and to the trials.
    """
    text = str(predictor)
    candidates = [Path(text).expanduser()]
    if not Path(text).is_absolute():
        candidates += [data_dir("predictors").parent / text, data_dir("predictors") / text]
    for path in candidates:
        if path.is_dir():
            return path
    raise ArtifactError(f"predictor folder {text!r} not found; pass a folder built by `nni-hwaware build` or "
                        "the shipped predictors/jetson_nano")


def load_predictor(folder: str | Path, space: str | SearchSpace | None = None, input_size: int | None = None, *,
                   kind: str | None = None, trust_pickles: bool = False) -> HardwarePredictor:
    """Load a predictor folder by the kind it declares, bound to ``space`` at ``input_size``.

    Parameters
    ----------
    folder
        The folder (or a shipped predictor's name, ``jetson_nano``).
    space, input_size
        The search space whose architectures will be estimated, and their input resolution (default: those
        the predictor was built for; a predictor of any CNN loaded without a space estimates ONNX graphs).
    kind
        Needed only for a folder that declares no kind (nn-Meter's own predictor files: ``"nn_meter"``); a
        folder that declares another kind is refused.
    trust_pickles
        Allow loading pickles (nn-Meter's predictors are pickles, which run code when loaded).
    """
    if not isinstance(folder, (str, Path)):
        raise HwAwareError(f"predictor must be a folder path or a shipped predictor's name, got {folder!r}")
    path = resolve_predictor_dir(folder)
    meta_path = path / "predictor.json"
    declared = read_json_object(meta_path, "rebuild the predictor").get("kind") if meta_path.exists() else None
    if meta_path.exists() and not isinstance(declared, str):
        raise ArtifactError(f"{meta_path} declares no predictor kind ({declared!r}); rebuild the predictor")
    if kind is not None and declared is not None and declared != kind:
        raise ArtifactError(f"{path} holds a {declared!r} predictor, not {kind!r}")
    chosen = kind or declared
    if chosen is None:
        raise ArtifactError(f"{path} is not a predictor folder (no predictor.json declares its kind); pass a "
                            "folder built by `nni-hwaware build` or the shipped jetson_nano (nn-Meter's own "
                            "predictor files: kind nn_meter)")
    cls = predictor_class(chosen)
    options = {"trust_pickles": trust_pickles} if cls.loads_pickles else {}
    return cls(path, space, input_size, **options)
