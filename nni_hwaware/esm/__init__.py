"""The ESM framework: encode architectures, fit surrogates, and build predictors from as few measurements as possible.

Modules:

- :mod:`~nni_hwaware.esm.encode`: architecture encodings (one-hot, fcc, ...), the surrogate's input;
- :mod:`~nni_hwaware.esm.surrogate`: the regressors (MLP, gradient boosting, random forest, linear) and their
  safe save/load;
- :mod:`~nni_hwaware.esm.builder`: the train-evaluate-extend loop (the paper's Algorithm 1), the predictor
  folder and the ``esm`` kind of the hardware-predictor interface;
- :mod:`~nni_hwaware.esm.proxies`: cheap proxies (MACs, a lookup table of blocks measured in isolation);
- :mod:`~nni_hwaware.esm.compare`: the paper's comparisons on our own measurements, nn-Meter beside them.

The names most users need are importable from here: ``from nni_hwaware.esm import ESMConfig, run_esm``.
"""

from nni_hwaware.esm.builder import (
    EVAL_STRATEGIES,
    ESMConfig,
    ESMPredictor,
    ESMResult,
    EsmHardwarePredictor,
    Iteration,
    allocate_extension,
    build_data_line,
    read_build_data,
    refit_predictor,
    run_esm,
    space_fingerprint,
    store_backed_measure,
)

__all__ = [
    "EVAL_STRATEGIES", "ESMConfig", "ESMPredictor", "ESMResult", "EsmHardwarePredictor", "Iteration",
    "allocate_extension", "build_data_line", "read_build_data", "refit_predictor", "run_esm", "space_fingerprint",
    "store_backed_measure",
]
