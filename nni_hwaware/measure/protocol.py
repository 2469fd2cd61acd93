"""The timing protocol of the ESM paper: warm-up, timed runs, a trimmed mean, and an adaptive stop.

The paper measures every model 150 times after a warm-up, drops the fastest and the slowest 20 % of the runs
and reports the mean of the middle 60 %. Every number here is a default a user can change. The adaptive mode
stops early once the confidence interval of the trimmed mean is narrow enough (relative to the mean), which
saves runs on quiet machines without lowering the precision asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from nni_hwaware.errors import HwAwareError, ParameterError

DEFAULT_RUNS = 150
DEFAULT_WARMUP = 10
DEFAULT_TRIM = 0.2


@dataclass(frozen=True)
class Protocol:
    """How one model is timed.

    Parameters
    ----------
    runs
        Number of timed runs (the maximum in adaptive mode). ESM: 150.
    warmup
        Untimed runs before timing (lazy initialisation, caches, clocks ramping up).
    trim
        Share of runs dropped at each end before averaging (0.2 keeps the middle 60 %).
    adaptive
        Stop as soon as the confidence interval of the trimmed mean is within ``ci_rel_width``.
    ci_rel_width
        Target half-width of the confidence interval, relative to the trimmed mean (0.01 = +-1 %).
    confidence
        Confidence level of that interval.
    min_runs
        Adaptive mode never stops before this many runs.
    check_every
        Adaptive mode tests the stopping rule after every ``check_every`` runs.

    Examples
    --------
    >>> Protocol(runs=50, adaptive=True, ci_rel_width=0.02).runs
    50
    """

    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    trim: float = DEFAULT_TRIM
    adaptive: bool = False
    ci_rel_width: float = 0.01
    confidence: float = 0.95
    min_runs: int = 20
    check_every: int = 5

    def __post_init__(self) -> None:
        for name, value, low in (("runs", self.runs, 1), ("warmup", self.warmup, 0),
                                 ("min_runs", self.min_runs, 3), ("check_every", self.check_every, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}", parameter=name)
        for name, value, low, high, closed in (("trim", self.trim, 0.0, 0.5, True),
                                               ("ci_rel_width", self.ci_rel_width, 0.0, 1.0, False),
                                               ("confidence", self.confidence, 0.5, 1.0, True)):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and (
                low <= value < high if closed else low < value < high)
            if not ok:
                interval = f"[{low:g}, {high:g})" if closed else f"({low:g}, {high:g})"
                raise ParameterError(f"{name} must be a number in {interval}, got {value!r}", parameter=name)
        if self.adaptive and self.min_runs > self.runs:
            raise ParameterError(f"min_runs ({self.min_runs}) exceeds runs ({self.runs}); the adaptive mode "
                                 "needs min_runs <= runs", parameter="min_runs", mentions=("min_runs", "runs"))

    def to_dict(self) -> dict:
        """JSON-able form, stored with every measurement."""
        return asdict(self)


@dataclass
class TimingResult:
    """Summary of the timed runs of one model (all in milliseconds)."""

    mean_ms: float
    std_ms: float
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    kept: int
    ci_half_width_ms: float
    samples_ms: list[float] = field(repr=False, default_factory=list)

    @property
    def cv(self) -> float:
        """Relative standard deviation of the kept runs."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else float("inf")


def trimmed_stats(samples: Sequence[float], trim: float = DEFAULT_TRIM, confidence: float = 0.95) -> TimingResult:
    """Trimmed mean, standard deviation of the kept runs, and a confidence interval of the trimmed mean.

    The interval is Tukey and McLaughlin's: the standard error of a ``trim``-trimmed mean is the winsorised
    standard deviation divided by ``(1 - 2 trim) sqrt(n)``, with a Student t quantile on ``n - 2g - 1``
    degrees of freedom (``g`` runs dropped at each end).

    Examples
    --------
    >>> r = trimmed_stats([1.0, 2.0, 2.0, 2.0, 100.0], trim=0.2)
    >>> r.mean_ms, r.kept
    (2.0, 3)
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        raise HwAwareError("no timed runs to summarise")
    g = int(math.floor(trim * n))
    kept = x[g : n - g] if n - 2 * g > 0 else x
    mean = float(kept.mean())
    std = float(kept.std(ddof=1)) if len(kept) > 1 else 0.0
    half = float("inf")
    if n - 2 * g > 1:
        wins = x.copy()
        wins[:g] = x[g]
        wins[n - g :] = x[n - g - 1]
        sw = float(wins.std(ddof=1))
        se = sw / ((1 - 2 * g / n) * math.sqrt(n))
        half = _t_quantile(confidence, n - 2 * g - 1) * se
    return TimingResult(
        mean_ms=mean, std_ms=std, median_ms=float(np.median(x)), min_ms=float(x[0]), max_ms=float(x[-1]),
        runs=n, kept=len(kept), ci_half_width_ms=half, samples_ms=[float(v) for v in samples],
    )


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t  # scipy comes with scikit-learn; imported late to keep start-up quick

    return float(t.ppf(0.5 + confidence / 2, max(dof, 1)))


def run_protocol(time_one_run: Callable[[], float], protocol: Protocol) -> TimingResult:
    """Warm up, then time runs until ``protocol.runs`` (or the adaptive rule) is reached.

    Parameters
    ----------
    time_one_run
        Runs one inference and returns its duration in milliseconds.
    protocol
        The protocol.

    Examples
    --------
    >>> import itertools
    >>> durations = itertools.cycle([1.0, 1.01, 0.99])
    >>> run_protocol(lambda: next(durations), Protocol(runs=30, warmup=0)).runs
    30
    """
    for _ in range(protocol.warmup):
        time_one_run()
    samples: list[float] = []
    for i in range(protocol.runs):
        samples.append(float(time_one_run()))
        done = i + 1
        if (protocol.adaptive and done >= protocol.min_runs and done < protocol.runs
                and (done - protocol.min_runs) % protocol.check_every == 0):
            stats = trimmed_stats(samples, protocol.trim, protocol.confidence)
            if stats.ci_half_width_ms <= protocol.ci_rel_width * stats.mean_ms:
                return stats
    return trimmed_stats(samples, protocol.trim, protocol.confidence)


def run_interleaved(time_fns: Sequence[Callable[[], float]], protocol: Protocol) -> list[TimingResult]:
    """Time several models in rounds: each round times every model once, the order reversed every other round.

    Slow drift of the machine (another job starting, clocks, caches) then hits every model of the window alike,
    which is what lets reference models measured in the same window take it out again
    (:mod:`nni_hwaware.measure.normalize`). Each model is warmed up first. Every model gets the same number of
    runs, so all share the same stretch of time; in adaptive mode the rounds stop once *every* model's interval
    is narrow enough.

    Parameters
    ----------
    time_fns
        One callable per model; each runs one inference and returns its duration in milliseconds.
    protocol
        Warm-up, runs and trim.

    Returns
    -------
    list[TimingResult]
        One per model, in the order given.

    Examples
    --------
    >>> fast, slow = iter([1.0] * 40), iter([2.0] * 40)
    >>> [r.mean_ms for r in run_interleaved([lambda: next(fast), lambda: next(slow)], Protocol(runs=30, warmup=5))]
    [1.0, 2.0]
    """
    fns = list(time_fns)
    for fn in fns:
        for _ in range(protocol.warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for round_ in range(protocol.runs):
        for i in (order if round_ % 2 == 0 else reversed(order)):
            samples[i].append(float(fns[i]()))
        done = round_ + 1
        if (protocol.adaptive and done >= protocol.min_runs and done < protocol.runs
                and (done - protocol.min_runs) % protocol.check_every == 0):
            stats = [trimmed_stats(s, protocol.trim, protocol.confidence) for s in samples]
            if all(r.ci_half_width_ms <= protocol.ci_rel_width * r.mean_ms for r in stats):
                return stats
    return [trimmed_stats(s, protocol.trim, protocol.confidence) for s in samples]
