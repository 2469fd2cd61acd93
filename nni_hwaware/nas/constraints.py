"""Latency/energy budgets and the NNI strategy middleware that keeps a multi-trial search within them.

A :class:`Budget` holds limits on latency (ms) and/or energy (mJ) and a safety margin: an architecture passes
when every estimated value is at most ``limit * (1 - margin)``. The verdict also says whether the surrogate is
*sure*: it is not when the 90 % interval straddles the effective limit or the architecture is out of the
predictor's distribution; :mod:`nni_hwaware.nas.fallback` measures those on the real target.

:class:`HardwareFilter` is an ``nni.nas.strategy.middleware.Filter``: chain it after any NNI strategy
(``Chain(RegularizedEvolution(), HardwareFilter(...))``) and the strategy only ever trains models within the
budget. After ``patience`` rejected candidates in a row it stops the search with a clear message instead of
looping forever on a budget nothing meets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nni.nas.strategy.middleware import Filter

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.hardware import HardwareEstimate, HardwarePredictor, as_hardware_predictor
from nni_hwaware.spaces.nni_space import sample_to_arch

_logger = logging.getLogger(__name__)
METRICS = ("latency_ms", "energy_mj")


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
        for name in METRICS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise HwAwareError(f"the {name} budget must be positive, got {value}")
        if not 0 <= self.margin < 1:
            raise HwAwareError(f"the safety margin must be in [0, 1), got {self.margin}")

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
        """The verdict on one estimate."""
        violations, uncertain = [], []
        for metric in self.metrics:
            value = estimate.value(metric)
            if value is None:
                raise HwAwareError(f"the estimate has no {metric}; use a predictor that gives it")
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
