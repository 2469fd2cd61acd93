"""An ``nni.nas.profiler.Profiler`` that predicts latency or energy of a model-space sample with a surrogate.

NNI's profilers are built for one model space and answer ``profile(sample) -> float`` quickly; this one maps
the sample to its architecture and asks a predictor folder (:class:`~nni_hwaware.hardware.HardwarePredictor`:
an ESM predictor of the space, or the Jetson Nano predictor through graph features). Use it wherever NNI takes
a profiler, e.g. ``nni.nas.strategy.middleware.ProfilerFilter(profiler, upper=...)``, or with
:class:`~nni_hwaware.nas.constraints.HardwareFilter`, which also uses the intervals.
"""

from __future__ import annotations

from typing import Any

from nni.nas.profiler import Profiler

from nni_hwaware.errors import HwAwareError
from nni_hwaware.hardware import HardwareEstimate
from nni_hwaware.nas.hardware import as_hardware_predictor
from nni_hwaware.spaces.nni_space import sample_to_arch


class SurrogateProfiler(Profiler):
    """Latency (ms) or energy (mJ) of a sample of an :class:`~nni_hwaware.spaces.nni_space.HwModelSpace`.

    Parameters
    ----------
    model_space
        The model space (its space and input size are used).
    predictor
        Predictor folder, ``"jetson_nano"`` or a :class:`HardwarePredictor`.
    metric
        ``"latency_ms"`` or ``"energy_mj"``.

    Examples
    --------
    >>> from nni_hwaware.spaces.nni_space import HwModelSpace, arch_to_sample
    >>> space = HwModelSpace("convnet")
    >>> profiler = SurrogateProfiler(space, "jetson_nano", metric="energy_mj")
    >>> profiler.profile(arch_to_sample(space.space, space.space.default_architecture())) > 0
    True
    """

    def __init__(self, model_space: Any, predictor: Any, metric: str = "latency_ms") -> None:
        super().__init__(model_space)
        if not hasattr(model_space, "space"):
            raise HwAwareError("SurrogateProfiler needs an nni_hwaware HwModelSpace (it maps samples to architectures)")
        self.space = model_space.space
        self.predictor = as_hardware_predictor(
            predictor, self.space, getattr(model_space, "input_size", None))
        if metric not in ("latency_ms", "energy_mj"):
            raise HwAwareError(f"metric must be latency_ms or energy_mj, got {metric!r}")
        if metric == "energy_mj" and not self.predictor.has_energy:
            raise HwAwareError(f"{self.predictor.folder} ({self.predictor.kind}) predicts latency only, not energy")
        self.metric = metric

    def estimate(self, sample: dict[str, Any]) -> HardwareEstimate:
        """The full estimate (both metrics, intervals, distribution flag) of a sample."""
        return self.predictor.estimate(sample_to_arch(self.space, sample))

    def profile(self, sample: dict[str, Any]) -> float:
        value = self.estimate(sample).value(self.metric)
        assert value is not None  # checked in __init__
        return float(value)
