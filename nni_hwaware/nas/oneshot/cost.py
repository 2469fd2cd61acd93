"""A differentiable latency and energy cost for NNI's one-shot strategies, from any hardware predictor.

**Marginal costs.** :class:`MarginalCostTable` asks a :class:`~nni_hwaware.hardware.HardwarePredictor` (through
``estimate_many`` only, so every predictor kind works) for the cost of a *reference* architecture and of every
architecture that differs from it in one choice: ``delta[label][value] = c(ref with label=value) - c(ref)``.
A block choice of a position beyond the reference depth is priced with the unit deepened to that position.

**Expected cost.** Under a distribution over choices (one categorical per label, as the strategies keep
them) the first-order expected cost is::

    E[c] = c(ref) + sum_label sum_value p(value) * delta[label][value] * P(the label's block exists)

where ``P(block j of unit u exists) = P(depth_u >= j)`` (1 for global and depth labels). It is exact for the
reference architecture (a one-hot distribution on it gives ``c(ref)``), exact for one-hot distributions one
choice away from it, and first order elsewhere; the table follows the distribution's mode (re-linearised when
the mode moves). The probabilities may be tensors: the cost is then differentiable in them.

**Loss.** :class:`HardwareCostPenalty` is an ``ExpectationProfilerPenalty`` (what NNI's ``DARTS``,
``GumbelDARTS`` and ``Proxyless`` take as ``penalty``). NNI hands it probabilities as plain floats, so it reads
the architecture weights of the mutated supernet itself, and adds per budgeted metric
``scale * nonlinear(E[c] / limit - 1)``: ``form="hinge"`` (``relu``, added to the loss) or
``form="proxyless"`` (ProxylessNAS / MnasNet: the loss times ``(E[c] / limit) ** scale``).

For sampling strategies, :class:`SupernetProfiler` is a ``SurrogateProfiler`` for supernet samples, for NNI's
``SampleProfilerPenalty`` and ``RangeProfilerFilter``; :class:`SupernetHardwareFilter` is the
:class:`~nni_hwaware.nas.constraints.HardwareFilter` for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.profiler import Profiler

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.hardware import HardwarePredictor
from nni_hwaware.nas.constraints import Budget, HardwareFilter
from nni_hwaware.nas.hardware import as_hardware_predictor
from nni_hwaware.nas.oneshot.supernet import HwSupernet
from nni_hwaware.nas.profiler import SurrogateProfiler
from nni_hwaware.spaces.nni_space import arch_to_sample, depth_label, nas_choices, sample_to_arch

logger = logging.getLogger(__name__)

#: Loss forms of :class:`HardwareCostPenalty`: NNI's ``(nonlinear, aggregate)`` for each.
LOSS_FORMS = {"hinge": ("positive", "add"), "proxyless": ("linear", "mul")}
Distribution = Mapping[str, Mapping[Any, Any]]


class MarginalCostTable:
    """Per-choice marginal costs of a space around a reference sample (see the module docstring).

    Parameters
    ----------
    predictor
        Any hardware predictor bound to the space.
    metric
        ``"latency_ms"`` or ``"energy_mj"``.
    reference
        A full NAS sample (plain values, every label) or an architecture; default the space's default one.

    Examples
    --------
    >>> from nni_hwaware.hardware import load_predictor
    >>> predictor = load_predictor("jetson_nano", "convnet", 12)
    >>> table = MarginalCostTable(predictor, "latency_ms")
    >>> one_hot = {k: {v: 1.0} for k, v in table.reference.items()}
    >>> abs(table.expected(one_hot) - predictor.estimate(table.reference_arch).latency_ms) < 1e-9
    True
    """

    def __init__(self, predictor: HardwarePredictor, metric: str = "latency_ms",
                 reference: Mapping[str, Any] | None = None) -> None:
        if metric not in ("latency_ms", "energy_mj"):
            raise ParameterError(f"metric must be latency_ms or energy_mj, got {metric!r}", parameter="metric")
        if metric == "energy_mj" and not predictor.has_energy:
            raise HwAwareError(f"{predictor.folder} ({predictor.kind}) predicts latency only, not energy")
        self.predictor, self.metric = predictor, metric
        self.space = predictor.space
        self.choices = nas_choices(self.space)
        self._units = {depth_label(u.name): u for u in self.space.units}
        self.relinearize(reference)

    # ------------------------------------------------------------------------------------------ table
    def relinearize(self, reference: Mapping[str, Any] | None = None) -> None:
        """Rebuild the table around ``reference`` (a full sample or an architecture)."""
        if reference is None:
            reference = self.space.default_architecture()
        if "units" in reference:
            reference = arch_to_sample(self.space, reference)
        missing = [k for k in self.choices if k not in reference]
        if missing:
            raise HwAwareError(f"the reference sample lacks the label(s) {', '.join(missing[:3])}")
        self.reference = {k: reference[k] for k in self.choices}
        self.reference_arch = sample_to_arch(self.space, self.reference)
        variants: list[tuple[str, Any, dict[str, Any]]] = []
        bases: dict[str, dict[str, Any]] = {}
        for label, values in self.choices.items():
            base = self._base_for(label)
            bases[label] = base
            variants += [(label, v, {**base, label: v}) for v in values]
        samples = [self.reference, *bases.values(), *(s for _, _, s in variants)]
        costs = self._costs(samples)
        self.base_cost = costs[0]
        base_costs = dict(zip(bases, costs[1:1 + len(bases)]))
        self.delta: dict[str, dict[Any, float]] = {label: {} for label in self.choices}
        for (label, value, _), cost in zip(variants, costs[1 + len(bases):]):
            self.delta[label][value] = cost - base_costs[label]
        logger.debug("marginal %s table around %s: %d estimates", self.metric,
                     self.space.arch_hash(self.reference_arch), len(samples))

    def _block_of(self, label: str) -> tuple[str, int] | None:
        """(depth label, position from 1) of a block label, else None."""
        for depth, unit in self._units.items():
            prefix = f"{unit.name}_b"
            if label.startswith(prefix):
                position = label[len(prefix):].split("_", 1)[0]
                if position.isdigit():
                    return depth, int(position)
        return None

    def _base_for(self, label: str) -> dict[str, Any]:
        """The reference, deepened so that the label's block exists."""
        block = self._block_of(label)
        if block is None or self.reference[block[0]] >= block[1]:
            return dict(self.reference)
        return {**self.reference, block[0]: block[1]}

    def _costs(self, samples: Sequence[Mapping[str, Any]]) -> list[float]:
        estimates = self.predictor.estimate_many([sample_to_arch(self.space, s) for s in samples])
        values = [e.value(self.metric) for e in estimates]
        if any(v is None for v in values):
            raise HwAwareError(f"the {self.predictor.kind} predictor gave no {self.metric}")
        return [float(v) for v in values]  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------ expectation
    def expected(self, distribution: Distribution) -> Any:
        """First-order expected cost under ``{label: {value: probability}}`` (tensor when the probabilities are).

        Labels missing from the distribution keep their reference value; probabilities of values the table
        does not know are an error.
        """
        total: Any = self.base_cost
        existence = self._existence(distribution)
        for label, probs in distribution.items():
            if label not in self.delta:
                continue
            unknown = [v for v in probs if v not in self.delta[label]]
            if unknown:
                raise HwAwareError(f"{label}: values {unknown[:3]} are not choices of the space")
            term = sum(p * self.delta[label][v] for v, p in probs.items())
            block = self._block_of(label)
            total = total + (term * existence[block] if block is not None else term)
        return total

    def _existence(self, distribution: Distribution) -> dict[tuple[str, int], Any]:
        """P(depth >= position) for every block position."""
        out: dict[tuple[str, int], Any] = {}
        for depth, unit in self._units.items():
            probs = distribution.get(depth, {self.reference[depth]: 1.0})
            for j in range(1, unit.max_depth + 1):
                out[(depth, j)] = sum(p for d, p in probs.items() if int(d) >= j)
        return out


def supernet_distribution(supernet: HwSupernet) -> dict[str, dict[Any, torch.Tensor]]:
    """The live architecture distribution of a supernet mutated by DARTS, GumbelDARTS or Proxyless.

    Plain softmax of the architecture weights (GumbelDARTS's noise is how it samples, not the distribution),
    as tensors that carry gradients; values as the space's (plain) values. Empty for sampling strategies.
    """
    out: dict[str, dict[Any, torch.Tensor]] = {}
    for module in supernet.modules():
        alpha = getattr(module, "_arch_alpha", None)
        if hasattr(module, "depth_choice") and hasattr(module, "export_probs") and alpha is None:
            probs = module.export_probs({})  # Proxyless: depth from per-block skip gates, as tensors
            out.update({k: dict(v) for k, v in probs.items()})
        elif alpha is None:
            continue
        elif isinstance(alpha, torch.nn.ParameterDict):
            for label, weights in alpha.items():
                values = module.depth_choice.simplify()[label].values
                out[label] = dict(zip(values, torch.softmax(weights, -1)))
        elif hasattr(module, "names") and hasattr(module, "label"):
            out[module.label] = dict(zip(module.names, torch.softmax(alpha, -1)))
    labels = nas_choices(supernet.space)
    return {label: {supernet.plain_value(label, v): p for v, p in probs.items()} for label, probs in out.items()
            if label in labels}


def distribution_mode(distribution: Distribution) -> dict[str, Any]:
    """The most probable value of every label."""
    return {label: max(probs, key=lambda v: float(probs[v])) for label, probs in distribution.items()}


class ExpectedCostProfiler(Profiler):
    """An NNI ``Profiler`` of a supernet's expected cost: ``profile(sample)`` takes a sample (one value per
    label: the predictor's estimate) or a distribution (``{value: probability}`` per label: the expected cost).
    """

    def __init__(self, supernet: HwSupernet, predictor: Any, metric: str = "latency_ms") -> None:
        super().__init__(supernet)
        self.supernet = supernet
        self.predictor = as_hardware_predictor(predictor, supernet.space, supernet.input_size)
        self.table = MarginalCostTable(self.predictor, metric)
        self.metric = metric

    def profile(self, sample: Mapping[str, Any]) -> float:
        if all(isinstance(v, Mapping) for v in sample.values()):
            plain = {k: {self.supernet.plain_value(k, v): p for v, p in d.items()} for k, d in sample.items()}
            return float(self.table.expected(plain))
        value = self.predictor.estimate(self.supernet.sample_to_arch(sample)).value(self.metric)
        return float(value)  # type: ignore[arg-type]


class HardwareCostPenalty(ExpectationProfilerPenalty):
    """Expected latency/energy over a budget as a loss term for NNI's ``DARTS``, ``GumbelDARTS``, ``Proxyless``.

    Parameters
    ----------
    supernet
        The :class:`HwSupernet` the strategy mutates (its architecture weights are read at each step).
    predictor
        Predictor folder, ``"jetson_nano"`` or a loaded :class:`HardwarePredictor` of the supernet's space.
    budget
        One term per budgeted metric, each normalised by its limit (budget times ``1 - margin``).
    scale
        Weight of the terms (the exponent for ``form="proxyless"``).
    form
        ``"hinge"``: ``loss + scale * sum relu(E[c] / limit - 1)``; ``"proxyless"``: ``loss * prod (E[c] /
        limit) ** scale``.
    refresh_every
        Steps between re-linearisations of the tables at the distribution's mode (when it moved).
    """

    def __init__(self, supernet: HwSupernet, predictor: Any, budget: Budget, scale: float = 1.0,
                 form: str = "hinge", refresh_every: int = 20) -> None:
        if form not in LOSS_FORMS:
            raise ParameterError(f"form must be one of {', '.join(LOSS_FORMS)}, got {form!r}", parameter="form")
        if not (isinstance(scale, int | float) and scale > 0):
            raise ParameterError(f"scale must be a positive number, got {scale!r}", parameter="scale")
        profilers = [ExpectedCostProfiler(supernet, predictor, m) for m in budget.metrics]
        nonlinear, aggregate = LOSS_FORMS[form]
        super().__init__(profilers[0], baseline=1.0, scale=float(scale), nonlinear=nonlinear, aggregate=aggregate)
        self.bind(supernet)
        self.profilers, self.budget, self.form = profilers, budget, form
        self.refresh_every, self._steps = int(refresh_every), 0

    def bind(self, supernet: HwSupernet) -> None:
        """Read the architecture weights of ``supernet`` (NNI mutates its own copy of the space given to the
        experiment; the copy calls this from :meth:`HwSupernet.extra_oneshot_hooks`)."""
        object.__setattr__(self, "supernet", supernet)  # not a submodule: the strategy owns it

    def expected_costs(self) -> dict[str, Any]:
        """The expected cost of every budgeted metric under the supernet's current distribution."""
        distribution = supernet_distribution(self.supernet)
        if not distribution:
            raise HwAwareError("the supernet has no architecture weights: HardwareCostPenalty is for DARTS, "
                               "GumbelDARTS and Proxyless; use SampleProfilerPenalty for sampling strategies")
        self._steps += 1
        if self._steps % self.refresh_every == 0:
            mode = distribution_mode(distribution)
            for profiler in self.profilers:
                reference = {**profiler.table.reference, **mode}
                if reference != profiler.table.reference:
                    profiler.table.relinearize(reference)
        return {p.metric: p.table.expected(distribution) for p in self.profilers}

    def forward(self, loss: torch.Tensor, sample: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        costs = self.expected_costs()
        normalized = {m: self.nonlinear_fn(c / self.budget.limit(m) - 1) for m, c in costs.items()}
        new = loss
        for value in normalized.values():
            new = self.aggregate_fn(new, value)
        details = {"loss_original": loss, "loss_final": new, **{f"expected_{m}": c for m, c in costs.items()},
                   **{f"normalized_{m}": v for m, v in normalized.items()}}
        return new, details


class SupernetProfiler(SurrogateProfiler):
    """:class:`~nni_hwaware.nas.profiler.SurrogateProfiler` for samples of a :class:`HwSupernet`, for NNI's
    ``SampleProfilerPenalty`` and ``RangeProfilerFilter`` (``RandomOneShot(filter=...)``)."""

    def __init__(self, supernet: HwSupernet, predictor: Any, metric: str = "latency_ms") -> None:
        super().__init__(supernet, predictor, metric)
        self.supernet = supernet

    def estimate(self, sample: dict[str, Any]) -> Any:
        return self.predictor.estimate(self.supernet.sample_to_arch(sample))


class SupernetHardwareFilter(HardwareFilter):  # type: ignore[misc, valid-type]
    """:class:`~nni_hwaware.nas.constraints.HardwareFilter` for models of a :class:`HwSupernet` (NNI's
    multi-trial strategies over a trained supernet, e.g. ``Chain(RegularizedEvolution(), this)``)."""

    def __init__(self, supernet: HwSupernet, *args: Any, **kwargs: Any) -> None:
        super().__init__(supernet, *args, **kwargs)
        self.supernet = supernet

    def verdict(self, sample: dict[str, Any]) -> Any:
        arch = self.supernet.sample_to_arch(sample)
        verdict = self.budget.check(self.predictor.estimate(arch))
        if self.fallback is not None and not verdict.decided:
            verdict = self.fallback.decide(arch, verdict, self.budget)
        return verdict
