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
The ``esm`` predictor kind is registered by :mod:`~nni_hwaware.esm.adapter`, which
``load_predictor`` imports when a folder declares that kind.
"""

from __future__ import annotations

from nni_hwaware.lazy import lazy_exports

# Imported on first use (PEP 562): the surrogates need scikit-learn, which would cost every command that only
# parses an ESM option seconds of start-up.
_EXPORTS = {
    "EsmHardwarePredictor": "nni_hwaware.esm.adapter",
    "refit_predictor": "nni_hwaware.esm.adapter",
    "EVAL_STRATEGIES": "nni_hwaware.esm.config",
    "ESMConfig": "nni_hwaware.esm.config",
    "ESMPredictor": "nni_hwaware.esm.folder",
    "build_data_line": "nni_hwaware.esm.folder",
    "read_build_data": "nni_hwaware.esm.folder",
    "space_fingerprint": "nni_hwaware.esm.folder",
    "write_predictor_folder": "nni_hwaware.esm.folder",
    "ESMResult": "nni_hwaware.esm.loop",
    "Iteration": "nni_hwaware.esm.loop",
    "allocate_extension": "nni_hwaware.esm.loop",
    "run_esm": "nni_hwaware.esm.loop",
    "train_evaluate_extend": "nni_hwaware.esm.loop",
    "store_backed_measure": "nni_hwaware.esm.measuring",
    "ArchitectureSource": "nni_hwaware.esm.sources",
    "MeasuredPool": "nni_hwaware.esm.sources",
    "SpaceSampler": "nni_hwaware.esm.sources",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
