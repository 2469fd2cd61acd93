"""The ESM loop's inputs, in a module light enough for a command line to import before it parses its arguments
(no scikit-learn, torch or onnx): :class:`ESMConfig`, the evaluation strategies and the measure function's type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nni_hwaware.errors import ParameterError
from nni_hwaware.esm.encode import ENCODINGS
from nni_hwaware.spaces.schema import Architecture

#: Architectures -> latencies in ms (NaN: a measurement from a drifted window, left out of training and judging).
MeasureFn = Callable[[Sequence[Architecture]], np.ndarray]
EVAL_STRATEGIES = ("bin-wise", "overall")
#: The regressors :func:`~nni_hwaware.esm.surrogate.make_surrogate` builds (``linear`` only as a baseline).
SURROGATES = ("mlp", "gb", "rf", "linear")


@dataclass
class ESMConfig:
    """User inputs of the ESM loop (the paper's Sec. II-B).

    Parameters
    ----------
    sampling
        ``"random"`` or ``"balanced"``.
    initial, step
        ``N_I`` and ``N_step``.
    w_below, w_above
        Algorithm 1's weights ``w1`` (bins below the threshold) and ``w2`` (bins above).
    encoding
        One of :data:`~nni_hwaware.esm.encode.ENCODINGS`.
    surrogate
        ``mlp`` (the paper's), ``gb`` or ``rf``.
    eval_strategy
        ``"bin-wise"`` (every bin must pass) or ``"overall"``.
    bins
        ``N_bins``: equal ranges of total block count.
    acc_th
        ``Acc_TH``, e.g. 0.95.
    max_samples
        Budget cap on training measurements.
    test_size
        Held-out measured architectures (balanced over the bins).
    seed
        Seed of all sampling.
    interval_folds
        Cross-validation folds on the training set that calibrate the 90 % intervals.
    surrogate_params
        Extra parameters of the surrogate (``{"epochs": 100}``).

    Examples
    --------
    >>> ESMConfig(initial=600, max_samples=500).check()
    Traceback (most recent call last):
    ...
    nni_hwaware.errors.ParameterError: initial (600) exceeds max_samples (500)
    """

    sampling: str = "balanced"
    initial: int = 300
    step: int = 100
    w_below: float = 0.8
    w_above: float = 0.2
    encoding: str = "fcc"
    surrogate: str = "mlp"
    eval_strategy: str = "bin-wise"
    bins: int = 5
    acc_th: float = 0.95
    max_samples: int = 500
    test_size: int = 100
    seed: int = 0
    interval_folds: int = 5
    surrogate_params: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`~nni_hwaware.errors.ParameterError` on inconsistent inputs."""
        choices = {"sampling": ("random", "balanced"), "encoding": ENCODINGS,
                   "surrogate": tuple(s for s in SURROGATES if s != "linear"), "eval_strategy": EVAL_STRATEGIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ParameterError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}",
                                     parameter=name)
        for name in ("initial", "step", "bins", "max_samples", "test_size"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be at least 1, got {getattr(self, name)}", parameter=name)
        if self.interval_folds < 2:
            raise ParameterError(f"interval_folds must be at least 2, got {self.interval_folds}",
                                 parameter="interval_folds")
        if self.initial > self.max_samples:
            raise ParameterError(f"initial ({self.initial}) exceeds max_samples ({self.max_samples})",
                                 parameter="initial", mentions=("max_samples",))
        if not 0 < self.acc_th <= 1:
            raise ParameterError(f"acc_th must be a number in (0, 1], got {self.acc_th}", parameter="acc_th")
        if self.w_below < 0 or self.w_above < 0 or self.w_below + self.w_above == 0:
            raise ParameterError("w_below and w_above must be non-negative and not both zero",
                                 parameter="w_below", mentions=("w_above",))
