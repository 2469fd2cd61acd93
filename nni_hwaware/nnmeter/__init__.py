"""nn-Meter's method beside ours: its builder run on this device, its predictors in our comparisons and NNI.

* :mod:`~nni_hwaware.nnmeter.backend`: nn-Meter builder backends timing kernels with our protocol;
* :mod:`~nni_hwaware.nnmeter.builder`: fusion rules, kernel sampling and per-kernel regressors, resumable;
* :mod:`~nni_hwaware.nnmeter.predictor`: loading predictor folders (ours or nn-Meter's official files) and
  predicting architectures of our spaces (as an estimator NNI's profiler and filter take), plus the ``compare`` rows.
"""

from nni_hwaware.nnmeter.predictor import NnMeterEstimator, load_nn_meter_predictor, nn_meter_rows

__all__ = ["NnMeterEstimator", "load_nn_meter_predictor", "nn_meter_rows"]
