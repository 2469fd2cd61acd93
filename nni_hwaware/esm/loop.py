"""The ESM loop: sample, measure, encode, train, evaluate per bin, extend (Algorithm 1) until every bin passes.

The loop of the ESM paper (Fig. 5). The user gives the sampling strategy (random|balanced), ``N_I`` initial
samples, ``N_step``, the weights ``w1``/``w2`` of bins below/above the threshold, the encoding, the evaluation
strategy (overall|bin-wise), ``N_bins``, ``Acc_TH`` and a budget cap. A held-out test set (balanced over the
bins, so every bin is evaluated) is measured once. Each iteration trains the surrogate on everything measured
so far and evaluates it on the test set; while a bin (or the overall accuracy) is below ``Acc_TH`` the dataset
is extended:

* random: ``N_step`` more random architectures;
* balanced (Algorithm 1): ``N_norm = w1 * N_below + w2 * N_above``; each below-threshold bin gets
  ``ceil(N_step * w1 / N_norm)`` new architectures, each above-threshold bin ``ceil(N_step * w2 / N_norm)``.

:func:`train_evaluate_extend` is the loop, written once; where the architectures come from is a
:class:`~nni_hwaware.esm.sources.ArchitectureSource`: the space sampled (``nni-hwaware build``) or a measured pool
(``nni-hwaware compare`` replays the loop on the store's measurements). :func:`run_esm` runs it and makes the
predictor, its 90 % intervals calibrated on the training set only (:mod:`nni_hwaware.esm.intervals`).

Measurement is a callable (architectures -> latencies in ms), normally backed by the measurement store so a
rerun reuses every measurement already made (:func:`nni_hwaware.esm.measuring.store_backed_measure`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware import metrics
from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm.config import ESMConfig, MeasureFn
from nni_hwaware.esm.encode import Encoder
from nni_hwaware.esm.folder import ESMPredictor, space_fingerprint, write_predictor_folder
from nni_hwaware.esm.intervals import calibrate_intervals, held_out_metrics
from nni_hwaware.esm.sources import ArchitectureSource, SpaceSampler
from nni_hwaware.esm.surrogate import make_surrogate
from nni_hwaware.spaces.schema import Architecture, SearchSpace

logger = logging.getLogger(__name__)

#: Seed offsets of the held-out draw and of each extension (kept so rebuilds draw the same architectures).
_HELD_OUT_SEED, _EXTENSION_SEED = 7919, 1000


@dataclass
class Iteration:
    """What one train-evaluate round saw."""

    iteration: int
    train_size: int
    accuracy: float
    within_10: float
    bin_accuracy: list[float | None]
    passed: bool
    measure_seconds: float
    train_seconds: float


@dataclass
class LoopOutcome:
    """What :func:`train_evaluate_extend` ends with: the last surrogate (fitted on every training
    measurement), its history, and the measured training and held-out sets."""

    model: Any
    encoder: Encoder
    history: list[Iteration]
    converged: bool
    train_archs: list[Architecture]
    train_latency: np.ndarray
    test_archs: list[Architecture]
    test_latency: np.ndarray
    test_bins: list[int]


@dataclass
class ESMResult:
    """Outcome of :func:`run_esm`; :meth:`save` writes it as a predictor folder."""

    predictor: ESMPredictor
    history: list[Iteration]
    converged: bool
    train_archs: list[Architecture]
    train_latency: np.ndarray
    test_archs: list[Architecture]
    test_latency: np.ndarray
    test_prediction: np.ndarray

    def save(self, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the predictor folder ``out`` with everything a refit needs
        (:func:`~nni_hwaware.esm.folder.write_predictor_folder`); returns it."""
        return write_predictor_folder(self, out, extra)


def allocate_extension(bin_acc: Sequence[float | None], acc_th: float, step: int, w_below: float, w_above: float) -> list[int]:
    """Algorithm 1: how many new architectures each bin gets.

    Bins without test models count as below the threshold (nothing shows they pass).

    Examples
    --------
    >>> allocate_extension([0.9, 0.97, None], 0.95, 100, 0.8, 0.2)
    [45, 12, 45]
    """
    below = [a is None or a < acc_th for a in bin_acc]
    n_below, n_above = sum(below), len(below) - sum(below)
    norm = w_below * n_below + w_above * n_above
    if norm == 0:
        return [math.ceil(step / len(below))] * len(below)
    per_below = math.ceil(step * w_below / norm)
    per_above = math.ceil(step * w_above / norm)
    return [per_below if b else per_above for b in below]


def _extend(source: ArchitectureSource, config: ESMConfig, bin_acc: Sequence[float | None], room: int,
            iteration: int, exclude: set[str]) -> list[Architecture]:
    """The next architectures to measure (Algorithm 1, or random); at random where the bins have run out."""
    seed = config.seed + _EXTENSION_SEED * (iteration + 1)
    extra: list[Architecture] = []
    if config.sampling == "balanced":
        counts = allocate_extension(bin_acc, config.acc_th, config.step, config.w_below, config.w_above)
        extra = source.draw_per_bin(counts, seed=seed, exclude=exclude)[:room]
    missing = min(config.step, room) - len(extra)
    if missing > 0:
        chosen = exclude | {source.space.arch_hash(a) for a in extra}
        extra = extra + source.draw(missing, strategy="random", bins=config.bins, seed=seed, exclude=chosen)
    return extra


def _measure_kept(measure: MeasureFn, archs: Sequence[Architecture], what: str,
                  log: Callable[[str], None]) -> tuple[list[Architecture], np.ndarray]:
    """Measure ``archs``; keep those with a finite latency (``measure`` gives NaN for a drifted window's)."""
    y = np.asarray(measure(archs), dtype=float) if archs else np.zeros(0)
    keep = np.isfinite(y)
    if not keep.all():
        log(f"{int((~keep).sum())} {what} measurement(s) from a drifted window left out")
    return [a for a, k in zip(archs, keep) if k], y[keep]


def _evaluate(model: Any, X_test: np.ndarray, test_y: np.ndarray, test_bins: list[int],
              config: ESMConfig) -> tuple[dict[str, Any], bool]:
    summary = metrics.summary(test_y, model.predict(X_test), test_bins, config.bins)
    if config.eval_strategy == "bin-wise":
        return summary, all(a is not None and a >= config.acc_th for a in summary["bin_accuracy"])
    return summary, summary["accuracy"] >= config.acc_th


def _iteration_line(it: Iteration) -> str:
    return (f"iteration {it.iteration}: {it.train_size} samples, accuracy {it.accuracy:.4f}, within 10% "
            f"{it.within_10:.3f}, bins " + " ".join("-" if a is None else f"{a:.3f}" for a in it.bin_accuracy)
            + f" | measure {it.measure_seconds:.0f} s, train {it.train_seconds:.1f} s"
            + (" | passed" if it.passed else ""))


def train_evaluate_extend(space: SearchSpace, config: ESMConfig, measure: MeasureFn, *,
                          source: ArchitectureSource | None = None,
                          log: Callable[[str], None] | None = None) -> LoopOutcome:
    """The ESM loop: measure a held-out set, then train, evaluate per bin and extend until it passes.

    Parameters
    ----------
    space
        The search space.
    config
        The user inputs (checked here).
    measure
        Architectures -> latencies in ms; NaN for a measurement the quality control found drifted, which
        trains nothing and judges nothing (it still counts against ``max_samples``).
    source
        Where architectures come from (default: :class:`~nni_hwaware.esm.sources.SpaceSampler` of ``space``).
    log
        Receives one line per event (default: this module's logger, at INFO).

    The loop stops when the evaluation passes, when ``max_samples`` is spent, or when the source has no
    architecture left to add.
    """
    config.check()
    log = log or logger.info
    source = source or SpaceSampler(space)
    encoder = Encoder(space, config.encoding)
    held_out = source.held_out(config.test_size, bins=config.bins, seed=config.seed + _HELD_OUT_SEED)
    t0 = time.perf_counter()
    test_archs, test_y = _measure_kept(measure, held_out, "held-out", log)
    log(f"held-out set: {len(test_archs)} architectures measured in {time.perf_counter() - t0:.0f} s")
    if not test_archs:
        raise HwAwareError("every held-out measurement came from a drifted window; measure when the machine is "
                           "quieter, or raise drift_threshold", mentions=("drift_threshold",))
    test_bins = [space.depth_bin(space.total_depth(a), config.bins) for a in test_archs]
    X_test = encoder.encode(test_archs, validate=False)
    excluded = {space.arch_hash(a) for a in held_out}
    train_archs = source.draw(config.initial, strategy=config.sampling, bins=config.bins, seed=config.seed,
                              exclude=excluded)
    # train_archs: every architecture measured for training (the budget counts them all); kept_archs and
    # train_y: those whose measurement trains the surrogate (none from a window the QC found drifted)
    kept_archs: list[Architecture] = []
    train_y, history, model, measured = np.zeros(0), [], None, 0
    while True:
        t0 = time.perf_counter()
        new_archs, new_y = _measure_kept(measure, train_archs[measured:], "training", log)
        measured = len(train_archs)
        kept_archs, train_y = kept_archs + new_archs, np.concatenate([train_y, new_y])
        measure_s, t0 = time.perf_counter() - t0, time.perf_counter()
        model = make_surrogate(config.surrogate, random_state=config.seed, **config.surrogate_params).fit(
            encoder.encode(kept_archs, validate=False), train_y)
        train_s = time.perf_counter() - t0
        summary, passed = _evaluate(model, X_test, test_y, test_bins, config)
        history.append(Iteration(len(history), len(train_y), summary["accuracy"], summary["within_10"],
                                 summary["bin_accuracy"], passed, measure_s, train_s))
        log(_iteration_line(history[-1]))
        room = config.max_samples - len(train_archs)
        if passed or room <= 0:
            if not passed:
                log(f"budget of {config.max_samples} samples spent before every bin reached {config.acc_th}")
            break
        extra = _extend(source, config, summary["bin_accuracy"], room, len(history) - 1,
                        excluded | {space.arch_hash(a) for a in train_archs})
        if not extra:
            log(f"no architectures left to add after {len(train_archs)} samples")
            break
        train_archs = train_archs + extra
    return LoopOutcome(model, encoder, history, history[-1].passed, kept_archs, train_y, test_archs, test_y,
                       test_bins)


def run_esm(
    space: SearchSpace,
    config: ESMConfig,
    measure: MeasureFn,
    *,
    input_size: int,
    device: dict[str, Any] | None = None,
    source: ArchitectureSource | None = None,
    log: Callable[[str], None] | None = None,
) -> ESMResult:
    """Run the train-evaluate-extend loop and return the final predictor with its history.

    The final surrogate's 90 % intervals are calibrated by cross-validation on the training set only
    (``config.interval_folds`` folds); the held-out set, never seen by the calibration, reports their coverage
    (``info["metrics"]["interval_coverage"]``).

    Parameters
    ----------
    space
        The search space.
    config
        The user inputs.
    measure
        Architectures -> latencies in ms (through the measurement store, so reruns reuse measurements).
    input_size
        Input resolution the architectures are measured at (recorded in the predictor).
    device
        Description of the measured device, recorded in the predictor.
    source
        Where architectures come from (default: the space, sampled); a
        :class:`~nni_hwaware.esm.sources.MeasuredPool` builds from measurements made already.
    log
        Receives one line per event (iteration results, timings; default: this module's logger, at INFO).
    """
    loop = train_evaluate_extend(space, config, measure, source=source, log=log)
    calibration = calibrate_intervals(loop.model, loop.encoder.encode(loop.train_archs, validate=False),
                                      loop.train_latency, folds=config.interval_folds, seed=config.seed)
    X_test = loop.encoder.encode(loop.test_archs, validate=False)
    final = held_out_metrics(loop.model, X_test, loop.test_latency, loop.test_bins, config.bins)
    (log or logger.info)(f"90% intervals ({calibration['method']}): held-out coverage "
                         f"{final.get('interval_coverage', float('nan')):.3f}")
    info = {
        "kind": "esm",
        "space": space.name,
        "space_fingerprint": space_fingerprint(space),
        "input_size": input_size,
        "width_mult": space.width_mult,
        "device": device or {},
        "encoding": config.encoding,
        "encoding_length": loop.encoder.length,
        "surrogate": config.surrogate,
        "config": asdict(config),
        "train_size": len(loop.train_latency),
        "test_size": len(loop.test_latency),
        "converged": loop.converged,
        "metrics": final,
        "intervals": calibration,
        "bin_edges_total_blocks": [space.min_total_depth, space.max_total_depth, config.bins],
        "history": [asdict(h) for h in loop.history],
    }
    predictor = ESMPredictor(space, loop.encoder, loop.model, info)
    return ESMResult(predictor, loop.history, loop.converged, loop.train_archs, loop.train_latency,
                     loop.test_archs, loop.test_latency, loop.model.predict(X_test))
