"""Latency/energy budgets, the hardware settings a search shares with its trials, and the NNI strategy middleware
that keeps a multi-trial search within the budget.

A :class:`Budget` holds limits on latency (ms) and/or energy (mJ) and a safety margin: an architecture passes
when every estimated value is at most ``limit * (1 - margin)``. The verdict also says whether the surrogate is
*sure*: it is not when the 90 % interval straddles the effective limit or the architecture is out of the
predictor's distribution; :mod:`nni_hwaware.nas.fallback` measures those on the real target. A non-finite
estimate (NaN or infinity, e.g. from corrupt weights) is an error, never within budget.

:class:`HardwareSettings` is the space, predictor, input size and budget of an nnictl search, stated once in the
tuner's ``classArgs``; the tuner sends them to every trial with its parameters (under :data:`HARDWARE_KEY`), so
tuner and trials judge a candidate against the same budget.

:class:`HardwareFilter` is an ``nni.nas.strategy.middleware.Filter``: chain it after any NNI strategy
(``Chain(RegularizedEvolution(), HardwareFilter(...))``) and the strategy only ever trains models within the
budget. After ``patience`` rejected candidates in a row it stops the search with a clear message instead of
looping forever on a budget nothing meets.

This module imports neither torch nor ``nni.nas`` until :class:`HardwareFilter` is first used: the nnictl tuner
needs :class:`Budget` and :class:`HardwareSettings` within the 10 seconds NNI gives it to connect.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from nni_hwaware.errors import HwAwareError

if TYPE_CHECKING:
    from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor

_logger = logging.getLogger(__name__)
METRICS = ("latency_ms", "energy_mj")
#: The key under which the tuner sends its :class:`HardwareSettings` with each parameter set.
HARDWARE_KEY = "_hardware"
#: How the fallback measures: the predictor's own protocol (default), one by name, or ``both`` (the
#: predictor's decides, the other is stored beside it); see :mod:`nni_hwaware.nas.fallback`.
FALLBACK_PROTOCOLS = ("predictor", "esm", "jetson_dataset", "both")
#: Timed runs of a fallback measurement: fewer than a campaign's 150, since a trial waits for it.
FALLBACK_RUNS = 50
_URL_SCHEMES = ("ssh://", "http://")


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (``bool`` and strings are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_limit(name: str, value: Any, unit: str) -> None:
    if value is not None and not (is_number(value) and math.isfinite(value) and value > 0):
        raise HwAwareError(f"{name} must be a positive number of {unit}, got {value!r}")


def _check_margin(name: str, value: Any) -> None:
    if not (is_number(value) and 0 <= value < 1):
        raise HwAwareError(f"{name} must be a number in [0, 1) (0.1 keeps 10 % below the budget), got {value!r}")


@dataclass
class Verdict:
    """Whether an estimate meets a budget, and whether the surrogate can be trusted to say so.

    ``uncertain`` lists the metrics whose interval straddles the effective limit, or all constrained metrics
    when the architecture is out of distribution.
    """

    ok: bool
    estimate: HardwareEstimate
    violations: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        """True when no constrained metric is uncertain (the surrogate is sure, or the values were measured)."""
        return not self.uncertain


@dataclass
class Budget:
    """Limits on latency (ms) and/or energy (mJ), with a safety margin in [0, 1).

    Examples
    --------
    >>> Budget(latency_ms=10.0, margin=0.1).limit("latency_ms")
    9.0
    """

    latency_ms: float | None = None
    energy_mj: float | None = None
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms is None and self.energy_mj is None:
            raise HwAwareError("a hardware budget needs a latency (ms) or an energy (mJ) limit, or both")
        _check_limit("the latency_ms budget", self.latency_ms, "milliseconds")
        _check_limit("the energy_mj budget", self.energy_mj, "millijoules")
        _check_margin("the safety margin", self.margin)

    @property
    def metrics(self) -> list[str]:
        """The constrained metrics."""
        return [m for m in METRICS if getattr(self, m) is not None]

    def limit(self, metric: str) -> float:
        """The effective limit of a metric: budget times ``1 - margin``."""
        return float(getattr(self, metric)) * (1.0 - self.margin)

    def check_predictor(self, predictor: HardwarePredictor) -> None:
        """Refuse an energy budget for a predictor without energy."""
        if self.energy_mj is not None and not predictor.has_energy:
            raise HwAwareError(f"an energy budget needs a predictor with energy; {predictor.folder} "
                               f"({predictor.kind}) predicts latency only")

    def check(self, estimate: HardwareEstimate) -> Verdict:
        """The verdict on one estimate.

        Raises :class:`~nni_hwaware.errors.HwAwareError` when a constrained value is missing or not finite: a
        NaN compares false with every limit and would pass any budget.
        """
        violations, uncertain = [], []
        for metric in self.metrics:
            value = estimate.value(metric)
            if value is None:
                raise HwAwareError(f"the estimate has no {metric}; use a predictor that gives it")
            if not math.isfinite(value):
                raise HwAwareError(
                    f"the predictor returned a non-finite {metric} ({value}) for architecture "
                    f"{estimate.arch_hash or '?'}: its weights are corrupt or it is broken; rebuild or retrain it")
            limit = self.limit(metric)
            if value > limit:
                violations.append(metric)
            interval = estimate.interval(metric)
            if not estimate.measured(metric) and (
                    not estimate.in_distribution or (interval is not None and interval[0] <= limit < interval[1])):
                uncertain.append(metric)
        return Verdict(not violations, estimate, violations, uncertain)

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "energy_mj": self.energy_mj, "margin": self.margin}


@dataclass
class HardwareSettings:
    """What the tuner and the trials of an nnictl search share: space, predictor, input size and budget.

    Stated once, in the tuner's ``classArgs`` (keys as the field names); the tuner sends
    :meth:`to_dict` with every parameter set under :data:`HARDWARE_KEY`, adding ``predictor_folder`` (the folder
    it loaded) and the resolved ``input_size``, and each trial rebuilds it with :meth:`from_mapping`.

    Examples
    --------
    >>> s = HardwareSettings.from_mapping({"space": "convnet", "predictor": "jetson_nano", "latency_budget_ms": 30})
    >>> s.budget().limit("latency_ms")
    30.0
    """

    space: str
    predictor: str
    latency_budget_ms: float | None = None
    energy_budget_mj: float | None = None
    margin: float = 0.0
    input_size: int | None = None
    trust_nn_meter_pickles: bool = False
    predictor_folder: str | None = None
    #: Where undecided candidates are measured: a device URL (``ssh://user@jetson``, ``http://host:port``), a
    #: list of URLs (a pool), or ``cpu`` / ``cuda[:N]`` of the trial's machine.
    fallback_device: str | list[str] | None = None
    #: The HTTP agent's token file (else the trials' ``NNI_HWAWARE_TOKEN``).
    token_file: str | None = None
    #: One of :data:`FALLBACK_PROTOCOLS`.
    fallback_protocol: str = "predictor"
    #: Measure and learn on another device than the predictor's (recorded in every refit's card).
    allow_device_mismatch: bool = False
    #: The measurement store the trials measure into and refits learn from (``refits/`` beside it).
    refit_db: str | None = None
    #: Backend on the fallback device and its threads.
    backend: str | None = None
    threads: int | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The field names, as they appear in ``classArgs`` and under :data:`HARDWARE_KEY`."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Any, name: Callable[[str], str] = str, *, what: str = "the hardware settings",
                     require_budget: bool = True) -> HardwareSettings:
        """Settings from a mapping, every value checked; keys other than the fields are ignored.

        ``name(key)`` is how a key is called in messages (``classArgs latency_budget_ms``, ``--margin``).
        """
        if not isinstance(values, Mapping):
            raise HwAwareError(f"{what} must be a mapping of settings, got {type(values).__name__} {values!r:.60}")
        for key in ("space", "predictor"):
            if key not in values or values[key] is None:
                raise HwAwareError(f"{what} lack {name(key)}; see experiments/quickstart.yml")
            if not isinstance(values[key], str) or not values[key].strip():
                kind = "a space name such as convnet" if key == "space" else \
                    "a predictor folder or a shipped predictor's name such as jetson_nano"
                raise HwAwareError(f"{name(key)} must be {kind}, got {values[key]!r}")
        _check_limit(name("latency_budget_ms"), values.get("latency_budget_ms"), "milliseconds")
        _check_limit(name("energy_budget_mj"), values.get("energy_budget_mj"), "millijoules")
        if require_budget and values.get("latency_budget_ms") is None and values.get("energy_budget_mj") is None:
            raise HwAwareError(f"{what} need a budget: {name('latency_budget_ms')} (ms), "
                               f"{name('energy_budget_mj')} (mJ) or both")
        margin = values.get("margin", 0.0)
        _check_margin(name("margin"), 0.0 if margin is None else margin)
        size = values.get("input_size")
        if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
            raise HwAwareError(f"{name('input_size')} must be a whole number of pixels (at least 1), got {size!r}")
        trust = values.get("trust_nn_meter_pickles")
        if trust is not None and not isinstance(trust, bool):
            raise HwAwareError(f"{name('trust_nn_meter_pickles')} must be true or false, got {trust!r}")
        folder = values.get("predictor_folder")
        if folder is not None and not isinstance(folder, str):
            raise HwAwareError(f"{name('predictor_folder')} must be a folder path, got {folder!r}")
        _check_fallback(values, name)
        picked = {k: values[k] for k in cls.field_names() if values.get(k) is not None}
        for key in ("latency_budget_ms", "energy_budget_mj", "margin"):
            if key in picked:
                picked[key] = float(picked[key])
        return cls(**picked)

    @property
    def fallback_devices(self) -> list[str]:
        """``fallback_device`` as a list (empty when unset)."""
        device = self.fallback_device
        return [] if device is None else [device] if isinstance(device, str) else list(device)

    def budget(self) -> Budget | None:
        """The :class:`Budget`, or ``None`` when no limit is set (a trial run by hand without one)."""
        if self.latency_budget_ms is None and self.energy_budget_mj is None:
            return None
        return Budget(self.latency_budget_ms, self.energy_budget_mj, self.margin)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict; the fallback's (:data:`FALLBACK_KEYS`) only where they are set."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: v for k, v in asdict(self).items() if k not in FALLBACK_KEYS or v != defaults[k]}


#: The settings of the fallback measurement and the refits (left out of :meth:`HardwareSettings.to_dict` unset).
FALLBACK_KEYS = ("fallback_device", "token_file", "fallback_protocol", "allow_device_mismatch", "refit_db",
                 "backend", "threads")


#: Marks a string of the settings sent to the trials that :func:`wire_encode` percent-encoded.
_WIRE_PREFIX = "pct:"


def wire_safe_text(text: str) -> str:
    """``text`` without ``//`` and ``#``, for what a trial reports to NNI (notes naming a device URL).

    NNI's manager hands trial results and parameters back to the tuner inside a JSON string inside a JSON
    string, and the tuner's side parses it with comment stripping (json_tricks): ``//`` or ``#`` there cut the
    message and break the tuner's connection (NNI 3.0).

    Examples
    --------
    >>> wire_safe_text("device http://127.0.0.1:8000 is down")
    'device http:/%2F127.0.0.1:8000 is down'
    """
    return text.replace("//", "/%2F").replace("#", "%23")


def wire_encode(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with every string holding ``//`` or ``#`` (a device URL) percent-encoded, so that they
    survive NNI's round trip (see :func:`wire_safe_text`); :func:`wire_decode` restores them.

    Examples
    --------
    >>> wire_decode(wire_encode({"fallback_device": ["ssh://a", "ssh://b"], "margin": 0.1}))
    {'fallback_device': ['ssh://a', 'ssh://b'], 'margin': 0.1}
    """
    from urllib.parse import quote

    def encode(value: Any) -> Any:
        if isinstance(value, str) and ("//" in value or "#" in value or value.startswith(_WIRE_PREFIX)):
            return _WIRE_PREFIX + quote(value, safe="")
        return [encode(v) for v in value] if isinstance(value, list) else value

    return {k: encode(v) for k, v in settings.items()}


def wire_decode(settings: Any) -> Any:
    """Settings as :func:`wire_encode` had them (anything else is returned as it is, for the checks)."""
    from urllib.parse import unquote

    def decode(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_WIRE_PREFIX):
            return unquote(value[len(_WIRE_PREFIX):])
        return [decode(v) for v in value] if isinstance(value, list) else value

    return {k: decode(v) for k, v in settings.items()} if isinstance(settings, Mapping) else settings


def _check_fallback(values: Mapping[str, Any], name: Callable[[str], str]) -> None:
    """Check the fallback settings of :class:`HardwareSettings` (types and values; nothing connects)."""
    device = values.get("fallback_device")
    if device is not None:
        devices = [device] if isinstance(device, str) else device
        if not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d.strip() for d in devices):
            raise HwAwareError(f"{name('fallback_device')} must be a device URL (ssh://user@host, "
                               f"http://host:port) or a list of them, got {device!r}")
        local = [d for d in devices if not d.startswith(_URL_SCHEMES)]
        if local and (len(devices) > 1 or not (local[0] == "cpu" or local[0].startswith("cuda"))):
            raise HwAwareError(f"{name('fallback_device')} must be ssh://[user@]host[:port], http://host:port, a "
                               f"list of such URLs (a pool), or cpu / cuda[:N] of the trial's machine, got {device!r}")
    for key in ("token_file", "refit_db", "backend"):
        value = values.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise HwAwareError(f"{name(key)} must be a string, got {value!r}")
    if values.get("token_file") is not None and not any(
            d.startswith("http://") for d in ([device] if isinstance(device, str) else device or [])):
        raise HwAwareError(f"{name('token_file')} is the token of an http:// device agent; set "
                           f"{name('fallback_device')} to http://HOST:PORT or remove it")
    protocol = values.get("fallback_protocol")
    if protocol is not None and protocol not in FALLBACK_PROTOCOLS:
        raise HwAwareError(f"{name('fallback_protocol')} must be one of {', '.join(FALLBACK_PROTOCOLS)}, got "
                           f"{protocol!r}")
    allow = values.get("allow_device_mismatch")
    if allow is not None and not isinstance(allow, bool):
        raise HwAwareError(f"{name('allow_device_mismatch')} must be true or false, got {allow!r}")
    threads = values.get("threads")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise HwAwareError(f"{name('threads')} must be a whole number of at least 1, got {threads!r}")


def _define_hardware_filter() -> type:
    """The :class:`HardwareFilter` class, defined on first use because its base class imports torch."""
    from nni.nas.strategy.middleware import Filter

    from nni_hwaware.nas.hardware import as_hardware_predictor
    from nni_hwaware.spaces.nni_space import sample_to_arch

    class HardwareFilter(Filter):
        """``Filter`` middleware that submits only models whose surrogate estimate meets a :class:`Budget`.

        Parameters
        ----------
        model_space
            The :class:`~nni_hwaware.spaces.nni_space.HwModelSpace` searched (gives the space and input size).
        predictor
            Predictor folder, ``"jetson_nano"`` or a :class:`HardwarePredictor`.
        budget
            The budget.
        fallback
            Optional :class:`~nni_hwaware.nas.fallback.MeasuredFallback`: candidates the surrogate cannot decide
            are measured on the target and the measurement decides.
        metric_for_invalid
            Metric reported to the strategy for rejected models (``None``: none).
        patience
            Rejected candidates in a row after which the search stops (the budget is likely infeasible).

        Examples
        --------
        >>> from nni.nas.strategy import Random
        >>> from nni.nas.strategy.middleware import Chain
        >>> from nni_hwaware.spaces.nni_space import HwModelSpace
        >>> space = HwModelSpace("convnet", num_classes=10)
        >>> strategy = Chain(Random(), HardwareFilter(space, "jetson_nano", Budget(latency_ms=50.0, margin=0.1)))
        """

        def __init__(self, model_space: Any, predictor: Any, budget: Budget, *, fallback: Any = None,
                     metric_for_invalid: float | None = None, patience: int = 200) -> None:
            super().__init__(self._accept, metric_for_invalid=metric_for_invalid, patience=patience)
            self.space = model_space.space
            self.predictor = as_hardware_predictor(
                predictor, self.space, getattr(model_space, "input_size", None))
            budget.check_predictor(self.predictor)
            self.budget = budget
            self.fallback = fallback
            self.accepted: list[Verdict] = []
            self.rejected: list[Verdict] = []
            self.exhausted_message: str | None = None

        def verdict(self, sample: dict[str, Any]) -> Verdict:
            """The verdict on an NNI sample (after the fallback measurement, when one is configured)."""
            arch = sample_to_arch(self.space, sample)
            verdict = self.budget.check(self.predictor.estimate(arch))
            if self.fallback is not None and not verdict.decided:
                verdict = self.fallback.decide(arch, verdict, self.budget)
            return verdict

        def _accept(self, model: Any) -> bool:
            verdict = self.verdict(model.sample)
            (self.accepted if verdict.ok else self.rejected).append(verdict)
            return verdict.ok

        def extra_repr(self) -> str:
            # NNI's Filter repr formats its filter function, which is our bound method: its repr would recurse
            return f"predictor={self.predictor.kind!r}, budget={self.budget.to_dict()}, patience={self.patience}"

        def budget_available(self) -> bool:
            if self._filter_count_patience >= self.patience and self.exhausted_message is None:
                self.exhausted_message = (
                    f"stopped: {self.patience} candidates in a row exceeded the hardware budget "
                    f"({self.budget.to_dict()}); no architecture found so far meets it, relax the budget")
                _logger.error(self.exhausted_message)
            return super().budget_available()

    # importable and picklable as nni_hwaware.nas.constraints.HardwareFilter, like a module-level class
    HardwareFilter.__qualname__ = "HardwareFilter"
    HardwareFilter.__module__ = __name__
    return HardwareFilter


def __getattr__(name: str) -> Any:
    """``HardwareFilter`` on first use (PEP 562); see :func:`_define_hardware_filter`."""
    if name == "HardwareFilter":
        cls = _define_hardware_filter()
        globals()["HardwareFilter"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
