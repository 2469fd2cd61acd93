"""The ESM framework: encode architectures, fit surrogates, and build predictors from as few measurements as possible.

Modules:

- :mod:`~nni_hwaware.esm.encode`: architecture encodings (one-hot, fcc, ...), the surrogate's input;
- :mod:`~nni_hwaware.esm.surrogate`: the regressors (MLP, gradient boosting, random forest, linear) and their
  safe save/load;
- :mod:`~nni_hwaware.esm.loop`: the train-evaluate-extend loop (the paper's Algorithm 1), written once;
- :mod:`~nni_hwaware.esm.sources`: where the loop's architectures come from (the space sampled, or a measured
  pool);
- :mod:`~nni_hwaware.esm.intervals`: 90 % intervals calibrated on training data only, and their coverage;
- :mod:`~nni_hwaware.esm.folder`: the predictor folder (``predictor.json``, weights, ``data.jsonl``, model
  card, plots), written and read in one place;
- :mod:`~nni_hwaware.esm.adapter`: the ``esm`` kind of the hardware-predictor interface, and its refits;
- :mod:`~nni_hwaware.esm.measuring`: the loop's measurements through a campaign and the store;
- :mod:`~nni_hwaware.esm.proxies`: cheap proxies (MACs, a lookup table of blocks measured in isolation);
- :mod:`~nni_hwaware.esm.compare`: the paper's comparisons on our own measurements, nn-Meter beside them.

The names most users need are importable from here: ``from nni_hwaware.esm import ESMConfig, run_esm``, then
``result.save(folder)`` writes a folder that ``nni_hwaware.hardware.load_predictor`` loads and that refits.
Importing this package registers the ``esm`` predictor kind.
"""

from nni_hwaware.esm.adapter import EsmHardwarePredictor, refit_predictor
from nni_hwaware.esm.folder import (
    ESMPredictor,
    build_data_line,
    read_build_data,
    space_fingerprint,
    write_predictor_folder,
)
from nni_hwaware.esm.loop import (
    EVAL_STRATEGIES,
    ESMConfig,
    ESMResult,
    Iteration,
    allocate_extension,
    run_esm,
    train_evaluate_extend,
)
from nni_hwaware.esm.measuring import store_backed_measure
from nni_hwaware.esm.sources import ArchitectureSource, MeasuredPool, SpaceSampler

__all__ = [
    "EVAL_STRATEGIES", "ArchitectureSource", "ESMConfig", "ESMPredictor", "ESMResult", "EsmHardwarePredictor",
    "Iteration", "MeasuredPool", "SpaceSampler", "allocate_extension", "build_data_line", "read_build_data",
    "refit_predictor", "run_esm", "space_fingerprint", "store_backed_measure", "train_evaluate_extend",
    "write_predictor_folder",
]
