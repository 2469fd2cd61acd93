"""Latencies that mean the same thing at any time: normalization by reference models timed in the same window.

On a shared machine the speed of everything moves with the load: a model timed at a busy minute looks slower
than the same model timed at a quiet one, and a predictor trained on such figures learns *when* each model was
measured. The models of a window are timed interleaved with a few fixed reference models
(:func:`~nni_hwaware.measure.protocol.run_interleaved`), so a slowdown hits all of them alike. The window's
*factor* is the median ratio of the references' latencies to their baseline (their first measurement on this
device, kept in the store); every latency of the window divided by it is expressed at the baseline's speed.

The window's *check* is whether the references agree on that factor: the median, over references, of the
relative gap between a reference's ratio and the factor the others give. A uniform slowdown passes (the factor
takes it out); a window where the references disagree (a burst that hit some models and not others) fails and is
measured again.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nni_hwaware.errors import HwAwareError

#: how a normalized latency was obtained, as stored with it
METHOD = "reference-window"


@dataclass(frozen=True)
class WindowNormalization:
    """The normalization of one window: its factor and how well the references agree on it.

    Parameters
    ----------
    factor
        Median over references of ``latency / baseline``; a window's latencies are divided by it.
    drift
        Raw drift: median over references of ``|latency / baseline - 1|`` (what a plain QC check sees).
    residual
        Median over references of ``|ratio / factor of the other references - 1|``: the drift that remains
        after normalization, which the check compares with its threshold.
    ratios
        ``latency / baseline`` per reference hash.

    Examples
    --------
    >>> n = WindowNormalization.from_references({"a": 2.2, "b": 4.4, "c": 1.1}, {"a": 2.0, "b": 4.0, "c": 1.0})
    >>> round(n.factor, 3), round(n.residual, 6), round(n.normalize(11.0), 3)
    (1.1, 0.0, 10.0)
    """

    factor: float
    drift: float
    residual: float
    ratios: Mapping[str, float]

    @classmethod
    def from_references(cls, latencies: Mapping[str, float], baseline: Mapping[str, float]) -> WindowNormalization:
        """The normalization of a window from its references' latencies and their baseline (same keys)."""
        missing = sorted(set(latencies) - set(baseline))
        if not latencies or missing:
            raise HwAwareError(f"no baseline for reference model(s) {', '.join(missing) or '(none given)'}; "
                               "measure the references first")
        ratios = {key: float(latencies[key]) / float(baseline[key]) for key in latencies}
        values = list(ratios.values())
        factor = statistics.median(values)
        if len(values) == 1:
            residual = 0.0
        else:
            residual = statistics.median(
                abs(value / statistics.median(values[:i] + values[i + 1:]) - 1) for i, value in enumerate(values))
        return cls(factor=factor, drift=statistics.median(abs(v - 1) for v in values), residual=residual,
                   ratios=ratios)

    def normalize(self, latency_ms: float) -> float:
        """A latency of this window at the baseline's speed."""
        return latency_ms / self.factor

    def describe(self, check_index: int, references: int) -> dict[str, Any]:
        """What is stored with each normalized latency: the method, the factor and the check it came from."""
        return {"method": METHOD, "factor": self.factor, "residual": self.residual, "check": check_index,
                "references": references}
